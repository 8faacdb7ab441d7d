"""Batch classification: folders in, a resumable .jsonl/.csv out, a pool of worker processes."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from hear_edge import HearEdge
from hear_edge.errors import InvalidArgumentError
from hear_edge.tools.batch import expand_inputs, open_run, run_batch

BUNDLE = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"
CLIPS = REPO_ROOT / "examples" / "clips"
WORDS = ["go", "left", "stop", "yes"]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "more").mkdir(parents=True)
    for word in WORDS[:2]:
        shutil.copy(CLIPS / f"{word}.wav", folder / f"{word}.wav")
    for word in WORDS[2:]:
        shutil.copy(CLIPS / f"{word}.wav", folder / "more" / f"{word}.wav")
    (folder / "notes.txt").write_text("not audio, and not picked up")
    return folder


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hear_edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_is_expanded_to_its_audio_files(corpus):
    assert [p.split("corpus/")[1] for p in expand_inputs([corpus])] == ["go.wav", "left.wav", "more/stop.wav",
                                                                         "more/yes.wav"]


def test_jobs_write_one_record_per_file_equal_to_classify(corpus, tmp_path):
    out = tmp_path / "results.jsonl"
    result = _cli("classify", corpus, "--bundle", BUNDLE, "--jobs", "2", "--output", out, "--top-k", "2")
    assert result.returncode == 0, result.stderr
    assert f"{out}: 4 classified, 0 already there" in result.stderr
    records = {r["file"]: r for r in _jsonl(out)}
    assert sorted(records) == expand_inputs([corpus])
    model = HearEdge.load(BUNDLE)
    for path, record in records.items():
        expected = model.classify(path, max_results=2)
        assert [c["label"] for c in record["categories"]] == [c.label for c in expected.categories]
        np.testing.assert_allclose([record["scores"][x] for x in model.labels], expected.scores, atol=1e-6)


def test_a_rerun_skips_the_files_already_done_and_redoes_a_cut_off_line(corpus, tmp_path):
    out = tmp_path / "results.jsonl"
    files = expand_inputs([corpus])
    assert run_batch(files[:2], out, bundle=BUNDLE) == (2, 0, [])
    first = out.read_text()
    out.write_text(first + first.splitlines()[0][:30])  # a run killed mid-write
    assert run_batch(files, out, bundle=BUNDLE, jobs=2) == (2, 2, [])
    records = _jsonl(out)
    assert sorted(r["file"] for r in records) == files  # each once: no duplicate, no partial line
    assert out.read_text().startswith(first)


def test_batch_and_cluster_runs_open_alike_done_and_repeated_files_skipped(corpus, tmp_path):
    out = tmp_path / "results.jsonl"
    files = expand_inputs([corpus])
    run_batch(files[:1], out, bundle=BUNDLE)
    model, results, todo, skipped = open_run(files + files[1:2], out, BUNDLE, "onnx", "fp32", 1)
    results.close()
    assert (model.backend, model.precision) == ("onnx", "fp32")
    assert todo == files[1:] and skipped == 2  # one done, one repeated


def test_csv_output_has_a_column_per_label_and_resumes(corpus, tmp_path):
    out = tmp_path / "results.csv"
    files = expand_inputs([corpus])
    run_batch(files[:1], out, bundle=BUNDLE)
    assert run_batch(files, out, bundle=BUNDLE) == (3, 1, [])
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == files
    labels = HearEdge.load(BUNDLE).labels
    for row in rows:
        scores = [float(row[f"score_{x}"]) for x in labels]
        assert row["top_label"] == labels[int(np.argmax(scores))]
        assert sum(scores) == pytest.approx(1.0, abs=1e-4)


def test_a_bad_file_is_reported_not_written_and_retried_by_a_rerun(corpus, tmp_path):
    bad = corpus / "broken.wav"
    bad.write_bytes(b"RIFF not really")
    out = tmp_path / "results.jsonl"
    result = _cli("classify", corpus, "--bundle", BUNDLE, "--output", out)
    assert result.returncode == 1
    assert f"hear-edge: error: {bad}: " in result.stderr and "1 of 5 files failed" in result.stderr
    assert str(bad) not in [r["file"] for r in _jsonl(out)] and len(_jsonl(out)) == 4
    bad.unlink()
    shutil.copy(CLIPS / "yes.wav", bad)  # fixed: the rerun does it, and only it
    rerun = _cli("classify", corpus, "--bundle", BUNDLE, "--output", out)
    assert rerun.returncode == 0 and f"{out}: 1 classified, 4 already there" in rerun.stderr


def test_output_and_jobs_are_checked(corpus, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"--output must end in \.jsonl or \.csv, got 'out\.txt'"):
        run_batch(expand_inputs([corpus]), tmp_path / "out.txt", bundle=BUNDLE)
    with pytest.raises(InvalidArgumentError, match=r"jobs must be a positive int, got 0"):
        run_batch(expand_inputs([corpus]), tmp_path / "out.jsonl", bundle=BUNDLE, jobs=0)
    result = _cli("classify", corpus, "--bundle", BUNDLE, "--jobs", "2")
    assert result.returncode == 2 and "--jobs needs --output" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli("classify", empty, "--bundle", BUNDLE)
    assert result.returncode == 2 and "holds no audio files" in result.stderr
