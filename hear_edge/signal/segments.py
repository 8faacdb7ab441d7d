"""The segment planner: how long audio is cut so that each piece fits the Task Model, read from the bundle.

The Task Model's position table holds `max_task_frames` acoustic frames. A clip of n samples has
n // hop + 1 mel frames and (n // hop + 1) // 2 acoustic frames, so the longest clip that fits is
(2 * max_task_frames + 1) * hop - 1 samples (what the reference's `HEARConfig.max_samples` takes).
A segment is the longest whole number of acoustic frames (2 * hop samples, 20 ms) within that:
2 * max_task_frames * hop samples, 30 s for the official 1500 frames. Segments then start on the
acoustic frame grid, so the frame timestamps of every segment fall on one grid.

Used by `HearEdge.classify` / `embed` (and so the HEAR API and the CLI), the stream's longest
context, the bench's PyTorch row, the export's calibration clips and `hear-edge info`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from hear_edge.errors import InvalidAudioError


def segment_samples(max_task_frames: int, hop_samples: int) -> int:
    """Samples in one segment: the longest multiple of an acoustic frame (2 hops) that keeps a
    segment within `max_task_frames` acoustic frames."""
    return 2 * max_task_frames * hop_samples


def last_segment_start(total: int, segment: int, grid: int) -> int:
    """Where the final segment of audio longer than one segment starts: `segment` before the end,
    rounded UP to the grid (so it starts on the frame grid and is never longer than a segment)."""
    return -(-(total - segment) // grid) * grid


def split_segments(blocks: Iterable[np.ndarray], segment: int, grid: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, samples) of consecutive segments of a stream of mono blocks, holding at most
    two segments at a time. Audio of one segment or less is one segment; longer audio is cut into
    `segment`-sample pieces, and never a stub at the end: the last one takes the final `segment`
    samples (start snapped up to `grid`), overlapping the one before.

    Raises:
        InvalidAudioError: no samples at all.
    """
    pending, previous, emitted = np.zeros(0), None, 0
    for block in blocks:
        pending = np.concatenate([pending, block])
        while len(pending) >= segment:
            previous, pending = pending[:segment], pending[segment:]
            yield emitted, previous
            emitted += segment
    if len(pending) and previous is not None:
        start = last_segment_start(emitted + len(pending), segment, grid)
        yield start, np.concatenate([previous, pending])[start - (emitted - segment):]
    elif previous is None:
        if not len(pending):
            raise InvalidAudioError("the audio is empty; pass at least 32 ms of sound.")
        yield 0, pending
