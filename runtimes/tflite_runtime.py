"""The litert backend on tflite-runtime, where ai-edge-litert is not offered (32-bit Pi OS, old systems,
Chaquopy): the same interpreter API, tried after ai-edge-litert. Its int8 kernels differ from
ai-edge-litert's (2.14's hybrid per-channel FULLY_CONNECTED is wrong): the int8 recipe avoids them,
and the self-test at load (hear_edge.bundle.selftest) refuses a graph any runtime computes wrong."""

from __future__ import annotations

from . import litert

# Its declaration (runtimes/base.py reads these; the interpreter is imported when a graph is opened).
NAME = "litert"
FORMAT = "tflite"
GRAPH_SUFFIX = ".tflite"
RUNTIME_MODULE = "tflite_runtime.interpreter"
INSTALL = "hear-edge[tflite-runtime]"
PREFERENCE = 30


def open_session(path, input_names, output_names, num_threads) -> litert.LiteRtSession:
    return litert.open_session(path, input_names, output_names, num_threads, runtime_module=RUNTIME_MODULE)
