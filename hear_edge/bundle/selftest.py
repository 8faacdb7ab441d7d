"""The self-test at load: each graph's answer to a fixed probe input, recorded at export, checked on
the runtime that opens it.

A runtime whose kernel computes a graph wrong (tflite-runtime 2.14's hybrid per-channel
FULLY_CONNECTED gives int8 graphs a relative error of about 1) loads the graph without a word; the
probe catches it before any audio is classified. The probe input is generated from a seed
(splitmix64, the same numbers on every platform and numpy), and each output is kept as a few
numbers: its rms and its projections on fixed random sign vectors, whose differences estimate the
output's rms difference (E[(s . d)^2 / n] = mean(d^2)), so the manifest stays small.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from hear_edge.errors import SelfTestError
from .manifest_check import PROBE_FORMULAS, PROBE_PROJECTIONS
from .schema import ACOUSTIC, LOG_MEL, SPECTRUM_PAIRS

logger = logging.getLogger("hear_edge")

# splitmix64-v1: graph input i takes mean + std * uniform(seed + 1000 i, shape) (an int input is
# filled with `fill`); output j is summarised on the signs of splitmix64(seed + 7919 (j + 1)).
PROBE_FORMULA = PROBE_FORMULAS[-1]
PROBE_SEED = 21
PROBE_FRAMES = 50  # one second of acoustic frames
# The relative rms error a graph's probe outputs may show on another runtime or CPU. fp32: summation
# order and kernels differ by ~1e-6 (the default model's window graph: 9.5e-7 between ai-edge-litert
# 2.3 and tflite-runtime 2.14); int8: each runtime quantises activations its own way: 1.8e-2 to
# 2.5e-2 between those two on the per-tensor recipe, where the per-channel graph on 2.14 is off by 0.98.
PROBE_TOLERANCE = {"fp32": 1e-4, "int8": 0.1}
# The input each graph input gets: the scale of its real inputs (the frontend normalises log-mels;
# the window graph's outputs are layer-normed; log power spectra of audio lie far below zero).
PROBE_INPUT_SCALE = {LOG_MEL: (0.0, 1.0), ACOUSTIC: (0.0, 1.0), SPECTRUM_PAIRS: (-8.0, 3.0)}
_MASK_64 = (1 << 64) - 1


def splitmix64(seed: int, count: int) -> np.ndarray:
    """`count` uint64 numbers of the splitmix64 generator started at `seed` (wrapping integer arithmetic)."""
    z = (np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
         + np.uint64(seed & _MASK_64))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, shape) -> np.ndarray:
    """Uniform numbers in [-sqrt(3), sqrt(3)) (mean 0, variance 1), float32, from splitmix64."""
    count = int(np.prod(shape))
    unit = (splitmix64(seed, count) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return ((2 * unit - 1) * math.sqrt(3)).astype(np.float32).reshape(shape)


def _signs(seed: int, size: int) -> np.ndarray:
    """(PROBE_PROJECTIONS, size) float64 signs +-1."""
    bits = splitmix64(seed, PROBE_PROJECTIONS * size) >> np.uint64(63)
    return (1.0 - 2.0 * bits.astype(np.float64)).reshape(PROBE_PROJECTIONS, size)


def probe_inputs(probe: dict, input_names, input_dtypes) -> dict[str, np.ndarray]:
    """The probe's inputs, in the graph's input order: float inputs from the seed, int inputs filled."""
    inputs = {}
    for index, (name, dtype) in enumerate(zip(input_names, input_dtypes)):
        spec = probe["inputs"][name]
        shape = tuple(spec["shape"])
        if dtype.startswith("int"):
            inputs[name] = np.full(shape, spec["fill"], dtype=np.dtype(dtype))
        else:
            values = uniform(probe["seed"] + 1000 * index, shape)
            inputs[name] = (spec["mean"] + spec["std"] * values).astype(np.float32)
    return inputs


def summarize(values: np.ndarray, seed: int) -> dict:
    """An output as {"rms", "projections"}: enough to estimate its relative rms difference from another."""
    flat = np.asarray(values, np.float64).ravel()
    projections = _signs(seed, flat.size) @ flat / math.sqrt(flat.size)
    return {"rms": float(np.sqrt(np.mean(flat ** 2))), "projections": [float(p) for p in projections]}


def relative_error(recorded: dict, values: np.ndarray, seed: int) -> float:
    """How far `values` are from a recorded summary: the larger of the projections' rms difference
    and the rms's difference, both relative to the recorded rms."""
    measured = summarize(values, seed)
    scale = max(recorded["rms"], 1e-12)
    differences = np.subtract(measured["projections"], recorded["projections"])
    return float(max(np.sqrt(np.mean(differences ** 2)), abs(measured["rms"] - recorded["rms"])) / scale)


