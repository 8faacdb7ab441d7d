"""Deterministic test signals: the clips the export gate and the benchmark run, torch-free."""

from __future__ import annotations

import numpy as np

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
