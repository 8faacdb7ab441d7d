"""Hostile and careless input: bundles that reach outside themselves or were changed, bad manifests,
broken files, ambiguous arrays and options. Each must raise a typed error with a remedy (issue 14).

Torch-free: runs on the shipped tiny bundle (tests/data/tiny-golden.hearedge, onnx).
"""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from conftest import REPO_ROOT, TINY_GOLDEN
from hear_edge import HearEdge, hear_api
from hear_edge.bundle.manifest import CHECKSUM_NAME, Manifest, bundle_file, read_manifest
from hear_edge.errors import (AudioTooShortError, BundleError, HearEdgeError, InvalidArgumentError, InvalidAudioError,
                              LabelError)

TINY = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"
TINY_SCHEMA_1 = REPO_ROOT / "tests" / "data" / "tiny-golden-schema1.hearedge"


@pytest.fixture(scope="module")
def model():
    return HearEdge.load(TINY, backend="onnx", precision="fp32")


@pytest.fixture
def bundle(tmp_path):
    copy = tmp_path / "b.hearedge"
    shutil.copytree(TINY, copy)
    return copy


def _manifest(bundle_dir):
    return json.loads((bundle_dir / "manifest.json").read_text())


def _rewrite(bundle_dir, data, checksum=True):
    """Write a changed manifest; with `checksum`, as a careless re-export would (checksum recomputed)."""
    raw = (json.dumps(data, indent=2) + "\n").encode()
    (bundle_dir / "manifest.json").write_bytes(raw)
    if checksum:
        (bundle_dir / CHECKSUM_NAME).write_text(hashlib.sha256(raw).hexdigest() + "\n")


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "hear_edge.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT)


def _assert_one_line_error(result, match):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hear-edge: error:"), result.stderr
    assert match in lines[0], lines[0]


def _clip(seconds=1.0, rate=16000, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


# ---- 1. a bundle cannot reach outside itself ----

def test_a_graph_symlinked_outside_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle / "task.fp32.onnx", outside)
    (bundle / "task.fp32.onnx").unlink()
    (bundle / "task.fp32.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match=r"task graph 'task\.fp32\.onnx' resolves to .*elsewhere\.onnx, outside "
                                          r"the bundle folder"):
        HearEdge.load(bundle, backend="onnx", precision="fp32")


def test_a_manifest_symlinked_outside_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "manifest.json"
    shutil.move(bundle / "manifest.json", outside)
    (bundle / "manifest.json").symlink_to(outside)
    with pytest.raises(BundleError, match=r"its manifest 'manifest\.json' resolves to .*, outside the bundle folder"):
        read_manifest(bundle)


