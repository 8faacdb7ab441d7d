import subprocess
import sys

from conftest import BLOCK_TORCH, REPO_ROOT


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


# The torch boundary, by folder: these run without torch or tensorflow (what a Pi installs); the others
# (reference/, training/, export/) are torch's side. A new module in a torch-free folder is covered here
# without a list; a new folder of hear_edge/ must be put on one side.
TORCH_FREE_FOLDERS = ("hear_edge", "hear_edge/signal", "hear_edge/bundle", "hear_edge/run", "hear_edge/tools",
                      "runtimes")
TORCH_FOLDERS = ("hear_edge/reference", "hear_edge/training", "export")
INSTALLED_AS = {"runtimes": "hear_edge.runtimes", "export": "hear_edge.export"}


def _modules_in(folder: str) -> list[str]:
    package = INSTALLED_AS.get(folder, folder.replace("/", "."))
    return [package if path.stem == "__init__" else f"{package}.{path.stem}"
            for path in sorted((REPO_ROOT / folder).glob("*.py"))]


def test_every_folder_of_the_package_is_on_one_side_of_the_torch_boundary():
    folders = {str(p.parent.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "hear_edge").rglob("*.py")}
    folders |= {"runtimes", "export"}
    assert folders == set(TORCH_FREE_FOLDERS) | set(TORCH_FOLDERS)


def test_every_torch_free_module_imports_where_torch_cannot_be_imported():
    modules = [m for folder in TORCH_FREE_FOLDERS for m in _modules_in(folder)]
    assert len(modules) > 30 and "hear_edge.run.classifier" in modules and "hear_edge.runtimes.litert" in modules
    result = _run(BLOCK_TORCH + "import importlib, sys\n"
                  f"for name in {modules!r}:\n    importlib.import_module(name)\n"
                  "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_frontend_runs_where_torch_cannot_be_imported():
    result = _run(BLOCK_TORCH + "import numpy as np\nfrom hear_edge import compute_features\n"
                  "m, p = compute_features(np.zeros(16000, np.float32) + 0.1)\nprint(m.shape, p.shape)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(128, 101) (513, 101)"


def test_the_blocker_really_blocks_and_the_torch_side_needs_torch():
    for code in ("import torch", "import hear_edge.reference.model"):
        result = _run(BLOCK_TORCH + code)
        assert result.returncode != 0 and "blocked by test: torch" in result.stderr, code


def test_the_public_surface_exports_errors_stream_and_types():
    import importlib.resources

    import numpy as np

    import hear_edge

    assert all(hasattr(hear_edge, name) for name in hear_edge.__all__)
    errors = [getattr(hear_edge, n) for n in hear_edge.__all__ if n.endswith("Error")]
    assert len(errors) == 16 and all(issubclass(e, hear_edge.HearEdgeError) for e in errors)
    assert (importlib.resources.files("hear_edge") / "py.typed").is_file()
    model = hear_edge.HearEdge.load(REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge", precision="fp32")
    stream = model.create_stream(hop_seconds=0.5, context_seconds=0.5)
    assert isinstance(stream, hear_edge.ClassificationStream)
    audio = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    streamed = stream.accept_waveform(audio, 16000)[0]
    offline = model.classify(audio, 16000)
    assert [c.label for c in streamed.categories] == [c.label for c in offline.categories]
    np.testing.assert_allclose(streamed.scores, offline.scores, atol=1e-5)


def test_the_package_imports_the_backend_registry_but_no_runtime():
    result = _run("import sys, hear_edge, hear_edge.cli, hear_edge.tools.bench\n"
                  "print('hear_edge.runtimes.base' in sys.modules, sorted(m for m in sys.modules if m.split('.')[0] in "
                  "('onnxruntime', 'ai_edge_litert', 'tflite_runtime')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True []"  # the runtimes load when a backend is probed or opens a graph


def test_the_architecture_drawing_shows_every_folder_on_its_side():
    text = (REPO_ROOT / "ARCHITECTURE.md").read_text()
    drawing = text[text.index("```", text.index("## The tree")) + 3:]
    drawing = drawing[:drawing.index("```")]
    rows = {line.split()[0]: line.split()[1] for line in drawing.strip().splitlines()[1:]}
    for folder in TORCH_FREE_FOLDERS[1:] + TORCH_FOLDERS:
        side = "numpy" if folder in TORCH_FREE_FOLDERS else "torch"
        assert rows.get(folder.rpartition("/")[2] + "/") == side, folder
