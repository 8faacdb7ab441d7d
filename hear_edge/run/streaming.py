"""Streaming classification: audio in chunks of any size, a result every hop over the last context.

Causal normalisation: the reference normalises over the whole clip, which a stream cannot see.
A stream result covers the window [end - context, end) (shorter while the stream is younger than
the context) and normalises over that window alone, exactly as `classify` normalises a clip. So a
stream's result for a window equals `classify` of that window's audio, whatever the chunk sizes.

Work is not repeated: each STFT frame is computed once from the raw samples, when the first result
that needs it is due (a hop's new frames together, written straight into the cache). A window's DC
removal is applied to the cached spectra as a linear correction (X(x - m) = X(x) - m X(1)); only the
few frames at a window's edges, where the reference reflects the signal, are computed per window.
Each window's acoustic graph runs once, for its result.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

from hear_edge.errors import AudioTooShortError, InvalidAudioError
from hear_edge.signal.audio import check_array, check_sample_rate, mono_resampler
from hear_edge.signal.frontend import SAMPLE_RATE_HZ, FrontendParams
from hear_edge.signal.stream_timing import check_smoothing_seconds, check_stream_timing
from .results import Category, _ResultFilter, build_result

# The frontend's frame grid, which the stream's frame cache follows.
_HOP = FrontendParams().hop_samples
_HALF_WINDOW = FrontendParams().window_samples // 2
# Rows of the spectrum cache beyond a context's frames: the live rows move to the front about once
# every _SPARE_FRAMES new frames (0.64 s of audio), not on every chunk.
_SPARE_FRAMES = 64


class _Detections:
    """The detection rule (see `ClassificationStream`), over results in stream order."""

    def __init__(self, background: set[int], keep, smoothing_samples: int, results_kept_by_keep: bool = False):
        self._background = background
        self._keep = keep
        # True where each result's categories came from this very `keep` (a stream's own results).
        self._results_kept_by_keep = results_kept_by_keep
        self._smoothing_samples = smoothing_samples
        self._recent = collections.deque()  # (end sample, scores, logits) of the results a detection averages
        self._last_hit_end_s: dict[int, float] = {}  # label index -> end of the last window that hit it

    def detect(self, result) -> Category | None:
        end = round(result.end_s * SAMPLE_RATE_HZ)
        self._recent.append((end, result.scores, result.logits))
        while end - self._recent[0][0] > self._smoothing_samples:
            self._recent.popleft()
        if len(self._recent) == 1 and self._results_kept_by_keep:  # unsmoothed: the result's own ranking
            scores, kept = result.scores, result.categories
        else:
            scores = np.mean([r[1] for r in self._recent], axis=0, dtype=np.float64).astype(np.float32)
            logits = np.mean([r[2] for r in self._recent], axis=0, dtype=np.float64).astype(np.float32)
            kept = self._keep(scores, logits)
        best = kept[0] if kept else None
        # The best kept category is a hit only if it is the best of all labels and not background.
        if best is None or best.index in self._background or best.score < float(scores.max()):
            return None
        overlaps = self._last_hit_end_s.get(best.index, -1.0) > result.start_s
        self._last_hit_end_s[best.index] = result.end_s
        return None if overlaps else best


def replay_detections(results, labels: list[str], background_labels, score_threshold: float | None,
                      smoothing_seconds: float = 0.0) -> list:
    """The detections a stream with `score_threshold` and `smoothing_seconds` reports, from the results
    of the same stream run with score_threshold=None: one stream run serves a sweep of both.

    Args:
        results: a stream's ClassificationResults in order (any max_results; every score is kept).
        labels, background_labels: the model's (`model.labels`, `model.manifest.background_labels`).
        score_threshold: a probability in [0, 1], or None.
        smoothing_seconds: as `HearEdge.create_stream`'s (0: each result alone).

    Returns:
        (result, detected Category) pairs, in order.
    """
    detections = _Detections({labels.index(label) for label in background_labels},
                             _ResultFilter(labels, 1, score_threshold, None, None),
                             check_smoothing_seconds(smoothing_seconds))
    found = []
    for result in results:
        detected = detections.detect(result)
        if detected is not None:
            found.append((result, detected))
    return found


class ClassificationStream:
    """Per-stream state over a shared HearEdge model. Thread-safe; create one per audio source.

    Each result runs the Acoustic Model on its own context only (a 1 s context is a 50-frame
    window), so a stream costs about context / hop times the offline work of the same audio.

    Detections: a result whose best label is not one of the bundle's background labels
    (`manifest.background_labels`, e.g. `_unknown_`, `_silence_`), is let through by the
    allowlist / denylist and scores at least the score threshold is a hit. A hit starts a
    detection (`result.detection`, its category) unless its window overlaps the window of the last
    hit of the same label: one word heard in several overlapping windows is one detection.
    With score smoothing (`smoothing_seconds` > 0), the rule reads the mean scores of the results
    that end within that span before this one's end (this one included) instead of its own: a
    word scores high in neighbouring windows, a passing sound in one. A result's own categories
    and scores are never smoothed.
    """

    def __init__(self, model, hop_seconds: float, context_seconds: float, keep, smoothing_seconds: float = 0.0):
        self.model = model
        self.hop_samples, self.context_samples = check_stream_timing(hop_seconds, context_seconds,
                                                                     model.segment_samples / SAMPLE_RATE_HZ)
        self.smoothing_samples = check_smoothing_seconds(smoothing_seconds)
        self._keep = keep
        self._background = {model.labels.index(label) for label in model.manifest.background_labels}
        self._frontend = model.frontend
        self._lock = threading.Lock()
        self._fft = self._frontend.frame_fft()  # its buffer serves every FFT of this stream
        self.reset()

    @property
    def score_threshold(self) -> float | None:
        """The threshold categories and detections are held to (None: none)."""
        return self._keep.score_threshold

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / SAMPLE_RATE_HZ

    @property
    def context_seconds(self) -> float:
        return self.context_samples / SAMPLE_RATE_HZ

    @property
    def smoothing_seconds(self) -> float:
        """The span whose results' mean scores decide detections (0: each result alone)."""
        return self.smoothing_samples / SAMPLE_RATE_HZ

    def reset(self) -> None:
        """Forget all audio; the next chunk starts a new stream (and may use another sample rate)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:  # the caller holds self._lock
        self._rate = None
        self._channels = None
        self._resampler = None
        self._buffer = np.zeros(4 * self.context_samples)  # mono float64 at 16 kHz ...
        self._size = 0                                       # ... of which this much is filled,
        self._offset = 0                                     # from this absolute sample on
        self._received = 0
        # Spectra of the raw samples, one row per frame: absolute frame f in row f - _spectra_base,
        # rows from _live_frame - _spectra_base on still needed (read a block at a time per result).
        bins = self._frontend.params.n_fft // 2 + 1
        self._spectra = np.empty((self.context_samples // _HOP + 4 + _SPARE_FRAMES, bins), dtype=np.complex128)
        self._next_frame = 2        # frames 0 and 1 reach before the stream's start
        self._spectra_base = self._live_frame = self._next_frame
        self._next_end = self.hop_samples
        self._last_end = 0
        self._detections = _Detections(self._background, self._keep, self.smoothing_samples, True)

    def accept_waveform(self, samples: np.ndarray, sample_rate: int) -> list:
        """Add a chunk of any size; returns the results (ClassificationResult) that became ready.

        Args:
            samples: (samples,) or (samples, channels), float in [-1, 1] or integer PCM, the same
                channel count and rate on every call. A chunk of any length, one frame included, is
                taken as (samples, channels) once an earlier chunk fixed the channel count; a first
                chunk of one frame, (1, c), is one frame of c channels for c up to
                `hear_edge.signal.audio.MAX_ONE_FRAME_CHANNELS` (8); see `hear_edge.signal.audio.check_array`.
            sample_rate: the chunk's rate, 8 kHz to 192 kHz.
        """
        with self._lock:
            rate = check_sample_rate(sample_rate)
            if self._rate is not None and rate != self._rate:
                raise InvalidAudioError(f"sample rate changed mid-stream from {self._rate} to {rate} Hz; call "
                                        f"reset() (or create a new stream) before sending audio at another rate.")
            mono = self._mono(samples)
            self._rate = rate
            if rate != SAMPLE_RATE_HZ:
                if self._resampler is None:
                    self._resampler = mono_resampler(rate)
                mono = self._resampler.resample_chunk(mono)
            return self._push(mono)

    def flush(self) -> list:
        """End of audio: the result for the last, partial hop (if any); the stream is then reset.

        Raises:
            AudioTooShortError: the stream got some audio, but too little for even one result.
        """
        with self._lock:
            results = []
            if self._resampler is not None:
                results += self._push(self._resampler.resample_chunk(np.zeros(0), last=True))
            end = self._received
            start = max(0, end - self.context_samples)
            if end > self._last_end and end - start >= self._frontend.min_samples:
                self._cache_arrived_frames()
                results.append(self._result(start, end))
            too_short = not results and self._last_end == 0 and 0 < end
            self._reset()  # under the same lock: no chunk can land between the flush and the reset
        if too_short:
            raise AudioTooShortError(
                f"the stream ended after {1000 * end / SAMPLE_RATE_HZ:.1f} ms of audio, too short for any result: "
                f"HEAR needs at least {self._frontend.min_samples} samples at 16 kHz "
                f"({1000 * self._frontend.min_samples / SAMPLE_RATE_HZ:.0f} ms). Send more audio before flush().")
        return results

    def _mono(self, samples) -> np.ndarray:
        # Validated in full before any state changes: a refused chunk fixes nothing.
        audio = check_array(samples, "chunk", allow_empty=True, channels=self._channels)
        channels = audio.shape[1]
        if self._channels is not None and channels != self._channels:
            raise InvalidAudioError(f"the stream started with {self._channels} channel(s) and this chunk has "
                                    f"{channels}; keep the layout, or reset() first.")
        if len(audio):
            self._channels = channels
        # One channel is its own mean (x / 1 == x), without a reduction over an axis of one.
        return audio[:, 0].astype(np.float64) if channels == 1 else audio.astype(np.float64).mean(axis=1)

    def _push(self, mono: np.ndarray) -> list:
        if not len(mono):
            return []
        if self._size + len(mono) > len(self._buffer):
            grown = np.zeros(max(2 * len(self._buffer), self._size + len(mono)))
            grown[:self._size] = self._buffer[:self._size]
            self._buffer = grown
        self._buffer[self._size:self._size + len(mono)] = mono
        self._size += len(mono)
        self._received += len(mono)
        results = []
        if self._next_end <= self._received:
            self._cache_arrived_frames()
        while self._next_end <= self._received:
            results.append(self._result(max(0, self._next_end - self.context_samples), self._next_end))
            self._last_end = self._next_end
            self._next_end += self.hop_samples
        # Keep what the next window, or a flush now, can still need.
        self._forget_before(max(0, self._received - self.context_samples) // _HOP * _HOP)
        return results

    def _cache_arrived_frames(self) -> None:
        """Cache the spectra of every frame whose 400 samples have all arrived, when a result needs them rather
        than a chunk at a time (a keyword stream fed 100 ms chunks: 0.30 -> 0.25 ms a result), written
        straight into the cache's rows."""
        count = (self._received - _HALF_WINDOW) // _HOP - self._next_frame + 1
        if count <= 0:
            return
        row = self._rows_for(count)
        signal, first = self._buffer[:self._size], self._next_frame * _HOP - _HALF_WINDOW - self._offset
        for done in range(0, count, self._fft.max_frames):
            frames = min(self._fft.max_frames, count - done)
            self._fft(signal, first + done * _HOP, frames, out=self._spectra[row + done:row + done + frames])
        self._next_frame += count

    def _forget_before(self, sample: int) -> None:
        keep_from = min(sample, self._next_frame * _HOP - _HALF_WINDOW)
        drop = keep_from - self._offset
        if drop > 0 and self._size > len(self._buffer) // 2:  # compact only when the buffer fills
            self._buffer[:self._size - drop] = self._buffer[drop:self._size]
            self._size -= drop
            self._offset = keep_from
        self._live_frame = min(max(self._live_frame, -(-(sample + _HALF_WINDOW) // _HOP)), self._next_frame)

    def _rows_for(self, count: int) -> int:
        """The cache row of frame _next_frame, with room for `count` frames from there on; the live rows move
        to the front (of a larger array if they would leave too few spare rows) only when the new ones do
        not fit behind them."""
        row = self._next_frame - self._spectra_base
        if row + count > len(self._spectra):
            live = self._spectra[self._live_frame - self._spectra_base:row]
            needed = len(live) + count
            moved = self._spectra if needed + _SPARE_FRAMES // 4 <= len(self._spectra) else \
                np.empty((needed + _SPARE_FRAMES, self._spectra.shape[1]), dtype=np.complex128)
            moved[:len(live)] = live
            self._spectra, self._spectra_base, row = moved, self._live_frame, len(live)
        return row

    def _result(self, start: int, end: int):
        started = time.perf_counter()
        frontend = self._frontend
        audio = self._buffer[start - self._offset:end - self._offset]
        # Frames whose window lies inside [start, end) come from the cache; the edges are computed
        # from the reflect-padded window, as the reference pads a clip (only the samples they cover).
        first_inner = -(-_HALF_WINDOW // _HOP)
        inner_stop = max(first_inner, (len(audio) - _HALF_WINDOW) // _HOP + 1)
        if start % _HOP:  # a flushed tail can start between cached frames
            inner_stop = first_inner
        row = start // _HOP - self._spectra_base
        dc = audio.mean() * frontend.window_spectrum

        def block_spectra(first: int, count: int, out: np.ndarray) -> None:
            # A block at a time, as `classify` makes its features, not the window's spectra at once.
            stop = first + count
            cached = (max(first, first_inner), min(stop, inner_stop))
            if cached[0] < cached[1]:
                np.subtract(self._spectra[row + cached[0]:row + cached[1]], dc,
                            out=out[cached[0] - first:cached[1] - first])
            for low, high in ((first, min(stop, first_inner)), (max(first, inner_stop), stop)):
                if low < high:
                    padded = frontend.padded_range(audio, frontend.frame_start(low),
                                                   frontend.frame_start(high - 1) + frontend.params.window_samples)
                    self._fft(padded, 0, high - low, out=out[low - first:high - first])
                    out[low - first:high - first] -= dc

        features = frontend.features_from_log(*frontend.log_features_of_blocks(frontend.num_frames(len(audio)),
                                                                               block_spectra))
        frontend_ms = 1000 * (time.perf_counter() - started)
        outputs = self.model.engine.run(*features)
        result = build_result(outputs, self.model.labels, start / SAMPLE_RATE_HZ, end / SAMPLE_RATE_HZ, self._keep,
                              {"frontend_ms": frontend_ms, **outputs.timings_ms})
        result.detection = self._detections.detect(result)
        return result
