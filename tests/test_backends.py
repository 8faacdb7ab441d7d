"""The backend registry: a missing backend, and one that is installed but fails to import, say which."""

import importlib.abc
import importlib.util
import sys

import numpy as np
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


def test_litert_falls_back_to_tflite_runtime(monkeypatch):
    """Where ai_edge_litert is absent, the litert backend is tflite_runtime."""
    tflite = pytest.importorskip("tflite_runtime.interpreter")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert tflite is not None and base.runtime_package("litert") == "tflite_runtime"


# ---- the registry: each module of runtimes/ is one backend, and declares itself ----

def _literals(path) -> set[str]:
    """Every string constant in a Python file but its docstrings."""
    import ast

    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_the_registry_is_the_modules_of_runtimes_and_what_each_declares():
    import importlib
    from pathlib import Path

    folder = Path(base.__file__).parent
    assert {m.module.rsplit(".", 1)[1] for m in base.BACKEND_MODULES} == \
        {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")} - {"base"} == \
        {"onnx", "litert", "tflite_runtime"}  # private helpers (_tflite_cut) are no backends
    assert [m.name for m in base.BACKEND_MODULES] == ["onnx", "litert", "litert"]  # by PREFERENCE
    backend_words, format_words = set(), set()
    for entry in base.BACKEND_MODULES:
        module = importlib.import_module(entry.module)
        assert (entry.name, entry.format, entry.graph_suffix, entry.runtime_module, entry.install) == \
            (module.NAME, module.FORMAT, module.GRAPH_SUFFIX, module.RUNTIME_MODULE, module.INSTALL)
        assert base.BACKEND_FORMAT[module.NAME] == module.FORMAT and module.NAME in base.FORMAT_BACKENDS[module.FORMAT]
        assert base.GRAPH_SUFFIX[module.FORMAT] == module.GRAPH_SUFFIX
        assert entry in base.BACKENDS[module.NAME]
        backend_words |= {module.NAME, module.RUNTIME_MODULE, entry.package, module.INSTALL}
        format_words |= {module.FORMAT, module.GRAPH_SUFFIX}
    assert base.BACKENDS["litert"][0].package == "ai_edge_litert"  # tried before tflite_runtime
    # No table in base.py names a backend or a format: they all come from the modules. The modules
    # that use the map name no backend either (a format, such as "onnx", is part of the bundle's contract).
    assert not (backend_words | format_words) & _literals(folder / "base.py")
    for name in ("bundle/manifest", "run/classifier", "run/inference", "tools/bench", "cli"):
        path = REPO_ROOT / "hear_edge" / f"{name}.py"
        assert not (backend_words - format_words) & _literals(path), path


FAKE_BACKEND = '''
NAME = "fakevino"
FORMAT = "onnx"
GRAPH_SUFFIX = ".onnx"
RUNTIME_MODULE = "json"
INSTALL = "hear-edge[fakevino]"
PREFERENCE = 15
opened = []


class Session:
    name = "a fakevino session"


def open_session(path, input_names, output_names, num_threads):
    opened.append((path, num_threads))
    return Session()
'''


def test_a_new_backend_is_one_file_and_shares_a_format(tmp_path, monkeypatch):
    package = tmp_path / "more_runtimes"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fakevino.py").write_text(FAKE_BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = base.Registry(base.BACKEND_MODULES + base.discover("more_runtimes"))
    assert registry.format_backends["onnx"] == ("onnx", "fakevino")  # one format, two backends, in order
    assert registry.backend_format["fakevino"] == "onnx" and "fakevino" not in base.BACKEND_FORMAT
    monkeypatch.setattr(base, "_REGISTRY", registry)
    assert base.backend_problem("fakevino") is None and base.runtime_package("fakevino") == "json"
    assert list(registry.backends) == ["onnx", "fakevino", "litert"] and "fakevino" in base.available_backends()
    graph = TINY_ONNX_BUNDLE / "task.fp32.onnx"
    session = base.open_graph("fakevino", graph, ["a"], ["b"], num_threads=2)
    assert session.name == "a fakevino session" and session.runtime.startswith("json ")
    assert sys.modules["more_runtimes.fakevino"].opened == [(graph, 2)]


def test_a_module_that_declares_too_little_a_disagreement_or_no_module_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    for package, files, message in (
            ("half_runtimes", {"half.py": 'NAME = "half"\nPREFERENCE = "first"\n'},
             r"half_runtimes\.half is not a backend module: it must declare NAME, FORMAT, GRAPH_SUFFIX, "
             r"RUNTIME_MODULE, INSTALL, PREFERENCE .* missing or of the wrong type: FORMAT, "
             r"GRAPH_SUFFIX, RUNTIME_MODULE, INSTALL, PREFERENCE, open_session\."),
            ("odd_runtimes", {"a.py": FAKE_BACKEND, "b.py": FAKE_BACKEND.replace('"onnx"', '"tflite"')},
             r"odd_runtimes\.a and odd_runtimes\.b disagree: backend 'fakevino' runs onnx"),
            ("no_runtimes", {}, r"no backend module found in no_runtimes")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        for name, text in files.items():
            (tmp_path / package / name).write_text(text)
        with pytest.raises(HearEdgeError, match=message):
            base.Registry(base.discover(package))


@pytest.fixture
def litert_on_tflite_runtime(monkeypatch):
    """ai_edge_litert absent and a tflite_runtime.interpreter in its place (its Interpreter is ai-edge-litert's,
    recording what it opens): the litert backend then runs on runtimes/tflite_runtime.py."""
    import types

    interpreter = pytest.importorskip("ai_edge_litert.interpreter")

    class Recording(interpreter.Interpreter):
        opened = []

        def __init__(self, model_path, **kwargs):
            Recording.opened.append(model_path)
            super().__init__(model_path=model_path, **kwargs)

    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = Recording
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    return Recording


def test_the_litert_backend_falls_back_to_the_tflite_runtime_module(litert_on_tflite_runtime):
    """The default bundle's int8 graphs load on the tflite_runtime module (their self-test passes: the
    interpreter underneath is ai-edge-litert's) and the error messages name that runtime."""
    from hear_edge.run.classifier import default_bundle_path

    assert base.runtime_package("litert") == "tflite_runtime"
    bundle = default_bundle_path()  # its graphs are int8 only
    graph = bundle / "task.int8.tflite"
    session = base.open_graph("litert", graph, ["acoustic", "spectrum_pairs", "valid_frames"], ["logits", "pooled"])
    assert litert_on_tflite_runtime.opened == [str(graph)] and session.signatures
    assert session.runtime == "tflite_runtime (version unknown)"
    model = HearEdge.load(bundle, backend="litert")
    assert (model.backend, model.precision) == ("litert", "int8")
    assert model.classify(REPO_ROOT / "examples" / "clips" / "yes.wav").top.label == "yes"


def test_a_runtime_failure_is_an_inference_error_naming_the_backend_and_graph():
    import numpy as np

    from hear_edge.errors import InferenceError

    if not base.backend_installed("onnx"):
        pytest.skip("onnxruntime is not installed")
    graph = base.open_graph("onnx", TINY_ONNX_BUNDLE / "acoustic_window.fp32.onnx", ["log_mel"], ["acoustic"])
    wrong = np.zeros((1, 3, 40), np.float32)  # 3 mel bins where the graph takes the bundle's count
    with pytest.raises(InferenceError, match=r"the onnx backend failed running .*"
                                             r"acoustic_window\.fp32\.onnx: \w+"):
        graph.run({"log_mel": wrong})


def test_graph_tensor_names_are_typed_once_in_the_schema():
    from hear_edge.bundle import schema

    names = {schema.LOG_MEL, schema.ACOUSTIC, schema.SPECTRUM_PAIRS, schema.LOGITS, schema.POOLED, schema.VALID_FRAMES}
    assert len(names) == 6
    for path in ("export/graphs.py", "export/formats.py", "hear_edge/run/inference.py"):
        assert not names & _literals(REPO_ROOT / path), path


def test_onnx_sessions_share_one_arena_unless_told_not_to_and_answer_the_same(monkeypatch):
    pytest.importorskip("onnxruntime")
    from hear_edge.bundle.gates import synthetic_clip

    wave = synthetic_clip(2.0, seed=3)
    shared = HearEdge.load(backend="onnx", precision="int8", num_threads=1)
    monkeypatch.setenv("HEAR_EDGE_ORT_ARENA", "0")
    alone = HearEdge.load(backend="onnx", precision="int8", num_threads=1)
    assert shared.engine.window_graph._run_options is not None  # shrunk after each run
    assert alone.engine.window_graph._run_options is None
    np.testing.assert_array_equal(shared.classify(wave, 16000).logits, alone.classify(wave, 16000).logits)
