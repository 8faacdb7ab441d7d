"""The parity gates, torch-free: the clips a graph is compared on, the thresholds its outputs must meet
against the reference's, the cosine they are measured with, and the verdict. Used by the export's gate
(export/parity.py) and by the bench (hear_edge/tools/bench.py), so both judge a graph by the same rule.
"""

from __future__ import annotations

import numpy as np

# fp32 graphs: the logits of every parity clip within this of the reference's.
FP32_MAX_ABS_LOGIT_DIFF = 1e-3
# int8 graphs: the acoustic hidden states' cosine to the reference's, and the top-1 agreement.
INT8_MIN_ACOUSTIC_COSINE = 0.99
INT8_MIN_TOP1_AGREEMENT = 0.99

# The parity clips' lengths (s): deterministic synthetic clips, the same on every platform.
PARITY_SECONDS = (1.0, 6.0, 6.02, 10.0, 17.37, 30.0)


def synthetic_clip(seconds: float, seed: int) -> np.ndarray:
    """Tones, a chirp and noise bursts: (samples,) float32 at 16 kHz, the same on every platform."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 16000))
    t = np.arange(n) / 16000
    wave = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
    wave += 0.1 * np.sin(2 * np.pi * (200 + 600 * t / seconds) * t)
    bursts = (rng.uniform(size=n // 1600 + 1) > 0.6).repeat(1600)[:n]
    wave += 0.1 * rng.standard_normal(n) * bursts
    return wave.astype(np.float32)


def synthetic_clips(seconds=PARITY_SECONDS, seed: int = 0) -> dict[str, np.ndarray]:
    return {f"synthetic_{s:g}s": synthetic_clip(s, seed + i) for i, s in enumerate(seconds)}


def cosine(a, b) -> float:
    """Cosine similarity of two arrays, flattened, in float64."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def gates_for(precision: str) -> dict[str, tuple[str, float]]:
    """{figure: (op, bound)} that graphs of `precision` must meet; op is "<=" or ">="."""
    if precision == "fp32":
        return {"max_abs_logit_diff": ("<=", FP32_MAX_ABS_LOGIT_DIFF)}
    return {"acoustic_cosine_min": (">=", INT8_MIN_ACOUSTIC_COSINE),
            "top1_agreement": (">=", INT8_MIN_TOP1_AGREEMENT)}


def verdict(figures: dict, precision: str) -> dict:
    """{"gates": {figure: "op bound"}, "passed": bool, "failures": [one line per missed gate]} for
    measured `figures` (max_abs_logit_diff, acoustic_cosine_min, top1_agreement) of one variant."""
    gates = gates_for(precision)
    failures = []
    for figure, (op, bound) in gates.items():
        value = figures[figure]
        if (op == "<=" and value > bound) or (op == ">=" and value < bound):
            failures.append(f"{figure} = {value:.6g}, gate {op} {bound:g} (off by {abs(value - bound):.3g})")
    return {"gates": {k: f"{op} {bound:g}" for k, (op, bound) in gates.items()}, "passed": not failures,
            "failures": failures}
