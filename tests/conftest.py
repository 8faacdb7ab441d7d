import os
from pathlib import Path

import pytest

# torch's OpenMP threads spin at barriers by default: on the shared 2-core host the training tests ran
# 5x slower (test_finetune.py -k resume: 20.9 s against 3.8 s). Read when torch loads, which is later.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_GOLDEN = REPO_ROOT / "tests" / "data" / "golden" / "tiny"
SHARED_GOLDEN = Path(os.environ.get("HEAR_EDGE_SHARED", REPO_ROOT.parent / "shared")) / "golden"
TINY_CASES = ["short_1s", "exact_window_6s", "just_over_6s", "clip_10s", "odd_17s", "stereo_8s"]


# Fixtures that export a bundle or train a model (minutes on 2 cores): every test using one is
# `slow`, so `pytest -m "not slow"` runs the fast half. Tests that export or train by themselves
# carry @pytest.mark.slow.
_EXPORTING_OR_TRAINING_FIXTURES = {"tiny_bundle", "full_bundle", "tone_model"}


def pytest_collection_modifyitems(items):
    for item in items:
        if _EXPORTING_OR_TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_golden() -> Path:
    return TINY_GOLDEN


@pytest.fixture(scope="session")
def full_golden() -> Path:
    path = SHARED_GOLDEN / "full"
    if not (path / "state_dict.pt").is_file():
        pytest.skip(f"the full-size golden set lives in ../shared ({path}), absent here")
    return path

# Prepended to a child's script: any import of torch or tensorflow fails there.
BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow'):
            raise ImportError('blocked by test: ' + name)
sys.meta_path.insert(0, Block())
"""

REAL_AUDIO = REPO_ROOT / "tests" / "data" / "real"
TINY_LABELS = ["alpha", "beta", "gamma", "delta", "epsilon"]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """The tiny golden checkpoint exported to every format and precision, gated on the real clips."""
    pytest.importorskip("torch")
    from hear_edge.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny.hearedge"
    export_bundle(TINY_GOLDEN / "state_dict.pt", out, labels=TINY_LABELS, calibration=REAL_AUDIO)
    return out


@pytest.fixture(scope="session")
def full_bundle(tmp_path_factory, full_golden) -> Path:
    pytest.importorskip("torch")
    from hear_edge.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "full.hearedge"
    # force: random weights leave near-tied logits, which int8 noise may flip (the gate records it).
    export_bundle(full_golden / "state_dict.pt", out, config=full_golden / "config.json",
                  labels=[f"class_{i}" for i in range(50)], calibration=REAL_AUDIO, force=True)
    return out
