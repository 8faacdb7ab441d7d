"""The backend registry: a missing backend, and one that is installed but fails to import, say which."""

import importlib.abc
import importlib.util
import sys

import pytest

from conftest import REPO_ROOT
from hear_edge import HearEdge
from hear_edge.errors import BackendUnavailableError, HearEdgeError
from hear_edge.runtimes import base

TINY_ONNX_BUNDLE = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"


# What numpy 2 writes to stderr when a module built for numpy 1 asks for its C API (abridged),
# before onnxruntime < 1.19 re-raises a bare ImportError (seen with onnxruntime 1.17.3, numpy 2.4).
NUMPY2_NOTICE = ("\nA module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.4.6 as it may crash.\n"
                 "Traceback (most recent call last):\n  File ...\nAttributeError: _ARRAY_API not found\n")


class _FailsToImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `name` (it is installed) but fails when it is imported: prints `printed` to stderr,
    then raises `error`."""

    def __init__(self, name, error, printed=""):
        self.name, self.error, self.printed = name, error, printed

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == self.name else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        sys.stderr.write(self.printed)
        raise self.error


@pytest.fixture
def broken_onnxruntime(monkeypatch):
    pytest.importorskip("onnxruntime")
    for name in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_FailsToImport("onnxruntime", ImportError(), NUMPY2_NOTICE),
                                           *sys.meta_path])


def test_installed_but_failing_backend_reports_the_import_error_and_the_remedy(broken_onnxruntime, capsys):
    assert importlib.util.find_spec("onnxruntime") is not None  # installed, as far as Python can tell
    assert not base.backend_installed("onnx")
    for backend in ("auto", "onnx"):
        with pytest.raises(BackendUnavailableError) as caught:
            HearEdge.load(TINY_ONNX_BUNDLE, backend=backend, precision="fp32")
        message = str(caught.value)
        assert "the onnx backend cannot be used: onnxruntime is installed but fails to import (ImportError, " \
               "after numpy printed 'AttributeError: _ARRAY_API not found': it was compiled for NumPy 1.x)" in message
        assert "pip install --upgrade onnxruntime" in message and "numpy<2" in message
        assert "not installed" not in message
    assert "_ARRAY_API" not in capsys.readouterr().err  # said once, in the error, not dumped on stderr


def _onnx_problem_when_its_import_raises(monkeypatch, error: Exception) -> str:
    pytest.importorskip("onnxruntime")
    for name in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_FailsToImport("onnxruntime", error), *sys.meta_path])
    return base.backend_problem("onnx")


def test_an_import_error_that_names_numpy_gets_the_numpy_remedy(monkeypatch):
    problem = _onnx_problem_when_its_import_raises(monkeypatch, AttributeError("_ARRAY_API not found"))
    assert "fails to import (AttributeError: _ARRAY_API not found)" in problem and "numpy<2" in problem


def test_failing_import_without_numpy_in_it_gets_the_reinstall_remedy(monkeypatch):
    problem = _onnx_problem_when_its_import_raises(
        monkeypatch, ImportError("libonnxruntime.so.1: cannot open shared object file"))
    assert "ImportError: libonnxruntime.so.1: cannot open shared object file" in problem
    assert "pip install --force-reinstall onnxruntime" in problem


def test_a_backend_that_is_not_installed_says_so_with_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what find_spec and import see without it
    assert importlib.util.find_spec("onnxruntime") is None
    with pytest.raises(BackendUnavailableError, match=r"\(\['onnx'\]\) can run here: \[onnx\] the onnx backend "
                                                      r"needs the onnxruntime package, which is not installed\. "
                                                      r"Install it with: pip install 'hear-edge\[onnx\]'"):
        HearEdge.load(TINY_ONNX_BUNDLE)
    assert issubclass(BackendUnavailableError, HearEdgeError)


def test_litert_names_tflite_runtime_as_its_alternative(monkeypatch):
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    assert base.runtime_package("litert") is None
    assert "needs the ai_edge_litert package (or tflite_runtime), which is not installed" in \
        base.backend_problem("litert")


def test_litert_falls_back_to_tflite_runtime_and_then_refuses_int8(monkeypatch):
    """Where ai_edge_litert is absent, the litert backend is tflite_runtime, which gets no int8."""
    tflite = pytest.importorskip("tflite_runtime.interpreter")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert tflite is not None and base.runtime_package("litert") == "tflite_runtime"
    assert not base.supports_int8("litert") and base.supports_int8("onnx")


def test_int8_is_supported_where_the_runtime_is_not_in_the_record():
    if base.runtime_package("litert") not in (None, "tflite_runtime"):
        assert base.supports_int8("litert")
    assert set(base.INT8_UNSUPPORTED) == {"tflite_runtime"}
