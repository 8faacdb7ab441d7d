"""The keyword-set builder (examples/kws/kws.py): deterministic per seed, split by voice and noise."""

import csv
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "examples" / "kws"))
import common  # noqa: E402
import mixing  # noqa: E402
import splits  # noqa: E402
import streams  # noqa: E402
import voices  # noqa: E402


def _speakers_by_split():
    found = {}
    for engine, voice in voices.speakers():
        speaker = f"{engine}:{voice}"
        found.setdefault(splits.split_of_speaker(speaker), []).append((engine, voice, speaker))
    return found


def _noise_names_by_split(count=3):
    found = {}
    for i in range(400):
        path = f"synthetic/noise_{i:03d}.flac"
        split = splits.split_of_noise(path)
        if len(found.setdefault(split, [])) < count:
            found[split].append(path)
    return found


@pytest.fixture(scope="module")
def mini_sources(tmp_path_factory):
    """A few 'utterances' per word and speaker (tone sweeps standing in for TTS) and noise files."""
    root = tmp_path_factory.mktemp("kws_sources")
    words, noise = root / "words", root / "noise"
    rng = np.random.default_rng(0)
    rows = []
    for split, speakers in _speakers_by_split().items():
        for engine, voice, speaker in speakers[:2]:
            for word in common.KEYWORDS + common.UNKNOWN_WORDS:
                path = f"{word}/{engine}-{voice}-00.flac"
                (words / word).mkdir(parents=True, exist_ok=True)
                t = np.arange(int(rng.uniform(0.3, 0.7) * 16000)) / 16000
                tone = 0.5 * np.sin(2 * np.pi * rng.uniform(150, 600) * t * (1 + t))
                soundfile.write(words / path, tone, 16000, subtype="PCM_16")
                rows.append({"path": path, "word": word, "engine": engine, "voice": voice, "speaker": speaker,
                             "split": split})
    with open(words / "utterances.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "word", "engine", "voice", "speaker", "split"])
        writer.writeheader()
        writer.writerows(rows)
    noise_rows = []
    for split, paths in _noise_names_by_split().items():
        for path in paths:
            (noise / path).parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(noise / path, 0.1 * rng.standard_normal(32000), 16000, subtype="PCM_16")
            noise_rows.append({"path": path, "source": "synthetic", "license": "CC0", "kind": "noise",
                               "split": split})
    with open(noise / "noises.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "source", "license", "kind", "split"])
        writer.writeheader()
        writer.writerows(noise_rows)
    return words, noise


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.wav")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_build_is_deterministic_per_seed(mini_sources, tmp_path):
    words, noise = mini_sources
    counts = {"train": 3, "val": 1, "test": 2}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        mixing.build(tmp_path / name, words, noise, counts, seed=seed, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    clips = sorted((tmp_path / "a").rglob("*.wav"))
    assert len(clips) == 6 * len(common.LABELS)
    audio, rate = soundfile.read(clips[0])
    assert rate == 16000 and audio.shape == (16000,)


def test_the_command_line_builds_what_build_builds(mini_sources, tmp_path):
    words, noise = mini_sources
    mixing.build(tmp_path / "lib", words, noise, {"train": 3, "val": 1, "test": 2}, seed=5, progress=False)
    subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "kws" / "kws.py"), "build", str(tmp_path / "cli"),
                    str(words), str(noise), "--train", "3", "--val", "1", "--test", "2", "--seed", "5", "--quiet"],
                   check=True, capture_output=True)
    assert _digest(tmp_path / "cli") == _digest(tmp_path / "lib")
    assert (tmp_path / "cli" / "metadata.csv").read_bytes() == (tmp_path / "lib" / "metadata.csv").read_bytes()


def test_the_builders_modules_import_one_another_without_a_circle():
    import ast

    folder = REPO_ROOT / "examples" / "kws"
    modules = {path.stem: path for path in folder.glob("*.py")}
    imports = {}
    for name, path in modules.items():  # function-level imports count too
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        imports[name] = found & set(modules) - {name}
    done = set()

    def visit(name, path):
        assert name not in path, f"import circle: {' -> '.join(path + [name])}"
        if name not in done:
            for other in sorted(imports[name]):
                visit(other, path + [name])
            done.add(name)

    for name in sorted(modules):
        visit(name, [])


