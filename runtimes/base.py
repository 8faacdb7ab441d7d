"""The backend registry: every module of `runtimes/` is a backend, and declares itself at its top.

A backend module declares (plain constants, read here without importing its runtime):

- ``NAME``: what ``HearEdge.load(backend=...)`` takes. Several modules may declare one name: they
  are that backend's runtimes, tried in ``PREFERENCE`` order (litert: ai-edge-litert, then
  tflite-runtime).
- ``FORMAT``: the bundle graph format it runs ("onnx", "tflite"); ``GRAPH_SUFFIX``: that format's
  file ending. A format may have several backends.
- ``RUNTIME_MODULE``: the module it imports, only when it is probed or opens a graph.
- ``INSTALL``: what ``pip install`` brings it in (its extra).
- ``PREFERENCE``: lower is tried first, by ``backend="auto"`` and among the modules of one name.

and ``open_session(path, input_names, output_names, num_threads) -> GraphSession`` (whose ``_run`` a
backend implements; ``GraphSession.run`` wraps its errors in an ``InferenceError``). Adding a
backend is adding such a file (and its pip extra); the tables below are derived from them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import logging
import pkgutil
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hear_edge.errors import BackendUnavailableError, BundleError, HearEdgeError, InferenceError, InvalidArgumentError

logger = logging.getLogger("hear_edge")


class GraphSession(ABC):
    """One loaded graph. `run` is safe to call from several threads at once."""

    def __init__(self, path: Path, input_names: list[str], output_names: list[str], num_threads: int):
        self.path = Path(path)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.num_threads = num_threads
        self.runtime = ""  # the runtime package and its version, set by open_graph

    def run(self, inputs: dict[str, np.ndarray], signature: str | None = None,
            transient: bool = False) -> dict[str, np.ndarray]:
        """Run on inputs named as in `input_names`; `signature` picks an entry point where there are several.

        `transient`: a long clip's entry point, which the session need not keep ready (LiteRT frees its
        buffers once another transient one runs); a backend without per-entry-point memory ignores it.

        Raises:
            InferenceError: the runtime failed (its own exception, named, is the cause).
        """
        try:
            return self._run(inputs, signature, transient)
        except (HearEdgeError, MemoryError):
            raise
        except Exception as error:  # each runtime raises its own untyped exceptions
            backend = getattr(sys.modules.get(type(self).__module__), "NAME", type(self).__name__)  # its module's
            raise InferenceError(f"the {backend} backend failed running {self.path}"
                                 f"{f' (signature {signature})' if signature else ''}: {type(error).__name__}: "
                                 f"{error}") from error

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray], signature: str | None, transient: bool) -> dict[str, np.ndarray]:
        """`run` without the wrapping: what a backend module implements."""

    @abstractmethod
    def output_shape(self, name: str) -> list:
        """The shape the graph itself declares for output `name` (ints; a free dimension is a str or None)."""


# What a backend module declares, and the type of each.
_DECLARED = {"NAME": str, "FORMAT": str, "GRAPH_SUFFIX": str, "RUNTIME_MODULE": str, "INSTALL": str,
             "PREFERENCE": int}
_MISSING = object()


@dataclass(frozen=True)
class BackendModule:
    """What one backend module declares (see the module docstring)."""

    module: str               # its import name, e.g. hear_edge.runtimes.litert
    name: str
    format: str
    graph_suffix: str
    runtime_module: str
    install: str
    preference: int

    @property
    def package(self) -> str:
        """The runtime's top-level package ("onnxruntime", "ai_edge_litert", "tflite_runtime")."""
        return self.runtime_module.split(".")[0]

    @property
    def distribution(self) -> str:
        """The runtime package's name on PyPI ("ai-edge-litert")."""
        return self.package.replace("_", "-")


def discover(package: str) -> tuple[BackendModule, ...]:
    """The backend modules of `package`: each module in it but `base` and `_private` ones.

    Raises:
        HearEdgeError: a module that does not declare all a backend declares; no module at all.
    """
    found = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        wrong = [key for key, kind in _DECLARED.items() if not isinstance(getattr(module, key, _MISSING), kind)]
        if not callable(getattr(module, "open_session", None)):
            wrong.append("open_session")
        if wrong:
            raise HearEdgeError(f"{module.__name__} is not a backend module: it must declare {', '.join(_DECLARED)} "
                                f"(see {__name__}) and define open_session(path, input_names, output_names, "
                                f"num_threads); missing or of the wrong type: {', '.join(wrong)}.")
        found.append(BackendModule(module.__name__, *(getattr(module, key) for key in _DECLARED)))
    if not found:  # a frozen app that did not collect them, or an install that lost its files
        raise HearEdgeError(f"no backend module found in {package}; reinstall hear-edge, or have a frozen app "
                            f"include the modules of {package}.")
    return tuple(found)


