"""Features -> Acoustic Model windows -> overlap-add -> Task Model graph, on a bundle's graphs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hear_edge.bundle.manifest import GraphSpec, Manifest, signature_name
from hear_edge.bundle.schema import ACOUSTIC, LOG_MEL, LOGITS, POOLED, SPECTRUM_PAIRS, VALID_FRAMES
from hear_edge.bundle.selftest import self_test as run_self_test
from hear_edge.errors import BundleError, ClipTooLongError, InvalidArgumentError, LabelError
from hear_edge.host import release_freed_heap
from hear_edge.signal.windows import blend_weights, overlap_add, plan_windows
from .bucket_graph import open_spec_graph


@dataclass
class ClipOutputs:
    logits: np.ndarray        # (num_classes,)
    pooled: np.ndarray        # (3 * task hidden,): the scene embedding
    acoustic: np.ndarray      # (frames, acoustic hidden): 50 frame embeddings a second
    timings_ms: dict[str, float] = field(default_factory=dict)


def spectrum_pairs(log_power: np.ndarray, frames: int) -> np.ndarray:
    """(bins, mel frames) -> (frames, 2 * bins): each acoustic frame's two spectra, bin by bin."""
    bins = log_power.shape[0]
    by_frame = log_power.T  # the frontend's own (mel frames, bins) layout
    # Two writes of every other frame: 3-4x faster than a copy through transposed reshapes.
    pairs = np.empty((frames, bins, 2), log_power.dtype)
    pairs[:, :, 0] = by_frame[0:2 * frames:2]
    pairs[:, :, 1] = by_frame[1:2 * frames:2]
    return pairs.reshape(frames, 2 * bins)


class _Lengths:
    """How one graph takes a length: free (run the exact frames) or static buckets (pad and mask)."""

    def __init__(self, spec: GraphSpec, static_frames: int, resident_frames: int | None = None):
        self.masked = VALID_FRAMES in spec.input_names
        if not self.masked:
            self.buckets = None
        elif spec.frame_buckets:
            self.buckets = sorted(spec.frame_buckets)
        else:  # schema 1: one static window; a task graph whose masked axis is free
            self.buckets = [static_frames] if spec.role == "acoustic_window" else None
        # LiteRT files with several buckets name a signature per bucket; one-signature files need none.
        self.named = spec.format == "tflite" and bool(spec.frame_buckets)
        self.role = spec.role
        # Buckets longer than this serve long clips: transient (LiteRT keeps one such bucket's buffers).
        self.resident_frames = resident_frames

    def pick(self, frames: int) -> tuple[int, str | None, bool]:
        """(length to run, signature, whether it is transient) for `frames` valid frames."""
        if self.buckets is None:
            return frames, None, False
        length = next((b for b in self.buckets if b >= frames), None)
        if length is None:
            raise ClipTooLongError(f"{frames} frames exceed the {self.role} graph's longest bucket "
                                   f"({self.buckets[-1]}); segment the clip first.")
        transient = self.resident_frames is not None and length > self.resident_frames
        return length, signature_name(self.role, length) if self.named else None, transient


def check_label_count(manifest: Manifest, task_graph) -> None:
    """The manifest's labels must be exactly the head's outputs, read from the graph itself."""
    shape = task_graph.output_shape(LOGITS)
    classes = shape[-1] if shape else None
    if isinstance(classes, bool) or not isinstance(classes, int):
        raise BundleError(f"{task_graph.path}: the head's output 'logits' has shape {shape}, without a fixed "
                          f"class count to check the {len(manifest.labels)} labels against; re-export the bundle.")
    if classes != len(manifest.labels):
        raise LabelError(f"{task_graph.path}: the head has {classes} classes but the manifest lists "
                         f"{len(manifest.labels)} labels; the labels do not belong to this graph. Re-export "
                         f"the bundle with the checkpoint's own labels.")


