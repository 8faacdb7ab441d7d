"""LiteRT backend on ai-edge-litert; `tflite_runtime.py` is the same backend on tflite-runtime.

litert-torch names a signature's inputs args_0, args_1, ... and its outputs output_0, ... in the
order the torch module takes and returns them; this maps them back to the manifest's names.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import numpy as np

from hear_edge.errors import BundleError

from .base import GraphSession

# Its declaration (runtimes/base.py reads these; the interpreter is imported when a graph is opened).
NAME = "litert"
FORMAT = "tflite"
GRAPH_SUFFIX = ".tflite"
RUNTIME_MODULE = "ai_edge_litert.interpreter"
INSTALL = "hear-edge[litert]"
PREFERENCE = 20
INT8_UNSUPPORTED = None


class LiteRtSession(GraphSession):
    def __init__(self, interpreter_class, path: Path, input_names, output_names, num_threads: int):
        super().__init__(path, input_names, output_names, num_threads)
        try:
            self.interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
        except Exception as error:  # the interpreter raises plain ValueError/RuntimeError for bad files
            raise BundleError(f"LiteRT cannot load {path}: {error}") from None
        self.signatures = list(self.interpreter.get_signature_list())
        self._runners = {}
        self._lock = threading.Lock()  # one interpreter runs one signature at a time

    def _runner(self, signature: str | None):
        key = signature or self.signatures[0]
        if key not in self._runners:
            if key not in self.signatures:
                raise BundleError(f"{self.path} has no signature {key!r}; it has {self.signatures}.")
            self._runners[key] = self.interpreter.get_signature_runner(key)
        return self._runners[key]

    def output_shape(self, name: str) -> list:
        if name not in self.output_names:
            raise BundleError(f"{self.path}: the manifest names no output {name!r}; it names {self.output_names}.")
        details = self._runner(None).get_output_details()
        key = f"output_{self.output_names.index(name)}"
        if key not in details:
            raise BundleError(f"{self.path} has no output {key} (the manifest's {name!r}); it has {sorted(details)}.")
        return [int(d) for d in details[key]["shape"]]

    def _run(self, inputs: dict[str, np.ndarray], signature: str | None) -> dict[str, np.ndarray]:
        with self._lock:
            runner = self._runner(signature)
            outputs = runner(**{f"args_{i}": inputs[name] for i, name in enumerate(self.input_names)})
            return {name: np.array(outputs[f"output_{i}"]) for i, name in enumerate(self.output_names)}


def open_session(path, input_names, output_names, num_threads, runtime_module: str = RUNTIME_MODULE) -> LiteRtSession:
    """A session on the `Interpreter` of `runtime_module` (any module with the tflite Interpreter API)."""
    return LiteRtSession(importlib.import_module(runtime_module).Interpreter, path, input_names, output_names,
                         num_threads)
