"""TFLite graphs for old runtimes: tflite-runtime 2.5 (Chaquopy, Briefcase) and 2.8 (python-for-android).

`export_bundle(..., tflite_compat="2.5")` (`hear-edge export --tflite-compat 2.5`) writes the TFLite
graphs this way instead of `formats.export_tflite`'s:

- GELU (builtin op 150, newer than 2.7) is written as x Phi(x) with Phi from erfc's Chebyshev fit
  (`ErfGelu`): ABS, MUL, ADD, DIV, EXP, LESS and SELECT, which every runtime has. Not the tanh
  approximation: erfc within 1.2e-7 relative, the GELU within 3.9e-7 of exact in fp32.
- One file per length bucket, each with one signature: in a file of several signatures,
  tflite-runtime 2.8 runs the first and fails every later one at setup (RESHAPE size mismatch).
  The manifest lists the files in the graph's `bucket_files`, in `frame_buckets` order.
- Every operator and version is checked against `COMPAT_OPS`, the ones TFLite 2.5 registers.
- fp32 only: int8 on these runtimes is not measured (and the per-channel hybrid int8 kernels of
  tflite-runtime 2.14 and 2.20 compute the ordinary int8 graphs wrong).
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
from pathlib import Path

import torch
from torch import nn

from hear_edge.bundle.manifest import GraphSpec, sha256_file, signature_name
from hear_edge.errors import ConfigError

from .graphs import BucketedAcousticWindowGraph, BucketedTaskGraph, task_example, window_example

logger = logging.getLogger("hear_edge")

# The oldest tflite-runtime a compat bundle is written for; every later one loads it too.
COMPAT_FLOOR = (2, 5)
# The operators a compat graph may use, each up to the version given: ones TFLite's BuiltinOpResolver
# registered at these versions before 2.5 (BATCH_MATMUL, the newest, since 2.3; FULLY_CONNECTED v5
# is keep_num_dims). A file with any other is refused at export. Run on tflite-runtime 2.7 and 2.8.
COMPAT_OPS = {"ABS": 1, "ADD": 1, "BATCH_MATMUL": 1, "CAST": 1, "CONCATENATION": 1, "CONV_2D": 1, "DIV": 1, "EXP": 1,
              "FULLY_CONNECTED": 5, "LESS": 1, "LOGISTIC": 1, "MAXIMUM": 1, "MEAN": 1,
              "MUL": 1, "PAD": 1, "REDUCE_MAX": 1, "RESHAPE": 1, "RSQRT": 1, "SELECT": 1, "SELECT_V2": 1, "SLICE": 1,
              "SOFTMAX": 1, "SQRT": 1, "SQUARED_DIFFERENCE": 1, "SUB": 1, "SUM": 1, "TRANSPOSE": 1}

# erfc(z) for z >= 0 as t exp(-z^2 + P(t)), t = 1 / (1 + z/2): the Chebyshev fit of Numerical
# Recipes (Press et al., section 6.2, erfcc), relative error below 1.2e-7 everywhere.
_ERFC_COEFFICIENTS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
                      -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def parse_compat(version) -> str:
    """The compat target as "2.N", checked: a tflite-runtime release from 2.5 on.

    Raises:
        ConfigError: anything but a "2.N" version string with N >= 5.
    """
    match = re.fullmatch(r"2\.(\d+)", version) if isinstance(version, str) else None
    if match is None or int(match.group(1)) < COMPAT_FLOOR[1]:
        raise ConfigError(f"tflite_compat must be the oldest tflite-runtime the graphs must load on, as "
                          f"'2.N' with N >= {COMPAT_FLOOR[1]} (e.g. '2.5' for Chaquopy, '2.8' for "
                          f"python-for-android), got {version!r}.")
    return f"2.{int(match.group(1))}"


def erfc_nonnegative(z: torch.Tensor) -> torch.Tensor:
    """erfc(z) for z >= 0 with the operators every TFLite runtime has (see `_ERFC_COEFFICIENTS`)."""
    t = 1.0 / (1.0 + 0.5 * z)
    poly = _ERFC_COEFFICIENTS[-1] * t + _ERFC_COEFFICIENTS[-2]
    for coefficient in reversed(_ERFC_COEFFICIENTS[:-2]):
        poly = poly * t + coefficient
    return t * torch.exp(poly - z * z)


class ErfGelu(nn.Module):
    """nn.GELU (the exact, erf form) without TFLite's GELU operator: x Phi(x), Phi(x) = erfc(-x/sqrt 2) / 2.

    From erfc of |x|, so that the negative tail keeps its relative precision (1 + erf(x) there
    cancels to nothing): within 3.9e-7 of the exact GELU over [-12, 12] in fp32 arithmetic, where
    torch's own fp32 GELU is within 1.2e-6.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tail = 0.5 * erfc_nonnegative(x.abs() * (1.0 / math.sqrt(2.0)))
        return x * torch.where(x < 0, tail, 1.0 - tail)


