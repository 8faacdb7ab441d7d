"""HearEdge: load a bundle, classify and embed audio, open streams. No torch."""

from __future__ import annotations

import importlib.resources
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hear_edge.bundle.manifest import Manifest, read_manifest
from hear_edge.errors import (AudioTooShortError, BackendUnavailableError, BundleError, InvalidArgumentError,
                              InvalidAudioError)
from hear_edge.signal.audio import READ_BLOCK_FRAMES, audio_blocks, check_array, check_sample_rate, mono_resampler
from hear_edge.signal.frontend import SAMPLE_RATE_HZ, LogMelFrontend
from .inference import ClipOutputs, InferenceEngine
# Re-exported: the result types and the default are imported from here (and from hear_edge).
from .results import (DEFAULT_MAX_RESULTS, Category, ClassificationResult, Embeddings, _ResultFilter, build_result)  # noqa: F401
# Loaded with the bundle schema anyway; the runtimes themselves (onnxruntime, ...) are imported when probed.
from hear_edge.runtimes.base import BACKEND_FORMAT, backend_problem
from hear_edge.signal.segments import split_segments
from .streaming import ClassificationStream

logger = logging.getLogger("hear_edge")


def default_bundle_path() -> Path:
    assets = importlib.resources.files("hear_edge") / "assets"
    found = sorted(p for p in assets.iterdir() if p.name.endswith(".hearedge")) if assets.is_dir() else []
    if not found:
        raise BundleError("no default bundle is installed with this hear-edge; pass a bundle path "
                          "(a NAME.hearedge folder made by `hear-edge export`).")
    return Path(str(found[0]))