class InferenceEngine:
    """The graph half of the runtime: one format and precision of one bundle, stateless per call.

    `backend` runs the graphs; None takes the first backend of `fmt` installed here (`format_backend`).
    `self_test` runs each graph's probe (`hear_edge.bundle.selftest`) once, raising SelfTestError when it is off.
    """

    def __init__(self, bundle_dir: str | Path, manifest: Manifest, fmt: str, precision: str,
                 num_threads: int = 1, backend: str | None = None, self_test: bool = True):
        from hear_edge.runtimes.base import BACKEND_FORMAT, format_backend

        self.manifest = manifest
        self.format, self.precision = fmt, precision
        self.backend = format_backend(fmt) if backend is None else backend
        if BACKEND_FORMAT.get(self.backend, fmt) != fmt:
            raise InvalidArgumentError(f"the {self.backend} backend runs {BACKEND_FORMAT[self.backend]} graphs, "
                                       f"not {fmt}.")
        window_spec = manifest.graph("acoustic_window", fmt, precision)
        task_spec = manifest.graph("task", fmt, precision)
        if window_spec is None or task_spec is None:
            raise BundleError(f"bundle has no {fmt} {precision} graphs; it has "
                              f"{[f'{f} {p}' for f, p in manifest.variants()]}.")
        self.window_graph = open_spec_graph(self.backend, bundle_dir, window_spec, num_threads)
        self.task_graph = open_spec_graph(self.backend, bundle_dir, task_spec, num_threads)
        check_label_count(manifest, self.task_graph)
        if self_test:
            for graph, spec in ((self.window_graph, window_spec), (self.task_graph, task_spec)):
                run_self_test(graph, spec, self.backend, graph.runtime)
        self.window_lengths = _Lengths(window_spec, manifest.window_frames)
        # A task bucket longer than one acoustic window serves a long clip; its buffers (LiteRT: 130 MB
        # for the longest) are freed when another long bucket runs, not kept beside every other bucket's.
        self.task_lengths = _Lengths(task_spec, manifest.max_task_frames, resident_frames=manifest.window_frames)
        self.window_frames = manifest.window_frames
        self.blend = blend_weights(manifest.window_frames, manifest.overlap_frames)
        release_freed_heap()  # the parsed graph files are freed by now; hand their pages back

    def encode_window(self, log_mel: np.ndarray, start: int, valid: int) -> np.ndarray:
        """Acoustic frames [start, start + valid) of a clip's log-mel (mels, mel frames): (valid, hidden)."""
        length, signature, transient = self.window_lengths.pick(valid)
        if length == valid:
            window = np.ascontiguousarray(log_mel[None, :, 2 * start:2 * (start + valid)], dtype=np.float32)
        else:
            window = np.zeros((1, log_mel.shape[0], 2 * length), dtype=np.float32)
            window[0, :, :2 * valid] = log_mel[:, 2 * start:2 * (start + valid)]
        inputs = {LOG_MEL: window}
        if self.window_lengths.masked:
            inputs[VALID_FRAMES] = np.array([valid], np.int32)
        return self.window_graph.run(inputs, signature, transient)[ACOUSTIC][0, :valid]

    def acoustic(self, log_mel: np.ndarray) -> np.ndarray:
        frames = log_mel.shape[1] // 2
        plan = plan_windows(frames, self.window_frames, self.manifest.overlap_frames)
        windows = [self.encode_window(log_mel, start, valid) for start, valid in plan]
        return overlap_add(windows, plan, frames, self.blend)

    def task(self, acoustic: np.ndarray, log_power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = acoustic.shape[0]
        if frames > self.manifest.max_task_frames:
            raise ClipTooLongError(f"{frames} acoustic frames exceed the Task Model's "
                                   f"{self.manifest.max_task_frames}; segment the clip first.")
        pairs = spectrum_pairs(log_power, frames)
        length, signature, transient = self.task_lengths.pick(frames)
        if length == frames:
            hidden, padded_pairs = acoustic[None].astype(np.float32, copy=False), pairs[None]
        else:
            hidden = np.zeros((1, length, acoustic.shape[1]), np.float32)
            hidden[0, :frames] = acoustic
            padded_pairs = np.zeros((1, length, pairs.shape[1]), np.float32)
            padded_pairs[0, :frames] = pairs
        inputs = {ACOUSTIC: np.ascontiguousarray(hidden),
                  SPECTRUM_PAIRS: np.ascontiguousarray(padded_pairs, dtype=np.float32)}
        if self.task_lengths.masked:
            inputs[VALID_FRAMES] = np.array([frames], np.int32)
        outputs = self.task_graph.run(inputs, signature, transient)
        return outputs[LOGITS][0], outputs[POOLED][0]

    def run(self, log_mel: np.ndarray, log_power: np.ndarray) -> ClipOutputs:
        started = time.perf_counter()
        acoustic = self.acoustic(log_mel)
        after_acoustic = time.perf_counter()
        logits, pooled = self.task(acoustic, log_power)
        finished = time.perf_counter()
        return ClipOutputs(logits, pooled, acoustic, {
            "acoustic_ms": 1000 * (after_acoustic - started), "task_ms": 1000 * (finished - after_acoustic)})