@pytest.mark.parametrize("name", ["../task.fp32.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_a_graph_file_that_is_not_a_plain_name_is_refused(bundle, name):
    data = _manifest(bundle)
    data["graphs"][1]["file"] = name
    _rewrite(bundle, data)
    with pytest.raises(BundleError, match=r"graphs\[1\]\.file must be a plain file name inside the bundle folder"):
        HearEdge.load(bundle)


def test_containment_holds_even_without_the_manifest_validator(bundle):
    with pytest.raises(BundleError, match=r"'\.\./b\.hearedge/\.\./x\.onnx' resolves to .*, outside the bundle"):
        bundle_file(bundle, "../b.hearedge/../x.onnx", "graph")
    with pytest.raises(BundleError, match=r"'/etc/hostname' resolves to /etc/hostname, outside the bundle"):
        bundle_file(bundle, "/etc/hostname", "graph")


def test_a_graph_that_is_a_fifo_is_refused_without_hanging(bundle):
    (bundle / "task.fp32.onnx").unlink()
    os.mkfifo(bundle / "task.fp32.onnx")
    with pytest.raises(BundleError, match=r"task graph task\.fp32\.onnx is not a regular file"):
        read_manifest(bundle)


# ---- 2. a changed manifest byte is refused; the label count is a checked fact ----

def test_labels_rotated_by_one_fail_the_manifest_checksum(bundle):
    data = _manifest(bundle)
    data["labels"] = data["labels"][1:] + data["labels"][:1]
    _rewrite(bundle, data, checksum=False)
    with pytest.raises(BundleError, match=r"manifest\.json fails its checksum.*changed or damaged\. Re-copy"):
        HearEdge.load(bundle)


def test_a_changed_frontend_number_fails_the_manifest_checksum(bundle):
    data = _manifest(bundle)
    data["frontend"]["norm_eps"] = 0.1
    _rewrite(bundle, data, checksum=False)
    with pytest.raises(BundleError, match=r"fails its checksum"):
        read_manifest(bundle)


def test_a_schema_2_manifest_without_its_checksum_is_refused(bundle):
    data = _manifest(bundle)
    data["schema_version"] = 2
    _rewrite(bundle, data, checksum=False)
    (bundle / CHECKSUM_NAME).unlink()
    with pytest.raises(BundleError, match=r"has no manifest\.json\.sha256, which schema 2 manifests must have"):
        read_manifest(bundle)


def test_a_schema_1_manifest_without_a_checksum_loads_with_a_warning(tmp_path, caplog):
    bundle = tmp_path / "old.hearedge"
    shutil.copytree(TINY_SCHEMA_1, bundle)
    (bundle / CHECKSUM_NAME).unlink()
    with caplog.at_level(logging.WARNING, logger="hear_edge"):
        assert read_manifest(bundle).labels[0] == "alpha"
    assert "not covered by a checksum" in caplog.text


def test_manifest_write_adds_the_checksum_that_load_verifies(bundle):
    manifest = read_manifest(bundle)
    (bundle / CHECKSUM_NAME).unlink()
    manifest.write(bundle)
    assert (bundle / CHECKSUM_NAME).read_text().strip() == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    assert read_manifest(bundle) == manifest
    HearEdge.load(bundle, backend="onnx", precision="fp32")


def test_a_label_count_that_is_not_the_heads_output_size_is_refused_at_load(bundle):
    data = _manifest(bundle)
    data["labels"].append("zeta")
    _rewrite(bundle, data)
    with pytest.raises(LabelError, match=r"the head has 5 classes but the manifest lists 6 labels.*Re-export"):
        HearEdge.load(bundle, backend="onnx", precision="fp32")


def test_cli_label_count_mismatch_is_one_line(bundle, tmp_path):
    data = _manifest(bundle)
    data["labels"] = data["labels"][:4]
    _rewrite(bundle, data)
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, _clip(), 16000)
    _assert_one_line_error(_cli("classify", clip, "--bundle", bundle), "the head has 5 classes but the manifest lists 4")


# ---- 3. every manifest field checked against its range, naming the field ----

def _set(data, path, value):
    *parents, last = path
    for key in parents:
        data = data[key]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    (["window_frames"], 10 ** 9, r"window_frames must be an integer in \[2, 10000\], got 1000000000"),
    (["window_frames"], True, r"window_frames must be an integer"),
    (["overlap_frames"], 300, r"overlap_frames must be an integer in \[1, 299\], got 300"),
    (["overlap_frames"], 0, r"overlap_frames must be an integer in \[1, 299\], got 0"),
    (["max_task_frames"], 10 ** 9, r"max_task_frames must be an integer in \[1, 30000\]"),
    (["graphs", 1, "frame_buckets"], [10 ** 9], r"graphs\[1\]\.frame_buckets\[0\] must be an integer in \[1, 1500\]"),
    (["graphs", 1, "frame_buckets"], [100, 200], r"graphs\[1\]\.frame_buckets must be frame counts whose largest is "
                                                 r"max_task_frames \(1500\)"),
    (["graphs", 0, "frame_buckets"], "300", r"graphs\[0\]\.frame_buckets must be null or a non-empty list"),
    (["frontend", "hop_samples"], 0, r"frontend\.hop_samples must be 160 \(the only value this runtime supports\)"),
    (["frontend", "sample_rate_hz"], 8000, r"frontend\.sample_rate_hz must be 16000"),
    (["frontend", "n_fft"], 2048, r"frontend\.n_fft must be 1024"),
    (["frontend", "window_samples"], 2000, r"frontend\.window_samples must be 400"),
    (["frontend", "num_mel_bins"], 0, r"frontend\.num_mel_bins must be an integer in \[1, 512\]"),
    (["frontend", "norm_eps"], 0.0, r"frontend\.norm_eps must be a number in \(0, 1\]"),
    (["frontend", "log_offset"], float("nan"), r"frontend\.log_offset must be a number in \(0, 1\], got nan"),
    (["frontend", "extra"], 1, r"manifest frontend has unknown field\(s\) \['extra'\]"),
    (["sample_rate_hz"], 44100, r"sample_rate_hz must be frontend\.sample_rate_hz \(16000\)"),
    (["graphs"], [], r"graphs must be a non-empty list of graph objects, got \[\]"),
    (["labels"], "alphabet", r"labels must be a list of 1 to 100000 label strings, got 'alphabet'"),
    (["labels"], ["a", "b", "a", "c", "d"], r"labels must be a list of unique labels, got \"\['a'\] repeated\""),
    (["labels", 0], "", r"labels\[0\] must be a non-empty string"),
    (["labels", 2], 7, r"labels\[2\] must be a non-empty string, got 7"),
    (["labels"], _DELETE, r"lacks the field\(s\) \['labels'\]"),
    (["graphs", 0, "sha256"], "abc", r"graphs\[0\]\.sha256 must be 64 lowercase hex digits, got 'abc'"),
    (["graphs", 0, "bytes"], 0, r"graphs\[0\]\.bytes must be an integer in \[1, "),
    (["graphs", 0, "bytes"], "265960", r"graphs\[0\]\.bytes must be an integer"),
    (["graphs", 0, "role"], "decoder", r"graphs\[0\]\.role must be one of \['acoustic_window', 'task'\]"),
    (["graphs", 0, "file"], 3, r"graphs\[0\]\.file must be a string, got 3"),
    (["graphs", 0, "inputs"], [{"name": "x"}], r"graphs\[0\]\.inputs\[0\] lacks the field\(s\) \['shape', 'dtype'\]"),
    (["graphs", 0, "outputs", 0, "shape"], [1, -300], r"graphs\[0\]\.outputs\[0\]\.shape must be a list of positive"),
    (["graphs", 0, "stride"], 2, r"manifest graphs\[0\] has unknown field\(s\) \['stride'\]"),
    (["graphs", 2], None, r"manifest field graphs\[2\] must be a JSON object"),
    (["extra_field"], 1, r"manifest top level has unknown field\(s\) \['extra_field'\].*upgrade hear-edge"),
    (["streaming"], {"hop_seconds": 0}, r"streaming\.hop_seconds must be a number in \(0, 30\], got 0"),
    (["streaming"], {"context_seconds": 1e9}, r"streaming\.context_seconds must be a number in \(0, 30\]"),
    # The limits create_stream holds them to (hear_edge.signal.stream_timing), not looser ones of its own:
    (["streaming"], {"context_seconds": 1.0, "hop_seconds": 0.013},
     r"streaming\.hop_seconds must be between 0\.05 and 30\.0 s, got 0\.013"),
    (["streaming"], {"context_seconds": 1.0, "hop_seconds": 0.123},
     r"streaming\.hop_seconds must be a multiple of 10 ms \(the frame hop\), got 0\.123"),
    (["streaming"], {"context_seconds": 0.5, "hop_seconds": 1.0},
     r"streaming\.hop_seconds \(1\.0\) must not exceed streaming\.context_seconds \(0\.5\)"),
    (["streaming"], {"score_threshold": 1.5}, r"streaming\.score_threshold must be a number in \[0, 1\], got 1\.5"),
    (["streaming"], {"background_labels": ["zeta"]},
     r"streaming\.background_labels must be a list of distinct labels from `labels`, got \['zeta'\]"),
    (["streaming"], {"background_labels": "alpha"}, r"streaming\.background_labels must be a list"),
    (["streaming"], {"window": 1}, r"manifest streaming has unknown field\(s\) \['window'\]"),
    (["streaming"], [1], r"manifest field streaming must be a JSON object"),
    (["provenance"], "me", r"provenance must be a JSON object"),
])
def test_every_manifest_field_is_checked_and_named(path, value, message):
    data = json.loads((TINY / "manifest.json").read_text())
    _set(data, path, value)
    with pytest.raises(BundleError, match=message):
        Manifest.from_dict(data, source="m.json")


