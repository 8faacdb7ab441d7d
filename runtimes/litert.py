"""LiteRT backend on ai-edge-litert; `tflite_runtime.py` is the same backend on tflite-runtime.

litert-torch names a signature's inputs args_0, args_1, ... and its outputs output_0, ... in the
order the torch module takes and returns them; this maps them back to the manifest's names.

Memory. XNNPACK packs a graph's weights once per signature (a bundle's graph has one signature per
length bucket), and each signature keeps its own activation buffers once it has run. Hence:

- where it is safe (`weight_cache_safe`), a graph runs on ai-edge-litert's CompiledModel with an
  in-memory XNNPACK weight cache: the signatures share one copy of the packed weights;
- elsewhere, the Interpreter runs each signature from a file cut to it (`_tflite_cut`), opened when
  first run, so only the buckets a run uses are packed;
- a signature the caller marks `transient` (a long clip's bucket) runs on a model of its own, kept
  only until another transient signature is asked for, so at most one long bucket's buffers live;
  where files can be cut, that model is the Interpreter on the signature's cut, even beside a
  CompiledModel (its own copy of one task bucket's weights, 3 MB);
- the Interpreter runs without delegate clustering: clustering moves the attention chunks' XNNPACK
  nodes ahead of the masking ops XNNPACK lacks (SELECT_V2), so every chunk's scores were live at
  once (task_1500: 72 -> 48 MiB, outputs bit-identical, 7 % faster);
- the first transient model fixes glibc's mmap threshold (`map_large_blocks`), so released long
  buckets leave no resident holes in the heap.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import platform
import sys
import threading
from pathlib import Path

import numpy as np

from hear_edge.errors import BundleError
from hear_edge.host import cpu_model_and_flags, map_large_blocks, release_freed_heap

from . import _tflite_cut
from .base import GraphSession

logger = logging.getLogger("hear_edge")

# Its declaration (runtimes/base.py reads these; the interpreter is imported when a graph is opened).
NAME = "litert"
FORMAT = "tflite"
GRAPH_SUFFIX = ".tflite"
RUNTIME_MODULE = "ai_edge_litert.interpreter"
INSTALL = "hear-edge[litert]"
PREFERENCE = 20

# XNNPACK's in-memory weight cache; a cache *file* shared by two graphs hands one graph the other's
# weights without a word (measured: wrong logits), so it is never a file.
_IN_MEMORY_CACHE = ":memory"


def weight_cache_safe() -> bool:
    """Whether ai-edge-litert's CompiledModel with the XNNPACK weight cache runs on this CPU.

    On aarch64 ai-edge-litert 2.3's CompiledModel needs ARMv8.1 LSE atomics (`atomics` in
    /proc/cpuinfo): without them it dies with SIGILL (Cortex-A53: Pi 3, Zero 2 W; Cortex-A72: Pi 4),
    measured under qemu. Linux x86-64 was measured; other hosts keep the Interpreter.
    """
    if not sys.platform.startswith("linux"):
        return False
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return True
    return machine in ("aarch64", "arm64") and "atomics" in cpu_model_and_flags()[1]


_NO_CLUSTERING = "experimental_disable_delegate_clustering"


def _unclustered(interpreter_class) -> dict:
    """The option that turns delegate clustering off, where `interpreter_class` takes it (old
    tflite-runtime wheels do not)."""
    try:
        parameters = inspect.signature(interpreter_class).parameters
    except (TypeError, ValueError):  # a compiled class without a readable signature
        return {}
    return {_NO_CLUSTERING: True} if _NO_CLUSTERING in parameters else {}


class _InterpreterModel:
    """A graph file on the tflite Interpreter API (ai-edge-litert or tflite-runtime).

    Given the file's `TfliteFile`, each signature runs on an Interpreter of its own cut of the file,
    opened when first run: XNNPACK then packs the weights of the buckets a run uses, not of all.
    """

    def __init__(self, interpreter_class, path: Path, num_threads: int, cuts=None):
        self._interpreter_class, self._path, self._num_threads, self._cuts = interpreter_class, path, num_threads, cuts
        self._runners, self._interpreters = {}, {}
        if cuts is None:
            self.interpreter = self._open(model_path=str(path))
            self.signatures = list(self.interpreter.get_signature_list())
        else:
            self.signatures = list(cuts.signatures)

    def _open(self, **source):
        try:
            return self._interpreter_class(**source, num_threads=self._num_threads,
                                           **_unclustered(self._interpreter_class))
        except Exception as error:  # the interpreter raises plain ValueError/RuntimeError for bad files
            raise BundleError(f"LiteRT cannot load {self._path}: {error}") from None

    def _runner(self, key: str):
        if key not in self._runners:
            if self._cuts is None:
                self._runners[key] = self.interpreter.get_signature_runner(key)
            else:
                self._interpreters[key] = self._open(model_content=self._cuts.cut(key))
                self._runners[key] = self._interpreters[key].get_signature_runner(key)
        return self._runners[key]

    def output_details(self, key: str) -> dict:
        if self._cuts is not None:
            return {name: {"shape": shape} for name, shape in self._cuts.output_shapes(key).items()}
        return self._runner(key).get_output_details()

    def run(self, key: str, arrays: list[np.ndarray], outputs: int) -> list[np.ndarray]:
        results = self._runner(key)(**{f"args_{i}": array for i, array in enumerate(arrays)})
        return [np.array(results[f"output_{i}"]) for i in range(outputs)]


class _CompiledModel:
    """A graph file on ai-edge-litert's CompiledModel, XNNPACK with an in-memory weight cache."""

    _environment = None  # one LiteRT environment per process

    def __init__(self, path: Path, num_threads: int):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.cpu_options import CpuOptions
        from ai_edge_litert.environment import Environment, EnvironmentOptions
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import Options

        if _CompiledModel._environment is None:
            # No vendor compiler plugin or NPU dispatch library: the CPU is all this backend asks for.
            nowhere = str(Path(importlib.import_module("ai_edge_litert").__file__).parent / "no-vendor-plugins")
            _CompiledModel._environment = Environment.create(
                options=EnvironmentOptions(compiler_plugin_path=nowhere, dispatch_library_path=nowhere))
        options = Options(hardware_accelerators=HardwareAccelerator.CPU,
                          cpu_options=CpuOptions(num_threads=num_threads, xnnpack_weight_cache_path=_IN_MEMORY_CACHE))
        try:
            self.model = CompiledModel.from_file(str(path), options=options, environment=_CompiledModel._environment)
        except Exception as error:  # the wrapper raises plain RuntimeError for bad files
            raise BundleError(f"LiteRT cannot load {path}: {error}") from None
        self.signatures = list(self.model.get_signature_list())
        self._plans = {}  # signature -> what `_plan` returns

    def output_details(self, key: str) -> dict:
        return self.model.get_output_tensor_details(key)

    def _plan(self, key: str):
        """(signature index, input buffers with the argument each takes, output buffers with how to read them)."""
        if key not in self._plans:
            index = self.model.get_signature_index(key)
            names = self.model.get_signature_list()[key]
            details = self.model.get_output_tensor_details(key)
            inputs = [(buffer, int(name.rpartition("_")[2]))
                      for name, buffer in zip(names["inputs"], self.model.create_input_buffers(index))]
            outputs = [(buffer, int(name.rpartition("_")[2]), int(np.prod(details[name]["shape"])),
                        np.dtype(details[name]["dtype"]), tuple(details[name]["shape"]))
                       for name, buffer in zip(names["outputs"], self.model.create_output_buffers(index))]
            self._plans[key] = (index, inputs, outputs)
        return self._plans[key]

    def run(self, key: str, arrays: list[np.ndarray], outputs: int) -> list[np.ndarray]:
        index, inputs, results = self._plan(key)
        for buffer, position in inputs:
            buffer.write(arrays[position])
        self.model.run_by_index(index, [buffer for buffer, _ in inputs], [buffer for buffer, *_ in results])
        read = [None] * outputs
        for buffer, position, count, dtype, shape in results:
            read[position] = buffer.read(count, dtype).reshape(shape)
        return read


