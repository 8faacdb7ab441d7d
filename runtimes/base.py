"""What a backend offers: open a graph file, run it on named numpy inputs."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from hear_edge.errors import BackendUnavailableError, BundleError, InvalidArgumentError

# backend name -> (module inside hear_edge.runtimes, the package it needs, the pip extra)
_BACKENDS = {
    "onnx": ("onnx", "onnxruntime", "hear-edge[onnx]"),
    "litert": ("litert", "ai_edge_litert", "hear-edge[litert]"),
}
# The bundle graph format each backend runs, and back: the one map of them (a new backend is a
# module here, an entry in these tables and its pip extra).
BACKEND_FORMAT = {"onnx": "onnx", "litert": "tflite"}
FORMAT_BACKEND = {fmt: backend for backend, fmt in BACKEND_FORMAT.items()}
# The module each backend imports, in order of preference: LiteRT falls back to tflite-runtime,
# all that 32-bit Pi OS, old systems and Chaquopy offer.
_RUNTIME_MODULES = {
    "onnx": ("onnxruntime",),
    "litert": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"),
}
# Runtime packages that load int8 graphs but compute them wrong, and how: the one record of it,
# read by `supports_int8` (and so by HearEdge.load's precision choice and the bench).
INT8_UNSUPPORTED = {
    "tflite_runtime": "tflite-runtime's int8 fully-connected kernels compute these graphs wrong (one nn.Linear "
                      "through the int8 recipe: relative error 1.0 on 2.14, 7e-3 on ai-edge-litert)",
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


def _probe(name: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(the first of the backend's runtime modules that imports, or None; why each installed one failed)."""
    failures = []  # (package, why)
    for module in _RUNTIME_MODULES[name]:
        if sys.modules.get(module) is not None:  # imported already
            return module, failures
        package = module.split(".")[0]
        try:
            installed = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):  # a broken entry in sys.modules
            installed = True
        if not installed:
            continue
        printed = io.StringIO()  # numpy 2 prints why a numpy-1 build fails, then the import raises a bare ImportError
        try:
            with contextlib.redirect_stderr(printed):
                importlib.import_module(module)
        except Exception as error:  # a compiled package fails with ImportError, AttributeError, OSError ...
            why = f"{type(error).__name__}: {error}".strip().rstrip(":")
            if "_ARRAY_API not found" in printed.getvalue() and "_ARRAY_API" not in why:
                why += ", after numpy printed 'AttributeError: _ARRAY_API not found': it was compiled for NumPy 1.x"
            failures.append((package, why))
            continue
        sys.stderr.write(printed.getvalue())
        return module, failures
    return None, failures


def runtime_package(name: str) -> str | None:
    """The package the backend runs on here ("onnxruntime", "ai_edge_litert", "tflite_runtime"), or None."""
    module, _ = _probe(name)
    return module.split(".")[0] if module else None


def backend_installed(name: str) -> bool:
    """Whether the backend's runtime package imports here."""
    return runtime_package(name) is not None


def backend_problem(name: str) -> str | None:
    """Why the backend cannot run here, with the remedy, or None when it can.

    Tells a package that is not installed from one that is installed but fails to import (an
    onnxruntime built for numpy 1 under numpy 2 fails with "_ARRAY_API not found").
    """
    module, failures = _probe(name)
    if module is not None:
        return None
    _, package, extra = _BACKENDS[name]
    if not failures:
        alternatives = [m.split(".")[0] for m in _RUNTIME_MODULES[name][1:]]
        also = f" (or {', '.join(alternatives)})" if alternatives else ""
        return (f"the {name} backend needs the {package} package{also}, which is not installed. "
                f"Install it with: pip install '{extra}'")
    broken = " and ".join(package for package, _ in failures)
    why = failures[0][1] if len(failures) == 1 else "; ".join(f"{package}: {error}" for package, error in failures)
    dists = " ".join(package.replace("_", "-") for package, _ in failures)
    if "numpy" in why.lower() or "_ARRAY_API" in why:
        remedy = (f"It was built against another numpy than the installed {np.__version__}: upgrade it "
                  f"(pip install --upgrade {dists}) or install the numpy it was built for "
                  f"(e.g. pip install 'numpy<2').")
    else:
        remedy = f"Reinstall it for this Python: pip install --force-reinstall {dists}"
    return f"the {name} backend cannot be used: {broken} is installed but fails to import ({why}). {remedy}"


def supports_int8(name: str) -> bool:
    """Whether the backend computes int8 graphs right here (False on tflite-runtime)."""
    return runtime_package(name) not in INT8_UNSUPPORTED


def available_backends() -> list[str]:
    """Backends whose runtime package imports here, in order of preference."""
    return [name for name in _BACKENDS if backend_installed(name)]


def open_graph(backend: str, path: str | Path, input_names, output_names, num_threads: int = 1) -> GraphSession:
    if backend not in _BACKENDS:
        raise InvalidArgumentError(f"unknown backend {backend!r}; expected one of {sorted(_BACKENDS)}.")
    module_name = _BACKENDS[backend][0]
    problem = backend_problem(backend)
    if problem:
        raise BackendUnavailableError(problem)
    if not isinstance(num_threads, int) or num_threads < 1:
        raise InvalidArgumentError(f"num_threads must be a positive int, got {num_threads!r}.")
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"graph file {path} is missing.")
    module = importlib.import_module(f"hear_edge.runtimes.{module_name}")
    return module.open_session(path, input_names, output_names, num_threads)