def test_the_supported_frontend_is_the_frontend_defaults_not_a_copy():
    code = ("import importlib\n"
            "from hear_edge.signal import frontend\nfrom hear_edge.bundle import manifest_check\n"
            "defaults = list(frontend.FrontendParams.__init__.__defaults__)\n"
            "defaults[3] = 320  # hop_samples\n"
            "frontend.FrontendParams.__init__.__defaults__ = tuple(defaults)\n"
            "supported = importlib.reload(manifest_check).SUPPORTED_FRONTEND\n"
            "print(supported['hop_samples'], supported['n_fft'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["320", "1024"]


def test_a_duplicate_graph_variant_is_refused():
    data = json.loads((TINY / "manifest.json").read_text())
    data["graphs"].append(data["graphs"][0])
    with pytest.raises(BundleError, match=r"graphs\[4\] must be the only graph of its role, format and precision"):
        Manifest.from_dict(data)


def test_the_optional_fields_another_exporter_may_write_are_accepted():
    data = json.loads((TINY / "manifest.json").read_text())
    data["streaming"] = {"clip_seconds": 1.0, "context_seconds": 6, "hop_seconds": 0.5, "score_threshold": None,
                         "background_labels": ["alpha"]}
    data["graphs"][0]["frame_buckets"] = [300]
    data["schema_version"] = 2
    manifest = Manifest.from_dict(data)
    assert manifest.streaming["hop_seconds"] == 0.5 and manifest.graphs[0].frame_buckets == [300]


def test_a_huge_window_in_a_checksummed_manifest_is_refused_at_load_not_allocated(bundle):
    data = _manifest(bundle)
    data["window_frames"] = 10 ** 9
    _rewrite(bundle, data)
    with pytest.raises(BundleError, match=r"manifest field window_frames must be an integer in \[2, 10000\]"):
        HearEdge.load(bundle)


def test_deeply_nested_json_is_a_bundle_error(bundle):
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match=r"nests its JSON too deeply"):
        read_manifest(bundle)
    _assert_one_line_error(_cli("info", bundle), "nests its JSON too deeply")


