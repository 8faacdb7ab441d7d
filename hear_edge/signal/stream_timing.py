"""A stream's hop, context and score smoothing limits: for `create_stream`, the CLI's flags, export's defaults and
the manifest check."""

from __future__ import annotations

import numpy as np

from hear_edge.errors import InvalidArgumentError
from .frontend import SAMPLE_RATE_HZ, FrontendParams

STEP_SAMPLES = FrontendParams().hop_samples  # 10 ms: results fall on the frontend's frame grid
MIN_SECONDS = 0.05
# Scores averaged over more than this would blur words said a second apart into one another.
MAX_SMOOTHING_SECONDS = 2.0


def _to_samples(seconds, name: str, minimum_s: float, maximum_s: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a number of seconds, got {seconds!r}.")
    if not minimum_s <= seconds <= maximum_s:
        raise InvalidArgumentError(f"{name} must be between {minimum_s} and {maximum_s} s, got {seconds}.")
    hops = round(seconds * SAMPLE_RATE_HZ / STEP_SAMPLES)
    if abs(hops * STEP_SAMPLES - seconds * SAMPLE_RATE_HZ) > 1e-6:
        raise InvalidArgumentError(f"{name} must be a multiple of 10 ms (the frame hop), got {seconds}.")
    return hops * STEP_SAMPLES


def check_stream_timing(hop_seconds, context_seconds, max_seconds: float,
                        names: tuple[str, str] = ("hop_seconds", "context_seconds")) -> tuple[int, int]:
    """(hop, context) in 16 kHz samples; InvalidArgumentError unless 10 ms multiples from MIN_SECONDS (0.05 s) to
    `max_seconds` (one segment, `hear_edge.signal.segments.segment_samples`: what the Task Model holds), hop <= context.
    `names` are what the messages call the two (the CLI passes its flags)."""
    hop_name, context_name = names
    hop_samples = _to_samples(hop_seconds, hop_name, MIN_SECONDS, max_seconds)
    context_samples = _to_samples(context_seconds, context_name, MIN_SECONDS, max_seconds)
    if hop_samples > context_samples:
        raise InvalidArgumentError(f"{hop_name} ({hop_seconds}) must not exceed {context_name} ({context_seconds}): "
                                   f"audio between windows would never be classified.")
    return hop_samples, context_samples


def check_smoothing_seconds(smoothing_seconds, name: str = "smoothing_seconds") -> int:
    """A detection's score averaging span in 16 kHz samples: a 10 ms multiple from 0 (each result alone) to
    MAX_SMOOTHING_SECONDS; InvalidArgumentError otherwise. `name` is what the message calls it."""
    return _to_samples(smoothing_seconds, name, 0.0, MAX_SMOOTHING_SECONDS)
