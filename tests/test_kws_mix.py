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


def _tone(path, hz, samples=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(samples) / 16000
    x = 0.5 * np.sin(2 * np.pi * hz * t) * np.hanning(samples)  # loudest at the centre
    soundfile.write(str(path), x, 16000, subtype="PCM_16")


def _peak_hz(x):
    return np.argmax(np.abs(np.fft.rfft(x))) * 16000 / len(x)


def test_speed_copies_are_written_for_train_only_at_one_second(sources, tmp_path):
    build, queen = sources
    _tone(build / "train" / "yes" / "tone.wav", 1000)
    summary = mix_sets.mix(tmp_path / "mix", {"synth": build}, queen, 3, {"train": 4, "val": 2}, seed=0,
                           speed_factors=(0.9, 1.1))
    train = tmp_path / "mix" / "train"
    # one copy per factor of each distinct clip: the Queen cut linked 3 times is copied once
    assert summary["counts"]["train"]["queen@0.9"] == summary["counts"]["train"]["queen@1.1"] == {
        "no": 1, "_unknown_": 4}
    assert summary["counts"]["train"]["synth@1.1"] == {"yes": 3, "_silence_": 2}
    assert "synth@0.9" not in summary["counts"]["val"] and not list((tmp_path / "mix" / "val").rglob("*@*"))
    assert summary["totals"]["train"] == 12 + 2 * 10 and summary["speed_copies"] == [0.9, 1.1]
    for factor in (0.9, 1.1):
        copy = train / "yes" / f"synth@{factor:g}__tone.wav"
        assert not copy.is_symlink()
        x, sr = soundfile.read(str(copy))
        assert sr == 16000 and len(x) == 16000  # 1 s kept
        assert _peak_hz(x) == pytest.approx(1000 * factor, abs=2)  # pitch follows the speed
        assert np.argmax(np.abs(x) > 0.25) < 8000 < len(x) - np.argmax(np.abs(x[::-1]) > 0.25)  # still centred
    slow, _ = soundfile.read(str(train / "yes" / "synth@0.9__tone.wav"))
    fast, _ = soundfile.read(str(train / "yes" / "synth@1.1__tone.wav"))
    assert np.all(fast[:700] == 0) and np.all(fast[-700:] == 0)  # 0.91 s of sound, padded on both sides
    assert np.abs(slow[:700]).max() > 0  # 1.11 s of sound, cropped about its centre


def test_speed_copies_are_deterministic(sources, tmp_path):
    build, queen = sources
    _tone(build / "train" / "yes" / "tone.wav", 700)
    for name in ("a", "b"):
        mix_sets.mix(tmp_path / name, {"synth": build}, queen, 1, {"train": 4}, seed=0, speed_factors=(0.9,))
    copies = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*@0.9__*.wav"))
    assert len(copies) == 3 + 2 + 1 + 4  # synth yes and _silence_, queen no and _unknown_
    for rel in copies:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_a_speed_copy_factor_must_change_the_speed(sources, tmp_path):
    build, queen = sources
    with pytest.raises(SystemExit, match=r"--speed-copies takes playback factors in \[0.5, 2\] other than 1"):
        mix_sets.mix(tmp_path / "mix", {"synth": build}, queen, 1, {}, seed=0, speed_factors=(1.0,))


def test_the_command_line_writes_the_speed_copies(sources, tmp_path, capsys):
    build, queen = sources
    assert mix_sets.main([str(tmp_path / "mix"), "--source", f"synth={build}", "--queen", str(queen),
                          "--queen-unknown", "train=2", "--speed-copies", "0.9,1.1"]) == 0
    recorded = json.loads((tmp_path / "mix" / "mix.json").read_text())
    assert recorded["speed_copies"] == [0.9, 1.1]
    assert recorded["counts"]["train"]["synth@0.9"] == recorded["counts"]["train"]["synth"] == {"yes": 2, "_silence_": 2}
    assert json.loads(capsys.readouterr().out) == recorded["totals"] == {"train": 21, "val": 5}