def compat_model(model: nn.Module) -> nn.Module:
    """A copy of `model` whose exact GELUs are ErfGelu; refuses a tanh GELU, which it would change."""
    copied = copy.deepcopy(model)
    for name, module in list(copied.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.GELU):
                if child.approximate != "none":
                    raise ConfigError(f"{name}.{child_name} is a GELU with approximate={child.approximate!r}; "
                                      f"the compat export writes the exact GELU only.")
                setattr(module, child_name, ErfGelu())
    return copied


def graph_ops(path: Path) -> list[tuple[str, int]]:
    """(operator name, version) of every operator code a .tflite file declares; custom ops by their name."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    found = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        found.append((f"custom {custom.decode()}" if custom else names.get(builtin, f"builtin {builtin}"),
                      code.Version()))
    return found


def check_compat_ops(path: Path) -> None:
    """Refuse a file with an operator, or an operator version, outside `COMPAT_OPS`.

    Raises:
        ConfigError: naming each such operator and version.
    """
    bad = [(op, version) for op, version in graph_ops(path) if version > COMPAT_OPS.get(op, 0)]
    if bad:
        raise ConfigError(f"{Path(path).name} uses {', '.join(f'{op} v{v}' for op, v in bad)}, outside the "
                          f"operators known to run on tflite-runtime {'.'.join(map(str, COMPAT_FLOOR))} "
                          f"({COMPAT_OPS}); the compat export cannot write this model.")


def bucket_file_name(role: str, frames: int) -> str:
    """`acoustic_window.fp32.b300.tflite`, `task.fp32.b1500.tflite`: one compat file per bucket."""
    return f"{role}.fp32.b{frames}.tflite"


def export_tflite_compat(model, out_dir: Path, tflite_compat: str) -> list[GraphSpec]:
    """fp32 TFLite graphs for tflite-runtime `tflite_compat` and later: one single-signature file per bucket."""
    import litert_torch

    from .formats import TFLITE_TASK_BUCKETS, TFLITE_WINDOW_BUCKETS, _buckets, _graph_spec

    parse_compat(tflite_compat)
    model = compat_model(model)
    graphs = {"acoustic_window": BucketedAcousticWindowGraph(model).eval(), "task": BucketedTaskGraph(model).eval()}
    buckets = {"acoustic_window": _buckets(TFLITE_WINDOW_BUCKETS, model.acoustic_model.max_length),
               "task": _buckets(TFLITE_TASK_BUCKETS, model.task_model.max_length)}
    examples = {"acoustic_window": window_example, "task": task_example}
    specs = []
    started = time.perf_counter()
    for role, graph in graphs.items():
        paths = []
        for frames in buckets[role]:
            path = Path(out_dir) / bucket_file_name(role, frames)
            litert_torch.signature(signature_name(role, frames), graph, examples[role](model, frames)) \
                .convert().export(str(path))
            check_compat_ops(path)
            paths.append(path)
        spec = _graph_spec(model, role, "tflite", "fp32", paths[0], buckets[role])
        spec.bucket_files = [{"file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in paths]
        specs.append(spec)
    logger.info("tflite compat (>= %s) graphs converted in %.0f s", tflite_compat, time.perf_counter() - started)
    return specs


def compat_provenance(tflite_compat: str) -> dict:
    """What the manifest records of a compat export."""
    return {"runtime": f"tflite-runtime >= {tflite_compat}", "precision": "fp32",
            "gelu": "x erfc(-x / sqrt 2) / 2, erfc as Numerical Recipes' Chebyshev fit (relative error < 1.2e-7)",
            "files": "one single-signature file per frame bucket (graphs[].bucket_files)",
            "operators": COMPAT_OPS}
