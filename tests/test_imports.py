import subprocess
import sys

from conftest import BLOCK_TORCH


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_package_and_frontend_import_no_torch():
    result = _run("import sys, hear_edge, hear_edge.frontend, hear_edge.windows, hear_edge.config, "
                  "hear_edge.gates, hear_edge.segments, hear_edge.bench, hear_edge.macs\n"
                  "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_frontend_runs_where_torch_cannot_be_imported():
    result = _run(BLOCK_TORCH + "import numpy as np\nfrom hear_edge import compute_features\n"
                  "m, p = compute_features(np.zeros(16000, np.float32) + 0.1)\nprint(m.shape, p.shape)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(128, 101) (513, 101)"


def test_the_blocker_really_blocks():
    result = _run(BLOCK_TORCH + "import torch")
    assert result.returncode != 0 and "blocked by test" in result.stderr


def test_the_public_surface_exports_errors_stream_and_types():
    import importlib.resources

    import numpy as np

    import hear_edge
    from conftest import REPO_ROOT

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
    result = _run("import sys, hear_edge, hear_edge.cli, hear_edge.bench\n"
                  "print('hear_edge.runtimes.base' in sys.modules, sorted(m for m in sys.modules if m.split('.')[0] in "
                  "('onnxruntime', 'ai_edge_litert', 'tflite_runtime')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True []"  # the runtimes load when a backend is probed or opens a graph