class LiteRtSession(GraphSession):
    """One graph file on LiteRT: a resident model, and one more for the last `transient` signature."""

    def __init__(self, open_model, path: Path, input_names, output_names, num_threads: int, open_transient=None):
        super().__init__(path, input_names, output_names, num_threads)
        self._open_model = open_model  # () -> a model of this file
        self._open_transient = open_transient or open_model  # () -> the model a transient signature runs on
        self._resident = open_model()
        self.engine = type(self._resident).__name__.strip("_")
        self.signatures = self._resident.signatures
        self._transient, self._transient_key = None, None
        self._lock = threading.Lock()  # one model runs one signature at a time

    def _key(self, signature: str | None) -> str:
        key = signature or self.signatures[0]
        if key not in self.signatures:
            raise BundleError(f"{self.path} has no signature {key!r}; it has {self.signatures}.")
        return key

    def output_shape(self, name: str) -> list:
        if name not in self.output_names:
            raise BundleError(f"{self.path}: the manifest names no output {name!r}; it names {self.output_names}.")
        with self._lock:
            details = self._resident.output_details(self.signatures[0])
        key = f"output_{self.output_names.index(name)}"
        if key not in details:
            raise BundleError(f"{self.path} has no output {key} (the manifest's {name!r}); it has {sorted(details)}.")
        return [int(d) for d in details[key]["shape"]]

    def _run(self, inputs: dict[str, np.ndarray], signature: str | None, transient: bool) -> dict[str, np.ndarray]:
        with self._lock:
            key = self._key(signature)
            model = self._resident
            if transient:
                if self._transient_key != key:
                    if self._transient is not None:
                        self._transient, self._transient_key = None, None
                        release_freed_heap()  # the last long bucket's buffers go back to the OS first
                    map_large_blocks()
                    self._transient, self._transient_key = self._open_transient(), key
                model = self._transient
            outputs = model.run(key, [inputs[name] for name in self.input_names], len(self.output_names))
            return dict(zip(self.output_names, outputs))


