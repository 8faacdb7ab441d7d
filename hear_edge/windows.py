"""The Acoustic Model's sliding windows and raised-cosine overlap-add, shared by reference and runtime."""

from __future__ import annotations

import numpy as np


def plan_windows(num_frames: int, window_frames: int, overlap_frames: int) -> list[tuple[int, int]]:
    """(start_frame, valid_frames) of each window the official `AcousticModel._unfold` keeps.

    A window after the first is kept only if the clip runs past the end of the window before it.
    """
    if num_frames <= window_frames:
        return [(0, num_frames)]
    stride = window_frames - overlap_frames
    plan = [(0, window_frames)]
    start = stride
    while num_frames > start + overlap_frames:
        plan.append((start, min(window_frames, num_frames - start)))
        start += stride
    return plan


def blend_weights(window_frames: int, overlap_frames: int) -> np.ndarray:
    """Per-frame weights of one window: raised-cosine ramps clamped at 1e-3, ones between."""
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, overlap_frames, dtype=np.float32))
    ramp = np.maximum(ramp, np.float32(1e-3)).astype(np.float32)
    weights = np.ones(window_frames, dtype=np.float32)
    weights[:overlap_frames] = ramp
    weights[-overlap_frames:] = ramp[::-1]
    return weights


def overlap_add(windows: np.ndarray, plan: list[tuple[int, int]], num_frames: int,
                weights: np.ndarray) -> np.ndarray:
    """Blend encoded windows (n, window_frames, hidden) into (num_frames, hidden)."""
    if len(plan) == 1:
        return windows[0, :num_frames]
    window_frames = windows.shape[1]
    total = plan[-1][0] + window_frames
    summed = np.zeros((total, windows.shape[2]), dtype=np.float32)
    weight_sum = np.zeros((total, 1), dtype=np.float32)
    for encoded, (start, _) in zip(windows, plan):
        summed[start:start + window_frames] += encoded * weights[:, None]
        weight_sum[start:start + window_frames, 0] += weights
    return summed[:num_frames] / weight_sum[:num_frames]
