import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_GOLDEN = REPO_ROOT / "tests" / "data" / "golden" / "tiny"
SHARED_GOLDEN = Path(os.environ.get("HEAR_EDGE_SHARED", REPO_ROOT.parent / "shared")) / "golden"
TINY_CASES = ["short_1s", "exact_window_6s", "just_over_6s", "clip_10s", "odd_17s", "stereo_8s"]


@pytest.fixture(scope="session")
def tiny_golden() -> Path:
    return TINY_GOLDEN


@pytest.fixture(scope="session")
def full_golden() -> Path:
    path = SHARED_GOLDEN / "full"
    if not (path / "state_dict.pt").is_file():
        pytest.skip(f"the full-size golden set lives in ../shared ({path}), absent here")
    return path