class HearEdge:
    """A loaded bundle on one backend and precision. Thread-safe: streams carry their own state."""

    def __init__(self, bundle_dir: Path, manifest: Manifest, engine: InferenceEngine):
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.engine = engine
        self.frontend = LogMelFrontend(manifest.frontend)

    @classmethod
    def load(cls, bundle: str | Path | None = None, backend: str = "auto", precision: str = "auto",
             num_threads: int = 1, self_test: bool = True) -> "HearEdge":
        """Load a bundle, verifying the size and sha256 of the two graphs it runs (once each).

        Args:
            bundle: a `NAME.hearedge` folder, or None for the default bundle shipped in the wheel.
            backend: "onnx" (onnxruntime), "litert" (ai-edge-litert, else tflite-runtime), or "auto":
                the first of those that is installed and has graphs in the bundle (the backends are
                the modules of `hear_edge.runtimes`).
            precision: "fp32", "int8", or "auto": int8 where the bundle's int8 graphs passed their
                parity gate at export, else fp32.
            num_threads: intra-op threads of the backend; 1 suits a busy small device.
            self_test: run each opened graph once on the probe input its manifest records and
                refuse a runtime that computes it wrong (its cost: benchmarks/selftest_cost.py);
                bundles exported without probes skip it. False skips it.

        Raises:
            BundleError: missing or changed files, an unknown manifest version.
            BackendUnavailableError: the chosen backend's package is not installed or fails to
                import (with the import error and the remedy).
            SelfTestError: the runtime computes a graph wrong (its probe's outputs are off beyond the
                precision's tolerance); names the runtime, its version and the graph.
        """
        bundle_dir = default_bundle_path() if bundle is None else Path(bundle)
        # The chosen variant's two graphs are verified as InferenceEngine opens them; the others
        # are never read, so they are not hashed (`hear-edge info` verifies every graph).
        manifest = read_manifest(bundle_dir, verify_hashes=False)
        formats = BACKEND_FORMAT
        if backend not in ("auto", *formats):
            *others, last = ["'auto'", *map(repr, formats)]
            raise InvalidArgumentError(f"backend must be {', '.join(others)} or {last}, got {backend!r}.")
        if precision not in ("auto", "fp32", "int8"):
            raise InvalidArgumentError(f"precision must be 'auto', 'fp32' or 'int8', got {precision!r}.")
        variants = manifest.variants()
        if backend == "auto":
            present = [name for name, fmt in formats.items() if any(f == fmt for f, _ in variants)]
            problems = {name: backend_problem(name) for name in present}
            usable = [name for name in present if problems[name] is None]
            if not usable:
                raise BackendUnavailableError(
                    f"none of the backends this bundle has graphs for ({present}) can run here: "
                    + " ".join(f"[{name}] {problem}" for name, problem in problems.items()))
            backend = usable[0]
        fmt = formats[backend]
        precisions = [p for f, p in variants if f == fmt]
        if not precisions:
            raise BundleError(f"bundle {bundle_dir} has no {fmt} graphs for the {backend} backend; "
                              f"it has {sorted({f for f, _ in variants})}.")
        if precision == "auto":
            gate = manifest.parity.get("results", {}).get(f"{fmt}/int8", {})
            if "int8" in precisions and gate.get("passed"):
                precision = "int8"
            elif "fp32" in precisions:
                precision = "fp32"
            else:
                raise BundleError(f"bundle {bundle_dir} has only {fmt} int8 graphs, and they failed their parity "
                                  f"gate at export (see `hear-edge info {bundle_dir}`), so precision='auto' does "
                                  f"not pick them. Re-export with fp32 graphs (--precision fp32), or pass "
                                  f"precision='int8' to run the failed int8 graphs anyway.")
        elif precision not in precisions:
            raise BundleError(f"bundle {bundle_dir} has no {fmt} {precision} graphs; it has {precisions}.")
        if not isinstance(self_test, bool):
            raise InvalidArgumentError(f"self_test must be True or False, got {self_test!r}.")
        engine = InferenceEngine(bundle_dir, manifest, fmt, precision, num_threads, backend, self_test=self_test)
        logger.info("loaded %s (%s %s, %d thread(s))", bundle_dir, backend, precision, num_threads)
        return cls(bundle_dir, manifest, engine)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def backend(self) -> str:
        return self.engine.backend

    @property
    def precision(self) -> str:
        return self.engine.precision

    # ---- audio to 16 kHz mono segments, reading and resampling block by block ----

    def _blocks(self, audio, sample_rate) -> tuple[Iterator[np.ndarray], int]:
        """(samples, channels) float32 blocks at the source rate, and that rate."""
        if isinstance(audio, (str, Path)):
            if sample_rate is not None:
                raise InvalidAudioError("sample_rate is read from the file; drop sample_rate= when passing a path.")
            return audio_blocks(audio)
        rate = check_sample_rate(sample_rate)
        samples = check_array(audio)
        return (samples[i:i + READ_BLOCK_FRAMES] for i in range(0, len(samples), READ_BLOCK_FRAMES)), rate

    @property
    def segment_samples(self) -> int:
        """Longest piece (16 kHz samples) classify and embed run at once; longer audio is segmented.
        Read from the bundle's `max_task_frames` (`hear_edge.signal.segments`): 30 s for the official 1500."""
        return self.manifest.segment_samples

    def _segments(self, audio, sample_rate) -> Iterator[tuple[float, np.ndarray]]:
        """(start_s, mono float64 16 kHz) segments of at most `segment_samples`; the last one ends
        at the clip's end (`hear_edge.signal.segments.split_segments`).

        Every segment starts on the 20 ms grid of the Acoustic Model's frames, so frame timestamps
        of all segments fall on one grid.
        """
        blocks, rate = self._blocks(audio, sample_rate)
        grid = 2 * self.frontend.params.hop_samples  # 320 samples, 20 ms: one acoustic frame
        for start, mono in split_segments(_resampled_mono(blocks, rate), self.segment_samples, grid):
            yield start / SAMPLE_RATE_HZ, mono

    def _run(self, mono: np.ndarray) -> tuple[ClipOutputs, float]:
        started = time.perf_counter()
        if mono.shape[0] < self.frontend.min_samples:
            raise AudioTooShortError(
                f"the audio is {1000 * mono.shape[0] / SAMPLE_RATE_HZ:.1f} ms long; HEAR needs at least "
                f"{self.frontend.min_samples} samples at 16 kHz ({1000 * self.frontend.min_samples / 16000:.0f} ms). "
                f"Pad it with silence or pass a longer clip.")
        features = self.frontend.features_from_log(*self.frontend.log_features(mono - mono.mean()))
        frontend_ms = 1000 * (time.perf_counter() - started)
        return self.engine.run(*features), frontend_ms

    def classify(self, audio, sample_rate: int | None = None, max_results: int | None = DEFAULT_MAX_RESULTS,
                 score_threshold: float | None = None, allowlist=None, denylist=None) -> ClassificationResult:
        """Classify a clip.

        Args:
            audio: a path to any file soundfile reads, or a numpy array of shape (samples,) or
                (samples, channels) as soundfile returns it. Float arrays hold samples in [-1, 1];
                integer PCM is scaled by its type's range (int16 / 32768, int32 / 2**31, uint8
                centred on 128). Channels are averaged after per-channel DC removal.
            sample_rate: the array's rate, required for arrays (8 kHz to 192 kHz; resampled to
                16 kHz with soxr's band-limited high-quality filter).
            max_results: how many categories to return, best first (None: all).
            score_threshold: drop categories whose softmax score is below it.
            allowlist, denylist: labels to keep, or to drop (not both).

        Returns:
            A ClassificationResult. Clips over one segment (`segment_samples`, read from the
            bundle's max_task_frames: 30 s for the official model) are classified in consecutive
            segments (the last one ends at the clip's end and overlaps its predecessor); each segment's
            result is in `segments`, and the clip's scores and logits are their means.

        Raises:
            InvalidAudioError: empty, non-finite, wrongly shaped or typed audio; a missing or
                unsupported sample rate; a path that does not exist or is not audio.
            LabelError, InvalidArgumentError: bad max_results, threshold, allowlist or denylist.
        """
        keep = _ResultFilter(self.labels, max_results, score_threshold, allowlist, denylist)
        started = time.perf_counter()
        segments, totals = [], {"frontend_ms": 0.0, "acoustic_ms": 0.0, "task_ms": 0.0}
        for start_s, mono in self._segments(audio, sample_rate):
            outputs, frontend_ms = self._run(mono)
            timings = {"frontend_ms": frontend_ms, **outputs.timings_ms}
            for key, value in timings.items():
                totals[key] += value
            segments.append(build_result(outputs, self.labels, start_s, start_s + len(mono) / SAMPLE_RATE_HZ, keep,
                                         timings))
        totals["total_ms"] = 1000 * (time.perf_counter() - started)
        if len(segments) == 1:
            segments[0].timings_ms = totals
            return segments[0]
        scores = np.mean([s.scores for s in segments], axis=0).astype(np.float32)
        logits = np.mean([s.logits for s in segments], axis=0).astype(np.float32)
        return ClassificationResult(keep(scores, logits), scores, logits, self.labels, 0.0, segments[-1].end_s,
                                    totals, segments)

    def embed(self, audio, sample_rate: int | None = None) -> Embeddings:
        """Scene embedding and timestamped frame embeddings (50 a second, centred at 20 ms * i + 5 ms).

        Over one segment (`segment_samples`, 30 s for the official model) the scene embedding is
        the mean over the segments, and frames are taken from
        each segment in turn without repeating the overlapped ones.
        """
        hop = self.frontend.params.hop_samples
        step = 2 * hop  # an acoustic frame: two mel frames, 20 ms; every segment starts on this grid
        scenes, frames, indices = [], [], []
        next_index = 0
        for start_s, mono in self._segments(audio, sample_rate):
            outputs, _ = self._run(mono)
            index = round(start_s * SAMPLE_RATE_HZ) // step + np.arange(outputs.acoustic.shape[0])
            fresh = index >= next_index
            scenes.append(outputs.pooled)
            frames.append(outputs.acoustic[fresh])
            indices.append(index[fresh])
            next_index = index[-1] + 1
        times = (np.concatenate(indices) * step + hop // 2) / SAMPLE_RATE_HZ
        return Embeddings(np.mean(scenes, axis=0).astype(np.float32), np.concatenate(frames).astype(np.float32),
                          times)

    def create_stream(self, hop_seconds: float | None = None, context_seconds: float | None = None,
                      max_results: int | None = DEFAULT_MAX_RESULTS, score_threshold: float | str | None = "auto", allowlist=None,
                      denylist=None, smoothing_seconds: float | str | None = "auto"):
        """A new stream over this model; see `ClassificationStream`. One model serves many streams.

        Args:
            hop_seconds: time between results; None takes the bundle's default
                (`manifest.stream_defaults`: a quarter of the context, at most 1 s).
            context_seconds: audio each result classifies, ending at the result's time; None
                takes the bundle's default: the clip length its head was trained on (6 s for
                bundles that do not record it). Both are multiples of 10 ms from 0.05 s to one
                segment (`segment_samples`: 30 s for the official model).
            score_threshold: a result's categories below it are dropped and it sets which results
                are detections (`ClassificationResult.detection`). "auto" takes the bundle's
                recommended threshold (`manifest.stream_score_threshold`, chosen on a validation
                stream), or None where it has none; None keeps every score and detects any score.
            max_results, allowlist, denylist: as for `classify`.
            smoothing_seconds: detections read the mean scores of the results ending within this
                many seconds before each result (a multiple of 10 ms, 0 to 2 s; at the 0.25 s hop,
                0.25 averages two results). "auto" takes the bundle's
                (`manifest.stream_smoothing_seconds`, chosen with the threshold); None or 0: each
                result alone. Results' own scores and categories are never smoothed.
        """
        if isinstance(score_threshold, str) and score_threshold == "auto":  # other values: _ResultFilter checks
            score_threshold = self.manifest.stream_score_threshold
        if isinstance(smoothing_seconds, str) and smoothing_seconds == "auto":  # other values: the stream checks
            smoothing_seconds = self.manifest.stream_smoothing_seconds
        defaults = self.manifest.stream_defaults
        return ClassificationStream(self, defaults["hop_seconds"] if hop_seconds is None else hop_seconds,
                                    defaults["context_seconds"] if context_seconds is None else context_seconds,
                                    _ResultFilter(self.labels, max_results, score_threshold, allowlist, denylist),
                                    0.0 if smoothing_seconds is None else smoothing_seconds)


def _resampled_mono(blocks: Iterator[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """Mono float64 16 kHz blocks. Channels are averaged first: the average of DC-corrected
    channels equals the DC-corrected average, so this is the official order."""
    if rate == SAMPLE_RATE_HZ:
        for block in blocks:
            yield block.astype(np.float64).mean(axis=1)
        return
    stream = None
    for block in blocks:
        if stream is None:
            stream = mono_resampler(rate)
        out = stream.resample_chunk(block.astype(np.float64).mean(axis=1))
        if len(out):
            yield out
    if stream is not None:
        out = stream.resample_chunk(np.zeros(0), last=True)
        if len(out):
            yield out
