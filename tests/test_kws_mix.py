"""The 0.4 training mix (examples/kws/mix_sets.py): sources linked per split and label, the Queen
keyword cuts repeated in train only, a seeded draw of real `_unknown_` windows, no test clip linked,
the same links for the same seed."""

import json
import sys

import numpy as np
import pytest
import soundfile

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "examples" / "kws"))
import mix_sets  # noqa: E402


def _clip(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.full(1600, value, dtype=np.float32), 16000, subtype="PCM_16")


@pytest.fixture()
def sources(tmp_path):
    build, queen = tmp_path / "build", tmp_path / "queen"
    for split in ("train", "val", "test"):
        for label in ("yes", "_silence_"):
            for i in range(2):
                _clip(build / split / label / f"{i}.wav", 0.1)
        _clip(queen / "cuts" / split / "no" / "n0.wav", 0.2)
        for i in range(10):
            _clip(queen / "cuts" / split / "_unknown_" / f"u{i}.wav", 0.01 * i)
    return build, queen


def _links(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))


def test_mix_counts_splits_and_copies(sources, tmp_path):
    build, queen = sources
    summary = mix_sets.mix(tmp_path / "mix", {"synth": build}, queen, 3, {"train": 4, "val": 2}, seed=0)
    links = _links(tmp_path / "mix")
    assert not any(name.startswith("test/") for name in links)
    assert summary["counts"]["train"]["queen"] == {"no": 3, "_unknown_": 4}
    assert summary["counts"]["val"]["queen"] == {"no": 1, "_unknown_": 2}
    assert summary["counts"]["train"]["synth"] == {"yes": 2, "_silence_": 2}
    assert summary["totals"] == {"train": 11, "val": 7}
    target = (tmp_path / "mix" / "train" / "no" / "queen2__n0.wav").resolve()
    assert target == (queen / "cuts" / "train" / "no" / "n0.wav").resolve()
    assert json.loads((tmp_path / "mix" / "mix.json").read_text())["totals"] == summary["totals"]


def test_mix_is_seeded(sources, tmp_path):
    build, queen = sources
    draws = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        mix_sets.mix(tmp_path / name, {"synth": build}, queen, 1, {"train": 4}, seed=seed)
        draws[name] = _links(tmp_path / name)
    assert draws["a"] == draws["b"]
    assert draws["a"] != draws["c"]


def test_mix_refuses_a_used_folder(sources, tmp_path):
    build, queen = sources
    mix_sets.mix(tmp_path / "mix", {"synth": build}, queen, 1, {}, seed=0)
    with pytest.raises(SystemExit, match="is not empty"):
        mix_sets.mix(tmp_path / "mix", {"synth": build}, queen, 1, {}, seed=0)