class Registry:
    """The tables derived from backend modules, each keyed as its name says; all in preference order.

    Raises:
        HearEdgeError: two modules that disagree on a backend's format or a format's file ending.
    """

    def __init__(self, modules: tuple[BackendModule, ...]):
        self.modules = tuple(sorted(modules, key=lambda m: (m.preference, m.module)))
        backends: dict[str, list[BackendModule]] = {}
        formats: dict[str, list[str]] = {}
        for module in self.modules:
            for other in self.modules:
                if (module.name == other.name and module.format != other.format) or \
                        (module.format == other.format and module.graph_suffix != other.graph_suffix):
                    raise HearEdgeError(f"{module.module} and {other.module} disagree: backend {module.name!r} runs "
                                        f"{module.format} ({module.graph_suffix} files), {other.name!r} runs "
                                        f"{other.format} ({other.graph_suffix} files).")
            backends.setdefault(module.name, []).append(module)
            names = formats.setdefault(module.format, [])
            if module.name not in names:
                names.append(module.name)
        self.backends = {name: tuple(found) for name, found in backends.items()}  # name -> its modules
        self.backend_format = {name: found[0].format for name, found in self.backends.items()}
        self.format_backends = {fmt: tuple(names) for fmt, names in formats.items()}
        self.graph_suffix = {module.format: module.graph_suffix for module in self.modules}


# Read last, once every name a backend module imports from here is defined.
_REGISTRY = Registry(discover(__package__))
BACKEND_MODULES = _REGISTRY.modules           # every backend module, preferred first
BACKENDS = _REGISTRY.backends                 # backend name -> its modules, preferred first
BACKEND_FORMAT = _REGISTRY.backend_format      # backend name -> the graph format it runs
FORMAT_BACKENDS = _REGISTRY.format_backends    # graph format -> the backends that run it
GRAPH_SUFFIX = _REGISTRY.graph_suffix          # graph format -> its file ending
_warned: set[tuple[str, str]] = set()


def _probe(name: str) -> tuple[BackendModule | None, list[tuple[str, str]]]:
    """(the first of the backend's modules whose runtime imports, or None; why each installed one failed)."""
    failures = []  # (package, why)
    for backend in _REGISTRY.backends[name]:
        module = backend.runtime_module
        if sys.modules.get(module) is not None:  # imported already
            return backend, failures
        try:
            installed = importlib.util.find_spec(backend.package) is not None
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
            failures.append((backend.package, why))
            continue
        sys.stderr.write(printed.getvalue())
        return backend, failures
    return None, failures


def runtime_package(name: str) -> str | None:
    """The package the backend runs on here ("onnxruntime", "ai_edge_litert", "tflite_runtime"), or None."""
    backend, _ = _probe(name)
    return backend.package if backend else None


def backend_installed(name: str) -> bool:
    """Whether the backend's runtime package imports here."""
    return runtime_package(name) is not None


def backend_problem(name: str) -> str | None:
    """Why the backend cannot run here, with the remedy, or None when it can.

    Tells a package that is not installed from one that is installed but fails to import (an
    onnxruntime built for numpy 1 under numpy 2 fails with "_ARRAY_API not found").
    """
    backend, failures = _probe(name)
    if backend is not None:
        return None
    preferred, *alternatives = _REGISTRY.backends[name]
    if not failures:
        also = f" (or {', '.join(m.package for m in alternatives)})" if alternatives else ""
        return (f"the {name} backend needs the {preferred.package} package{also}, which is not installed. "
                f"Install it with: pip install '{preferred.install}'")
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


def available_backends() -> list[str]:
    """Backends whose runtime package imports here, in order of preference."""
    return [name for name in _REGISTRY.backends if backend_installed(name)]


def format_backend(fmt: str) -> str:
    """The backend that runs `fmt` graphs here: the first of FORMAT_BACKENDS[fmt] that imports, else the
    first (whose `open_graph` then says what to install)."""
    names = _REGISTRY.format_backends.get(fmt)
    if not names:
        raise InvalidArgumentError(f"no backend runs {fmt!r} graphs; backends run {sorted(_REGISTRY.format_backends)}.")
    return next((name for name in names if backend_installed(name)), names[0])


def open_graph(backend: str, path: str | Path, input_names, output_names, num_threads: int = 1) -> GraphSession:
    """Open one graph file on `backend`, on the first of its runtimes that imports here.

    Raises:
        InvalidArgumentError: an unknown backend, a num_threads that is not a positive int.
        BackendUnavailableError: no runtime of the backend imports here (what to install, or why it fails).
        BundleError: the file is missing or the runtime cannot load it.
    """
    if backend not in _REGISTRY.backends:
        raise InvalidArgumentError(f"unknown backend {backend!r}; expected one of {sorted(_REGISTRY.backends)}.")
    chosen, failures = _probe(backend)
    if chosen is None:
        raise BackendUnavailableError(backend_problem(backend))
    if not isinstance(num_threads, int) or num_threads < 1:
        raise InvalidArgumentError(f"num_threads must be a positive int, got {num_threads!r}.")
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"graph file {path} is missing.")
    for package, why in failures:
        if (chosen.package, package) not in _warned:
            _warned.add((chosen.package, package))
            logger.warning("the %s backend runs on %s: %s is installed but fails to import (%s)", backend,
                           chosen.package, package, why)
    module = importlib.import_module(chosen.module)
    session = module.open_session(path, input_names, output_names, num_threads)
    session.runtime = runtime_version(chosen)
    return session


def runtime_version(backend: BackendModule) -> str:
    """The runtime package and its version, as error messages name it: "tflite_runtime 2.14.0"."""
    try:
        version = importlib.metadata.version(backend.distribution)
    except importlib.metadata.PackageNotFoundError:  # a vendored or frozen copy
        version = getattr(sys.modules.get(backend.package), "__version__", "(version unknown)")
    return f"{backend.package} {version}"
