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


def overlap_add(windows, plan: list[tuple[int, int]], num_frames: int, weights: np.ndarray) -> np.ndarray:
    """Blend encoded windows, each (valid frames, hidden) as planned, into (num_frames, hidden).

    Only a window's valid frames are blended: in the official code the frames past a clip's end
    take weight too, but they are cut off with everything else past `num_frames`.
    """
    if len(plan) == 1:
        return windows[0][:num_frames]
    hidden = windows[0].shape[-1]
    summed = np.zeros((num_frames, hidden), dtype=np.float32)
    weight_sum = np.zeros((num_frames, 1), dtype=np.float32)
    for encoded, (start, valid) in zip(windows, plan):
        summed[start:start + valid] += encoded[:valid] * weights[:valid, None]
        weight_sum[start:start + valid, 0] += weights[:valid]
    return summed / weight_sum
