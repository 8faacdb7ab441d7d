"""What a backend offers: open a graph file, run it on named numpy inputs."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from hear_edge.errors import BackendUnavailableError, BundleError, InvalidArgumentError

# backend name -> (module inside hear_edge.runtimes, the package it needs, the pip extra)
_BACKENDS = {
    "onnx": ("onnx", "onnxruntime", "hear-edge[onnx]"),
    "litert": ("litert", "ai_edge_litert", "hear-edge[litert]"),
}
GRAPH_SUFFIX = {"onnx": ".onnx", "litert": ".tflite"}


class GraphSession(ABC):
    """One loaded graph. `run` is safe to call from several threads at once."""

    def __init__(self, path: Path, input_names: list[str], output_names: list[str], num_threads: int):
        self.path = Path(path)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.num_threads = num_threads

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]:
        """Run on inputs named as in `input_names`; `signature` picks an entry point where there are several."""

    @abstractmethod
    def output_shape(self, name: str) -> list:
        """The shape the graph itself declares for output `name` (ints; a free dimension is a str or None)."""


def backend_installed(name: str) -> bool:
    try:
        importlib.import_module(_BACKENDS[name][1])
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    """Backends whose runtime package imports here, in order of preference."""
    return [name for name in _BACKENDS if backend_installed(name)]


def open_graph(backend: str, path: str | Path, input_names, output_names, num_threads: int = 1) -> GraphSession:
    if backend not in _BACKENDS:
        raise InvalidArgumentError(f"unknown backend {backend!r}; expected one of {sorted(_BACKENDS)}.")
    module_name, package, extra = _BACKENDS[backend]
    if not backend_installed(backend):
        raise BackendUnavailableError(f"the {backend} backend needs the {package} package, which is not "
                                      f"installed. Install it with: pip install '{extra}'")
    if not isinstance(num_threads, int) or num_threads < 1:
        raise InvalidArgumentError(f"num_threads must be a positive int, got {num_threads!r}.")
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"graph file {path} is missing.")
    module = importlib.import_module(f"hear_edge.runtimes.{module_name}")
    return module.open_session(path, input_names, output_names, num_threads)