def test_test_voices_and_noises_never_reach_training(mini_sources, tmp_path):
    words, noise = mini_sources
    mixing.build(tmp_path / "set", words, noise, {"train": 6, "val": 2, "test": 6}, seed=0, progress=False)
    with open(tmp_path / "set" / "metadata.csv") as handle:
        rows = list(csv.DictReader(handle))
    by_split = {}
    for row in rows:
        by_split.setdefault(row["split"], []).append(row)
    for split, members in by_split.items():
        for row in members:
            if row["speaker"]:
                assert splits.split_of_speaker(row["speaker"]) == split
            if row["noise"] and not row["noise"].startswith("colored:"):
                assert splits.split_of_noise(row["noise"]) == split
    train_speakers = {r["speaker"] for r in by_split["train"] if r["speaker"]}
    test_speakers = {r["speaker"] for r in by_split["test"] if r["speaker"]}
    assert train_speakers and test_speakers and not train_speakers & test_speakers


def test_whole_voice_families_are_held_out():
    families = {}
    for engine, voice in voices.speakers():
        speaker = f"{engine}:{voice}"
        families.setdefault(splits.speaker_family(speaker), set()).add(splits.split_of_speaker(speaker))
    assert all(len(splits) == 1 for splits in families.values())  # a family never straddles splits
    assert {"train", "val", "test"} <= set().union(*families.values())


def test_foreign_voices_say_every_word_and_only_in_training():
    assert set(voices.RESPELLING) == set(common.KEYWORDS + common.UNKNOWN_WORDS)
    assert all(text.isascii() and 1 <= len(text.split("|")) <= 2 for text in voices.RESPELLING.values())
    assert {splits.split_of_speaker(f"foreign:{voice}") for voice in voices.FOREIGN_VOICES} == {"train"}


def test_evaluation_reports_accuracy_per_voice_of_the_built_test_split(mini_sources, tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "examples"))
    import evaluate_kws

    words, noise = mini_sources
    mixing.build(tmp_path / "set", words, noise, {"train": 0, "val": 0, "test": 4}, seed=0, progress=False)
    with open(tmp_path / "set" / "metadata.csv") as handle:
        speaker_of = {row["path"]: row["speaker"] or "none" for row in csv.DictReader(handle)}
    _, targets, names = evaluate_kws.load_clips(tmp_path / "set" / "test", common.LABELS, per_class=3)
    voices = evaluate_kws.voice_of_clip(tmp_path / "set" / "test")
    assert {name: voices[name][1] for name in names} == {name: speaker_of["test/" + name] for name in names}
    correct = np.arange(len(names)) % 3 != 0  # any pattern: the tallies must follow it
    report = evaluate_kws.per_voice_accuracy(names, correct, voices)
    for speaker in set(voices[name][1] for name in names):
        hits = [ok for name, ok in zip(names, correct) if voices[name][1] == speaker]
        assert report[f"speaker {speaker}"] == {"accuracy": sum(hits) / len(hits), "clips": len(hits)}
    assert sum(v["clips"] for k, v in report.items() if k.startswith("engine ")) == len(names) == len(targets)
    assert evaluate_kws.voice_of_clip(tmp_path) == {}  # no metadata.csv beside it


def test_a_stream_is_deterministic_per_seed_and_lists_its_held_out_words(mini_sources, tmp_path):
    words, noise = mini_sources
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        streams.build_stream(tmp_path / f"{name}.flac", words, noise, split="test", minutes=0.5, seed=seed)
    assert (tmp_path / "a.flac").read_bytes() == (tmp_path / "b.flac").read_bytes()
    assert (tmp_path / "a.flac").read_bytes() != (tmp_path / "c.flac").read_bytes()
    info = json.loads((tmp_path / "a.json").read_text())
    audio, rate = soundfile.read(tmp_path / "a.flac")
    assert rate == 16000 and len(audio) == 30 * 16000 == info["seconds"] * 16000
    events = info["events"]
    assert events and info["keywords"] + info["unknown_words"] == len(events)
    assert all(splits.split_of_speaker(e["speaker"]) == "test" for e in events)
    assert all(e["label"] == (e["word"] if e["word"] in common.KEYWORDS else common.UNKNOWN) for e in events)
    assert all(a["end_s"] < b["start_s"] for a, b in zip(events, events[1:]))  # one word at a time
    assert all(np.abs(audio[int(e["start_s"] * rate):int(e["end_s"] * rate)]).max() > 0.01 for e in events)


