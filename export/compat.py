"""TFLite graphs for old runtimes: tflite-runtime 2.5 (Chaquopy, Briefcase) and 2.8 (python-for-android).

`export_bundle(..., tflite_compat="2.5")` (`hear-edge export --tflite-compat 2.5`) writes the TFLite
graphs this way instead of `formats.export_tflite`'s:

- GELU (builtin op 150, first in TFLite 2.9) is written as x/2 * (1 + erf(x/sqrt 2)) with erf a
  rational function (`erf_rational`): MUL, ADD, DIV, MINIMUM and MAXIMUM, which every runtime has.
  Not the tanh approximation: erf is within 4.3e-7 of the exact value in fp32 arithmetic.
- One file per length bucket, each with one signature: in a file of several signatures,
  tflite-runtime 2.8 runs the first and fails every later one at setup (RESHAPE size mismatch).
  The manifest lists the files in the graph's `bucket_files`, in `frame_buckets` order.
- Every operator and version is checked against `COMPAT_OPS`, the ones TFLite 2.5 registers.
- fp32 only: int8 graphs on these runtimes are not measured right (the hybrid int8 kernels of
  newer tflite-runtime releases already compute them wrong).
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

from hear_edge.bundle import GraphSpec, sha256_file, signature_name
from hear_edge.errors import ConfigError

from .graphs import BucketedAcousticWindowGraph, BucketedTaskGraph, task_example, window_example

logger = logging.getLogger("hear_edge")

# The oldest tflite-runtime a compat bundle is written for; every later one loads it too.
COMPAT_FLOOR = (2, 5)
# Operators (and their highest version) that TFLite 2.5's BuiltinOpResolver registers and that the
# graphs use; an exported file with any other is refused. Checked on tflite-runtime 2.7 and 2.8.
COMPAT_OPS = {"ADD": 1, "BATCH_MATMUL": 1, "CAST": 1, "CONCATENATION": 1, "CONV_2D": 1, "DIV": 1,
              "FULLY_CONNECTED": 5, "LESS": 1, "LOGISTIC": 1, "MAXIMUM": 1, "MEAN": 1, "MINIMUM": 1,
              "MUL": 1, "PAD": 1, "REDUCE_MAX": 1, "RESHAPE": 1, "RSQRT": 1, "SELECT_V2": 1, "SLICE": 1,
              "SOFTMAX": 1, "SQRT": 1, "SQUARED_DIFFERENCE": 1, "SUB": 1, "SUM": 1, "TRANSPOSE": 1}

# Eigen's float erf (used by TensorFlow and XLA): erf(x) = x P(x^2) / Q(x^2) on [-4, 4], where
# erf is within 1.5e-8 of +-1 beyond. Within 6.5e-8 of erf in exact arithmetic, 4.3e-7 in fp32.
_ERF_NUMERATOR = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                  -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                  -1.60960333262415e-02)
_ERF_DENOMINATOR = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                    -7.37332916720468e-03, -1.42647390514189e-02)


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


def erf_rational(x: torch.Tensor) -> torch.Tensor:
    """erf with the operators every TFLite runtime has (see `_ERF_NUMERATOR`)."""
    x = x.clamp(-4.0, 4.0)
    squared = x * x
    numerator = torch.full_like(x, _ERF_NUMERATOR[0])
    for coefficient in _ERF_NUMERATOR[1:]:
        numerator = numerator * squared + coefficient
    denominator = torch.full_like(x, _ERF_DENOMINATOR[0])
    for coefficient in _ERF_DENOMINATOR[1:]:
        denominator = denominator * squared + coefficient
    return x * numerator / denominator


class ErfGelu(nn.Module):
    """nn.GELU (the exact, erf form) without TFLite's GELU operator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + erf_rational(x * (1.0 / math.sqrt(2.0))))


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
    """Refuse a file with an operator, or an operator version, that tflite-runtime 2.5 lacks.

    Raises:
        ConfigError: naming each such operator and the highest version 2.5 has of it.
    """
    bad = [(op, version) for op, version in graph_ops(path) if version > COMPAT_OPS.get(op, 0)]
    if bad:
        raise ConfigError(f"{Path(path).name} uses {', '.join(f'{op} v{v}' for op, v in bad)}, which tflite-runtime "
                          f"{'.'.join(map(str, COMPAT_FLOOR))} lacks (it has {COMPAT_OPS}); the compat export "
                          f"cannot write this model.")


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
            "gelu": "0.5 x (1 + erf(x / sqrt 2)), erf as Eigen's rational function on [-4, 4]",
            "files": "one single-signature file per frame bucket (graphs[].bucket_files)",
            "operators": COMPAT_OPS}