def output_seed(probe: dict, index: int) -> int:
    return probe["seed"] + 7919 * (index + 1)


def with_probe(bundle_dir, spec, window_frames: int, max_task_frames: int):
    """`spec` with its probe recorded: the graph run once on the installed backend of its format, on
    the probe input of its shortest length (a bucketed graph's shortest bucket, the one a 1 s clip
    takes; PROBE_FRAMES for a free length)."""
    from hear_edge.runtimes.base import format_backend, open_graph
    from .manifest import signature_name

    limit = window_frames if spec.role == "acoustic_window" else max_task_frames
    frames = min(spec.frame_buckets) if spec.frame_buckets else min(PROBE_FRAMES, limit)
    signature = signature_name(spec.role, frames) if spec.format == "tflite" and spec.frame_buckets else None
    # The manifest's dimension names: a free length ("frames", "mel_frames") or a bucket's.
    sizes = {"frames": frames, "bucket": frames, "mel_frames": 2 * frames, "2 * bucket": 2 * frames}
    shapes = {t.name: [d if isinstance(d, int) else sizes[d] for d in t.shape] for t in spec.inputs}
    backend = format_backend(spec.format)
    session = open_graph(backend, Path(bundle_dir) / spec.file, spec.input_names, spec.output_names)
    spec.probe = make_probe(session, spec, frames, signature, shapes, f"the {backend} backend on {session.runtime}")
    return spec


def make_probe(session, spec, frames: int, signature: str | None, input_shapes: dict, recorded_with: str) -> dict:
    """Run `session` (graph `spec`) on the probe input of `frames` frames and return the manifest's probe field.

    `input_shapes` gives each input's concrete shape at that length.
    """
    probe = {"formula": PROBE_FORMULA, "seed": PROBE_SEED, "frames": frames, "signature": signature, "inputs": {}}
    for tensor in spec.inputs:
        if tensor.dtype.startswith("int"):
            probe["inputs"][tensor.name] = {"shape": list(input_shapes[tensor.name]), "fill": frames}
        else:
            mean, std = PROBE_INPUT_SCALE.get(tensor.name, (0.0, 1.0))
            probe["inputs"][tensor.name] = {"shape": list(input_shapes[tensor.name]), "mean": mean, "std": std}
    outputs = session.run(probe_inputs(probe, spec.input_names, [t.dtype for t in spec.inputs]), signature)
    probe["outputs"] = {name: summarize(outputs[name], output_seed(probe, i))
                        for i, name in enumerate(spec.output_names)}
    probe["tolerance"] = PROBE_TOLERANCE[spec.precision]
    probe["recorded_with"] = recorded_with
    return probe


def self_test(session, spec, backend: str, runtime: str) -> float | None:
    """Run graph `spec`'s probe on `session`; the worst relative error, or None when it has no probe.

    Raises:
        SelfTestError: an output off beyond the probe's tolerance, naming the runtime, its version
            and the graph.
    """
    probe = spec.probe
    if probe is None:
        logger.debug("%s has no probe (exported before hear-edge recorded them): its self-test is skipped", spec.file)
        return None
    started = time.perf_counter()
    outputs = session.run(probe_inputs(probe, spec.input_names, [t.dtype for t in spec.inputs]), probe["signature"])
    errors = {name: relative_error(probe["outputs"][name], outputs[name], output_seed(probe, i))
              for i, name in enumerate(spec.output_names)}
    worst = max(errors, key=errors.get)
    if not errors[worst] <= probe["tolerance"]:  # NaN fails too
        raise SelfTestError(
            f"the {backend} backend on {runtime} computes the {spec.format} {spec.precision} {spec.role} graph "
            f"{spec.file} wrong: its self-test (a fixed probe input{_on(probe['signature'])}) gives output "
            f"{worst!r} off by a relative error of {errors[worst]:.3g}, beyond the {probe['tolerance']:g} allowed "
            f"for {spec.precision} (recorded with {probe['recorded_with']}). Its results would be silently wrong. "
            f"Use another precision (precision='fp32') or backend, or another version of the runtime; "
            f"self_test=False (--no-self-test) skips this check.")
    logger.debug("self-test of %s on %s: relative error %.2e (tolerance %g) in %.1f ms", spec.file, runtime,
                 errors[worst], probe["tolerance"], 1000 * (time.perf_counter() - started))
    return errors[worst]


def _on(signature: str | None) -> str:
    return f" on signature {signature}" if signature else ""
