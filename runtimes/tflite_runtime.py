"""The litert backend on tflite-runtime, where ai-edge-litert is not offered (32-bit Pi OS, old systems,
Chaquopy): the same interpreter API, tried after ai-edge-litert, and fp32 graphs only."""

from __future__ import annotations

from . import litert

# Its declaration (runtimes/base.py reads these; the interpreter is imported when a graph is opened).
NAME = "litert"
FORMAT = "tflite"
GRAPH_SUFFIX = ".tflite"
RUNTIME_MODULE = "tflite_runtime.interpreter"
INSTALL = "hear-edge[tflite-runtime]"
PREFERENCE = 30
INT8_UNSUPPORTED = ("tflite-runtime's int8 fully-connected kernels compute these graphs wrong (one nn.Linear "
                    "through the int8 recipe: relative error 1.0 on 2.14, 7e-3 on ai-edge-litert)")


def open_session(path, input_names, output_names, num_threads) -> litert.LiteRtSession:
    return litert.open_session(path, input_names, output_names, num_threads, runtime_module=RUNTIME_MODULE)
