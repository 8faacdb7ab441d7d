import subprocess
import sys

from conftest import BLOCK_TORCH


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_package_and_frontend_import_no_torch():
    result = _run("import sys, hear_edge, hear_edge.frontend, hear_edge.windows, hear_edge.config, "
                  "hear_edge.gates, hear_edge.segments, hear_edge.bench\n"
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
