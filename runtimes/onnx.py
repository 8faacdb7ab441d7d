"""onnxruntime backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hear_edge.errors import BundleError

from .base import GraphSession

# Its declaration (runtimes/base.py reads these; onnxruntime itself is imported when a graph is opened).
NAME = "onnx"
FORMAT = "onnx"
GRAPH_SUFFIX = ".onnx"
RUNTIME_MODULE = "onnxruntime"
INSTALL = "hear-edge[onnx]"
PREFERENCE = 10


_ARENA: dict[str, bool] = {}
# Runs whose free (frame) axis is at most this long leave their arena blocks for the next run: a 1 s
# window (101 mel frames) or a task run of up to 2 s, a keyword stream's every run. Longer runs give their
# blocks back (see OnnxSession), since kept they would add to a long clip's peak.
_KEPT_ARENA_LENGTH = 101


def _shared_arena(ort) -> bool:
    """Register the process-wide CPU arena once; False where onnxruntime refuses it, or where
    HEAR_EDGE_ORT_ARENA=0 asks for none (sessions then allocate without an arena, as before)."""
    if os.environ.get("HEAR_EDGE_ORT_ARENA", "1") == "0":
        return False
    if "registered" not in _ARENA:
        try:
            config = ort.OrtArenaCfg({"arena_extend_strategy": 1, "initial_chunk_size_bytes": 1 << 20})
            memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(memory, config)
            _ARENA["registered"] = True
        except Exception:  # an older onnxruntime, or an allocator registered by the host application
            _ARENA["registered"] = False
    return _ARENA["registered"]


class OnnxSession(GraphSession):
    def __init__(self, path: Path, input_names, output_names, num_threads: int):
        super().__init__(path, input_names, output_names, num_threads)
        import onnxruntime as ort  # here, not at the top: the registry reads this module without it

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Without an arena every node's output is a fresh malloc (and page faults): 8-19 % of a window
        # graph's time on a 2-core Xeon. A per-session arena keeps the largest clip's activations
        # resident (+20-40 MB peak), so the sessions share one process-wide arena that grows by what
        # is asked (kSameAsRequested) and is shrunk after every run: about the peak of no arena.
        options.enable_cpu_mem_arena = False
        self._run_options = None
        if _shared_arena(ort):
            options.add_session_config_entry("session.use_env_allocators", "1")
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._free_axes: dict[str, int] = {}  # input name -> its free axis
        # A memory pattern preallocates the largest run's activations as one block: with free
        # lengths it only grows the peak (11 MB on a 300-frame window), at no gain in speed.
        options.enable_mem_pattern = False
        # Initializers allocated straight from the device allocator, not through the arena: 7 MB less.
        options.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped exceptions for bad files
            raise BundleError(f"onnxruntime cannot load {path}: {error}") from None
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if graph_inputs != self.input_names:
            raise BundleError(f"{path} has inputs {graph_inputs}, the manifest says {self.input_names}.")
        for graph_input in self.session.get_inputs():
            free = [axis for axis, size in enumerate(graph_input.shape) if not isinstance(size, int)]
            if free:
                self._free_axes[graph_input.name] = free[-1]

    def output_shape(self, name: str) -> list:
        shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}
        if name not in shapes:
            raise BundleError(f"{self.path} has no output {name!r}; it has {sorted(shapes)}.")
        return shapes[name]

    def _run(self, inputs: dict[str, np.ndarray], signature: str | None, transient: bool) -> dict[str, np.ndarray]:
        feed = {name: inputs[name] for name in self.input_names}
        # A short run keeps its arena blocks (no shrinkage): a keyword stream 1.4 % faster, peaks unchanged.
        short = all(feed[name].shape[axis] <= _KEPT_ARENA_LENGTH for name, axis in self._free_axes.items()
                    if feed[name].ndim > axis)
        outputs = self.session.run(self.output_names, feed, None if short else self._run_options)
        return dict(zip(self.output_names, outputs))


def open_session(path, input_names, output_names, num_threads) -> OnnxSession:
    return OnnxSession(path, input_names, output_names, num_threads)