def test_a_near_miss_stream_says_only_keywords_and_near_miss_words(mini_sources):
    words, noise = mini_sources
    _, events = streams.render_stream(words, noise, "train", minutes=1.0, seed=3, near_miss_only=True)
    other = {e["word"] for e in events if e["label"] == common.UNKNOWN}
    assert other and other <= set(common.UNKNOWN_WORDS_NEAR)
    _, events = streams.render_stream(words, noise, "train", minutes=1.0, seed=3)
    assert {e["word"] for e in events if e["label"] == common.UNKNOWN} - set(common.UNKNOWN_WORDS_NEAR)
    with pytest.raises(ValueError, match="picks words by name"):
        streams.render_stream(words, noise, "train", minutes=1.0, clips_dir=words, near_miss_only=True)


def test_a_stream_window_is_named_by_the_words_it_holds():
    events = [{"start_s": 1.0, "end_s": 1.5, "label": "yes"}, {"start_s": 2.2, "end_s": 2.8, "label": common.UNKNOWN},
              {"start_s": 3.0, "end_s": 3.4, "label": "no"}]
    assert streams.window_label(events, 0.7, 1.7) == "yes"               # the whole keyword
    assert streams.window_label(events, 1.45, 2.45) == common.UNKNOWN       # a keyword's last 10 %, part of a word
    assert streams.window_label(events, 0.2, 1.2) is None                # 40 % of a keyword: ambiguous
    assert streams.window_label(events, 2.1, 3.1) is None                # the start of "no": ambiguous
    assert streams.window_label(events, 2.0, 3.0) == common.UNKNOWN         # a whole other word
    assert streams.window_label(events, 3.45, 4.45) == common.SILENCE       # nothing
    assert streams.window_label(events + [{"start_s": 1.6, "end_s": 1.9, "label": "go"}], 0.9, 1.95) is None


def test_stream_windows_are_cut_from_the_splits_streams_and_labelled(mini_sources, tmp_path):
    words, noise = mini_sources
    written = streams.build_stream_windows(tmp_path / "w", words, noise, "val", 40, seed=0, minutes_per_stream=0.5)
    files = sorted((tmp_path / "w" / "val").rglob("*.wav"))
    assert sum(written.values()) == len(files) == 40
    assert {f.parent.name for f in files} <= set(common.LABELS) and len({f.parent.name for f in files}) >= 3
    assert all(soundfile.info(f).frames == 16000 for f in files)


def _espeak_phonemes(word: str, accent: str) -> str:
    return subprocess.run(["espeak-ng", "-q", "-x", "-v", accent, word], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (.ci/run installs it as root)")
def test_no_unknown_word_is_pronounced_like_a_keyword():
    # 'know' and 'write' were once near-misses: same phonemes as 'no' and 'right', labelled _unknown_.
    for accent in ("en-us", "en"):
        keywords = {_espeak_phonemes(word, accent): word for word in common.KEYWORDS}
        for word in common.UNKNOWN_WORDS:
            assert _espeak_phonemes(word, accent) not in keywords, (word, accent)


def test_a_missing_noise_folder_is_refused_not_built_without_noise(mini_sources, tmp_path):
    words, _ = mini_sources
    from hear_edge.errors import DataFolderError

    with pytest.raises(DataFolderError, match=r"holds no noises.csv: expected the folder `kws.py noise NOISE_DIR` "
                                              r"writes; run that first or name that folder"):
        mixing.build(tmp_path / "set", words, tmp_path / "no_noise", {"train": 1, "val": 0, "test": 0}, seed=0,
                     progress=False)
    assert not (tmp_path / "set").exists()