def open_session(path, input_names, output_names, num_threads, runtime_module: str = RUNTIME_MODULE,
                 engine: str | None = None) -> LiteRtSession:
    """A session on `runtime_module` (any module with the tflite Interpreter API).

    `engine` "compiled" runs on ai-edge-litert's CompiledModel with the weight cache, "interpreter" on
    the Interpreter; None picks "compiled" where `weight_cache_safe`, and the Interpreter where that fails.
    """
    engine_asked = engine
    if engine is None:
        engine = "compiled" if runtime_module == RUNTIME_MODULE and weight_cache_safe() else "interpreter"
    if engine == "compiled":
        cut = []  # the file's cuts, read when a long bucket first runs

        def open_transient():  # a long bucket on the Interpreter's cut, unclustered (see above)
            if not cut:
                cut.append(_cuts(path))
            if cut[0] is None:
                return _CompiledModel(path, num_threads)
            return _InterpreterModel(importlib.import_module(runtime_module).Interpreter, path, num_threads, cut[0])

        try:
            return LiteRtSession(lambda: _CompiledModel(path, num_threads), path, input_names, output_names,
                                 num_threads, open_transient=open_transient)
        except BundleError:
            raise
        except Exception as error:  # an ai-edge-litert without CompiledModel or its options: the Interpreter
            if engine_asked == "compiled":
                raise
            logger.warning("LiteRT's CompiledModel cannot open %s (%s: %s); using its Interpreter, which keeps "
                           "a copy of the packed weights per signature", path, type(error).__name__, error)
    interpreter_class, cuts = importlib.import_module(runtime_module).Interpreter, _cuts(path)
    return LiteRtSession(lambda: _InterpreterModel(interpreter_class, path, num_threads, cuts), path, input_names,
                         output_names, num_threads)


def _cuts(path) -> _tflite_cut.TfliteFile | None:
    """The file's signatures to cut, or None where files cannot be cut here or it has one signature."""
    if not _tflite_cut.available():
        return None
    try:
        cuts = _tflite_cut.TfliteFile(path)
    except Exception as error:  # flatbuffers raises what it meets (struct.error, IndexError ...)
        raise BundleError(f"LiteRT cannot load {path}: it is not a readable .tflite file ({error}).") from None
    return cuts if len(cuts.signatures) >= 2 else None