def test_an_oversized_manifest_is_refused_before_reading(bundle):
    with open(bundle / "manifest.json", "ab") as handle:
        handle.truncate(11 << 20)
    with pytest.raises(BundleError, match=r"is 11534336 bytes; a manifest is at most 10485760 bytes"):
        read_manifest(bundle)


def test_a_graph_whose_size_differs_from_the_manifest_is_refused(bundle):
    size = (bundle / "task.fp32.onnx").stat().st_size
    with open(bundle / "task.fp32.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=rf"task\.fp32\.onnx is {size + 1} bytes, the manifest says {size}"):
        read_manifest(bundle)


# ---- 4, 5. files: truncated, damaged, not regular ----

def _truncated_wav(tmp_path, seconds=3.0, keep_seconds=1.0):
    path = tmp_path / "truncated.wav"
    soundfile.write(path, _clip(seconds), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - int((seconds - keep_seconds) * 16000) * 2])
    return path


def test_a_truncated_wav_raises(model, tmp_path):
    path = _truncated_wav(tmp_path)
    with pytest.raises(InvalidAudioError, match=r"is truncated: its header declares 48000 frames \(3\.00 s\) but "
                                                r"only 16000 \(1\.00 s\) could be read\. Re-copy the file"):
        model.classify(path)
    with pytest.raises(InvalidAudioError, match=r"is truncated"):
        model.embed(path)


def test_cli_classify_and_stream_of_a_truncated_wav_fail(tmp_path):
    path = _truncated_wav(tmp_path)
    for command in ("classify", "stream"):
        _assert_one_line_error(_cli(command, path, "--bundle", TINY), "is truncated")


def test_a_truncated_flac_raises(model, tmp_path):
    path = tmp_path / "cut.flac"
    soundfile.write(path, _clip(3.0), 16000)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])
    with pytest.raises(InvalidAudioError, match=r"cut\.flac is (damaged .* in|truncated)"):
        model.classify(path)


def test_a_whole_wav_still_classifies_like_its_array(model, tmp_path):
    audio = _clip(2.0)
    path = tmp_path / "whole.wav"
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(model.classify(path).logits, model.classify(audio, 16000).logits)


def test_a_file_of_nan_samples_raises(model, tmp_path):
    path = tmp_path / "nan.wav"
    soundfile.write(path, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match=r"holds NaN or infinite samples; clean the file first"):
        model.classify(path)


def _open_fds():
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_an_unsupported_file_rate_raises_and_closes_the_file(model, tmp_path):
    path = tmp_path / "4k.wav"
    soundfile.write(path, _clip(1.0, 4000), 4000)
    before = _open_fds()
    for _ in range(5):
        with pytest.raises(InvalidAudioError, match=r"4k\.wav: sample_rate 4000 Hz is outside the supported"):
            model.classify(path)
    assert _open_fds() == before


def _in_thread(call, timeout_s=20.0):
    """call()'s exception (or None); fails instead of hanging if call blocks."""
    outcome = {}

    def run():
        try:
            call()
            outcome["error"] = None
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "the call hung"
    return outcome["error"]


def test_a_fifo_is_refused_before_it_is_opened(model, tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    error = _in_thread(lambda: model.classify(fifo))
    assert isinstance(error, InvalidAudioError) and "pipe.wav is a pipe (FIFO), not a regular file" in str(error)
    error = _in_thread(lambda: model.embed(str(fifo)))
    assert isinstance(error, InvalidAudioError) and "not a regular file" in str(error)


def test_cli_refuses_a_fifo_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    _assert_one_line_error(_cli("classify", fifo, "--bundle", TINY, timeout=60), "is a pipe (FIFO), not a regular file")
    _assert_one_line_error(_cli("stream", fifo, "--bundle", TINY, timeout=60), "is a pipe (FIFO)")


@pytest.mark.parametrize("path, message", [("/dev/zero", r"/dev/zero is a device or other special file"),
                                           (str(TINY), r"is a folder, not a regular file; pass the path of an audio")])
def test_devices_and_folders_are_refused(model, path, message):
    with pytest.raises(InvalidAudioError, match=message):
        model.classify(path)


# ---- 6. arrays: ambiguous integers, overloud floats, stream chunk layouts ----

@pytest.mark.parametrize("audio, message", [
    (np.array([1000, -2000] * 8000), r"int64 samples \(what np\.array\(list_of_ints\) gives\) have no PCM scale.*"
                                     r"audio\.astype\(np\.int16\)"),
    (np.array([1000, -2000] * 8000, np.int32), r"int32 samples peaking at 2000 fit 16-bit PCM.*ambiguous.*"
                                               r"audio\.astype\(np\.int16\)"),
    (np.zeros(16000, np.uint16), r"audio dtype uint16 is not audio: pass float32/float64"),
    (np.zeros(16000, bool), r"audio dtype bool is not audio"),
    (np.zeros(16000, object), r"audio dtype object is not audio"),
    (_clip() / np.abs(_clip()).max() * 10, r"float audio peaks at 10\.0.*divide by 32768.*divide it by its peak"),
    (np.zeros((16000, 0), np.float32), r"shape \(16000, 0\) has zero channels"),
    ([0.0] * 16000, r"expected a numpy array or a file path, got list"),
])
def test_ambiguous_arrays_are_refused_with_a_remedy(model, audio, message):
    with pytest.raises(InvalidAudioError, match=message):
        model.classify(audio, 16000)


def test_overdriven_float_and_real_integer_pcm_are_still_accepted(model):
    audio = _clip()
    assert model.classify(audio / np.abs(audio).max() * 1.9, 16000).top is not None
    assert model.classify((audio * 2 ** 31 * 0.5).astype(np.int32), 16000).top is not None
    assert model.classify(np.zeros(16000, np.int32), 16000).top is not None  # silence either way


@pytest.mark.parametrize("chunk, message", [
    (np.zeros((2, 16000), np.float32), r"chunk: shape \(2, 16000\) has more channels \(16000\) than samples \(2\).*audio\.T"),
    (np.zeros((16000, 0), np.float32), r"chunk: shape \(16000, 0\) has zero channels"),
    (np.array([1, 2] * 8000), r"chunk: int64 samples"),
    (np.full(1600, np.nan, np.float32), r"chunk: 1600 sample\(s\) are NaN or infinite"),
    (np.zeros(1600, np.float32) + 50.0, r"chunk: float audio peaks at 50\.0"),
])
def test_bad_stream_chunks_are_refused_and_fix_no_state(model, chunk, message):
    stream = model.create_stream()
    with pytest.raises(InvalidAudioError, match=message):
        stream.accept_waveform(chunk, 48000)
    # Neither the refused chunk's channel count nor its rate stuck: stereo at 16 kHz is taken.
    assert stream.accept_waveform(np.zeros((16000, 2), np.float32) + 0.01, 16000)[0].end_s == 1.0


def test_a_stream_keeps_its_channel_count_once_a_chunk_is_taken(model):
    stream = model.create_stream()
    stream.accept_waveform(np.zeros((800, 2), np.float32), 16000)
    with pytest.raises(InvalidAudioError, match=r"the stream started with 2 channel\(s\) and this chunk has 1"):
        stream.accept_waveform(np.zeros(800, np.float32), 16000)
    assert stream.accept_waveform(np.zeros((0, 2), np.float32), 16000) == []


def test_flushing_a_stream_too_short_for_any_result_raises(model):
    stream = model.create_stream()
    stream.accept_waveform(np.zeros(300, np.float32), 16000)
    with pytest.raises(AudioTooShortError, match=r"stream ended after 18\.8 ms of audio, too short for any result.*"
                                                 r"513 samples"):
        stream.flush()
    assert stream.flush() == []  # nothing sent since: nothing to report


# ---- 7. options and rates give typed errors up front ----

@pytest.mark.parametrize("rate, message", [
    (float("nan"), r"sample_rate must be a whole number of Hz, got nan"),
    (float("inf"), r"sample_rate must be a whole number of Hz, got inf"),
    (-float("inf"), r"got -inf"),
    ("16000", r"sample_rate must be a whole number of Hz, got '16000'"),
    (16000.5, r"got 16000\.5"),
    (10 ** 400, r"sample_rate 1000+ Hz is outside the supported 8000-192000 Hz"),
])
def test_bad_sample_rates_are_invalid_audio(model, rate, message):
    with pytest.raises(InvalidAudioError, match=message):
        model.classify(_clip(), rate)
    with pytest.raises(InvalidAudioError, match=message):
        model.create_stream().accept_waveform(_clip(), rate)


@pytest.mark.parametrize("options, error, message", [
    ({"score_threshold": "0.5"}, InvalidArgumentError, r"score_threshold must be a number .* got '0\.5' \(str\)"),
    ({"score_threshold": float("nan")}, InvalidArgumentError, r"score_threshold is a probability in \[0, 1\], got nan"),
    ({"score_threshold": True}, InvalidArgumentError, r"score_threshold must be a number"),
    ({"allowlist": [["alpha"]]}, LabelError, r"allowlist/denylist entries must be label strings, got \[\['alpha'\]\]"),
    ({"denylist": [None]}, LabelError, r"entries must be label strings, got \[None\]"),
    ({"allowlist": "alpha"}, LabelError, r"must be a list of labels, got str"),
    ({"max_results": 2.5}, InvalidArgumentError, r"max_results must be an int >= 1"),
])
def test_bad_options_are_typed_errors_before_any_inference(model, options, error, message, monkeypatch):
    monkeypatch.setattr(model.engine, "run", lambda *a: pytest.fail("inference ran before the options were checked"))
    with pytest.raises(error, match=message):
        model.classify(_clip(), 16000, **options)
    with pytest.raises(error, match=message):
        model.create_stream(**options)


# ---- the HEAR API goes through the same checks ----

@pytest.fixture(scope="module")
def api():
    pytest.importorskip("torch", reason="the HEAR API's load_model returns a torch.nn.Module")
    return hear_api.load_model(str(TINY), backend="onnx", precision="fp32")


@pytest.mark.parametrize("audio, message", [
    (np.zeros(16000, np.float32), r"audio must be \(n_sounds, n_samples\), got shape \(16000,\).*audio\[None\]"),
    (np.zeros((1, 16000), np.int16), r"the HEAR API takes float audio in \[-1, 1\], got int16.*/ 32768"),
    (np.stack([_clip(), np.full(16000, np.nan, np.float32)]), r"audio\[1\]: 16000 sample\(s\) are NaN or infinite"),
    (np.zeros((1, 16000), np.float32) + 30.0, r"audio\[0\]: float audio peaks at 30\.0"),
    ([[0.0] * 16000], r"audio must be a \(n_sounds, n_samples\) numpy array or torch tensor, got list"),
])
def test_hear_api_bad_batches_are_invalid_audio(api, audio, message):
    for call in (hear_api.get_scene_embeddings, hear_api.get_timestamp_embeddings):
        with pytest.raises(InvalidAudioError, match=message):
            call(audio, api)


# ---- 8. CLI: a file too short for a stream result is an error ----

def test_cli_stream_of_a_too_short_file_fails(tmp_path):
    path = tmp_path / "blip.wav"
    soundfile.write(path, _clip(0.01), 16000)
    _assert_one_line_error(_cli("stream", path, "--bundle", TINY), "too short for any result")
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    _assert_one_line_error(_cli("stream", empty, "--bundle", TINY), "holds no audio samples")


# ---- 9. fuzz: every outcome is a result or a HearEdgeError, in a child so a crash or hang fails ----

FUZZ = """
import sys, warnings
import numpy as np
from hear_edge import HearEdge
from hear_edge.errors import HearEdgeError
warnings.simplefilter("error")  # a numpy RuntimeWarning (overflow, invalid value) is a finding too
model = HearEdge.load(sys.argv[1], backend="onnx", precision="fp32")
rng = np.random.default_rng(int(sys.argv[2]))
DTYPES = [np.float32, np.float64, np.float16, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.int8,
          np.complex64, bool, object]
RATES = [16000, 8000, 48000, 44100, 22050, 0, -1, 7999, 192001, 16000.0, 16000.5, float("nan"), float("inf"),
         None, "16000", True, 10 ** 12]
VALUES = ["normal", "zeros", "nan", "inf", "huge", "tiny", "full_scale", "pcm"]

def make():
    dtype = DTYPES[rng.integers(len(DTYPES))]
    samples = int(rng.choice([0, 1, 2, 100, 512, 513, 600, 2000, 8000, 16000]))
    shape = [(samples,), (samples, int(rng.integers(0, 4))), (int(rng.integers(0, 4)), samples),
             (2, 2, samples), ()][rng.integers(5)]
    kind = VALUES[rng.integers(len(VALUES))]
    base = np.asarray(rng.standard_normal(shape))
    base = {"normal": 0.1 * base, "zeros": 0 * base, "nan": np.where(base > 1.5, np.nan, 0.1 * base),
            "inf": np.where(base > 1.5, np.inf, 0.1 * base), "huge": base * 1e30, "tiny": base * 1e-30,
            "full_scale": np.clip(base, -1, 1), "pcm": np.round(base * 10000)}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(base).astype(dtype), RATES[rng.integers(len(RATES))]

counts = {"result": 0, "error": 0}
for i in range(int(sys.argv[3])):
    audio, rate = make()
    try:
        if rng.random() < 0.7:
            model.classify(audio, rate, max_results=int(rng.integers(1, 6)))
        else:
            stream = model.create_stream(hop_seconds=0.1, context_seconds=0.5)
            flat = audio if audio.ndim else audio.reshape(1)  # a 0-d array has no chunks
            position = 0
            while position < len(flat):
                size = int(rng.integers(1, 5000))
                stream.accept_waveform(flat[position:position + size], rate)
                position += size
            stream.flush()
        counts["result"] += 1
    except HearEdgeError:
        counts["error"] += 1
    except BaseException as error:
        print(f"case {i}: {type(error).__name__}: {error} for dtype {audio.dtype} shape {audio.shape} "
              f"rate {rate!r}", file=sys.stderr)
        sys.exit(1)
print(counts["result"], counts["error"])
"""


def test_fuzzed_inputs_give_a_result_or_a_typed_error():
    result = subprocess.run([sys.executable, "-c", FUZZ, str(TINY), "14", "2500"], capture_output=True, text=True,
                            timeout=240, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    taken, refused = map(int, result.stdout.split())
    assert taken + refused == 2500 and taken > 100 and refused > 100, (taken, refused)


def test_an_onnx_graph_that_points_at_external_data_is_refused(bundle, tmp_path):
    onnx = pytest.importorskip("onnx")
    # An attacker who rewrites a graph and its manifest entry (hash, size, checksum) so that one
    # initializer reads from a file outside the bundle: load must not let onnxruntime open it.
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    path = bundle / "task.fp32.onnx"
    model = onnx.load(str(path))
    tensor = next(t for t in model.graph.initializer if t.raw_data)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../outside.bin"
    tensor.ClearField("raw_data")
    onnx.save(model, str(path))
    data = json.loads((bundle / "manifest.json").read_text())
    for graph in data["graphs"]:
        if graph["file"] == "task.fp32.onnx":
            graph["sha256"], graph["bytes"] = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(data))
    (bundle / CHECKSUM_NAME).write_text(hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest() + "\n")
    with pytest.raises(BundleError, match=r"task\.fp32\.onnx refers to external data files; .*Re-export"):
        HearEdge.load(bundle, backend="onnx", precision="fp32")
