"""A new user's first hour (issue 23): MP3 files, the microphone, the CLI's words, streams' output,
one-frame chunks and a bundle with a file missing. Torch-free.
"""

import inspect
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import soxr

from conftest import REPO_ROOT
from hear_edge import HearEdge
from hear_edge.bundle.manifest import CHECKSUM_NAME
from hear_edge.cli import build_parser, main
from hear_edge.errors import BundleError, InvalidAudioError
from hear_edge.run.classifier import DEFAULT_MAX_RESULTS
from hear_edge.signal import audio
from hear_edge.signal.audio import MAX_ONE_FRAME_CHANNELS, audio_blocks
from hear_edge.tools import batch

TINY = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"
CLIPS = REPO_ROOT / "examples" / "clips"
WORDS = ["go", "left", "stop", "yes"]
RATES_HZ = [16000, 22050, 44100, 48000]
LAME_MP3 = REPO_ROOT / "tests" / "data" / "mp3" / "yes-22050hz-lame.mp3"  # `lame yes.wav` of the clip at 22.05 kHz


def _run(capsys, *args):
    """`hear-edge ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's errors
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


# ---- 1. MP3: the header's frame count is an estimate; what decodes is the audio ----

def test_a_lame_mp3_whose_header_overstates_its_frames_is_read_whole():
    sound = soundfile.SoundFile(LAME_MP3)
    decoded = sound.read(dtype="float32")
    assert sound.frames > len(decoded)  # the estimate this file carries (23726 declared, 23616 decoded)
    blocks, rate = audio_blocks(LAME_MP3)
    read = np.concatenate(list(blocks))
    assert rate == 22050 and read.shape == (len(decoded), 1)
    np.testing.assert_array_equal(read[:, 0], decoded)


def test_a_truncated_wav_is_still_refused(tmp_path):
    path = tmp_path / "cut.wav"
    soundfile.write(path, np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:-32000])
    with pytest.raises(InvalidAudioError, match=r"cut\.wav is truncated: its header declares 32000 frames"):
        list(audio_blocks(path)[0])


def _encode(encoder: str, wav, mp3) -> None:
    if encoder == "soundfile":
        data, rate = soundfile.read(wav, dtype="float32")
        soundfile.write(mp3, data, rate, format="MP3")
        return
    command = {"lame": ["lame", "--quiet", wav, mp3], "sox": ["sox", wav, mp3]}[encoder]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed (Debian: apt-get install {'lame' if encoder == 'lame' else 'sox libsox-fmt-mp3'})")
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=60)
    if encoder == "sox" and done.returncode != 0 and "mp3" in done.stderr.lower():
        pytest.skip(f"this sox cannot write MP3 (Debian: apt-get install libsox-fmt-mp3): {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("encoder", ["lame", "sox", "soundfile"])
def test_classify_an_mp3_gives_the_top_1_of_the_wav_it_was_encoded_from(encoder, tmp_path, capsys):
    if encoder == "soundfile" and "MP3" not in soundfile.available_formats():
        pytest.skip(f"this libsndfile ({soundfile.__libsndfile_version__}) writes no MP3")
    wavs, mp3s = [], []
    for word in WORDS:
        clip, rate = soundfile.read(CLIPS / f"{word}.wav", dtype="float32")
        for target in RATES_HZ:
            wav = tmp_path / f"{word}-{target}.wav"
            soundfile.write(wav, soxr.resample(clip, rate, target), target, subtype="PCM_16")
            _encode(encoder, wav, wav.with_suffix(".mp3"))
            wavs.append(wav)
            mp3s.append(wav.with_suffix(".mp3"))
    status, out, err = _run(capsys, "classify", *wavs, *mp3s, "--json", "--top-k", "1")
    assert status == 0, err
    top = {line["file"]: line["categories"][0]["label"] for line in map(json.loads, out.splitlines())}
    assert [top[str(m)] for m in mp3s] == [top[str(w)] for w in wavs]
    assert sorted(set(top[str(w)] for w in wavs)) == WORDS  # the shipped model hears each word at every rate


# ---- 2. the microphone ----

# A fake sounddevice: DEVICES and RECORDING are filled in per test; PortAudio's own errors as it raises them.
FAKE_SOUNDDEVICE = '''
import numpy as np

class PortAudioError(Exception):
    pass

DEVICES = {devices}
RECORDING = {recording}

class _Default:
    device = [next((d["index"] for d in DEVICES if d["max_input_channels"]), -1), -1]

default = _Default()

def query_devices(device=None, kind=None):
    if device is None and kind is None:
        return list(DEVICES)
    if device is None:
        device = default.device[0]
        if device < 0:
            raise PortAudioError("Error querying device -1")
    if isinstance(device, str):
        found = [d for d in DEVICES if device.lower() in d["name"].lower()]
        if not found:
            raise ValueError(f"No input device matching {{device!r}}")
        return found[0]
    if not 0 <= device < len(DEVICES):
        raise PortAudioError(f"Error querying device {{device}}")
    return DEVICES[device]

class InputStream:
    def __init__(self, device=None, samplerate=None, channels=None, dtype=None):
        self.position = 0
    def start(self):
        pass
    def close(self):
        pass
    def read(self, frames):
        if self.position >= len(RECORDING):
            raise KeyboardInterrupt  # the user's Ctrl-C
        block = np.asarray(RECORDING[self.position:self.position + frames], np.float32)[:, None]
        self.position += frames
        return block, False
'''
SPEAKER = {"index": 0, "name": "HDMI speaker", "max_input_channels": 0, "max_output_channels": 2,
           "default_samplerate": 48000.0}
USB_MIC = {"index": 1, "name": "USB microphone", "max_input_channels": 1, "max_output_channels": 0,
           "default_samplerate": 16000.0}


def _fake_sounddevice(tmp_path, devices, recording=()):
    (tmp_path / "sounddevice.py").write_text(FAKE_SOUNDDEVICE.format(devices=repr(devices),
                                                                     recording=repr(list(recording))))
    return f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\n"


def _cli(*args, prelude=""):
    code = prelude + "import sys\nfrom hear_edge.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT)


def _one_error_line(result, *parts):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hear-edge: error:"), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_mic_without_sounddevice_names_the_extra():
    result = _cli("stream", "--mic", "--bundle", TINY, prelude="import sys\nsys.modules['sounddevice'] = None\n")
    _one_error_line(result, "needs the sounddevice package", "pip install '.[mic]'", "'hear-edge[mic]'")


def test_mic_without_portaudio_names_the_system_package(tmp_path):
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    result = _cli("stream", "--mic", "--bundle", TINY, prelude=f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\n")
    _one_error_line(result, "needs the PortAudio library", "PortAudio library not found", "apt-get install libportaudio2")


def test_mic_without_an_input_device_says_to_plug_one_in(tmp_path):
    prelude = _fake_sounddevice(tmp_path, [SPEAKER])
    _one_error_line(_cli("stream", "--mic", "--bundle", TINY, prelude=prelude),
                    "no microphone: PortAudio finds no input device. Plug in")
    _one_error_line(_cli("stream", "--list-devices", prelude=prelude), "finds no input device: plug in")


def test_list_devices_and_a_device_that_does_not_exist(tmp_path):
    prelude = _fake_sounddevice(tmp_path, [SPEAKER, USB_MIC])
    listed = _cli("stream", "--list-devices", prelude=prelude)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["  1  USB microphone (1 in, 16000 Hz)  [default]"]
    _one_error_line(_cli("stream", "--mic", "--device", "webcam", "--bundle", TINY, prelude=prelude),
                    "--device webcam cannot be used (No input device matching 'webcam')", "--list-devices")
    _one_error_line(_cli("stream", "--mic", "--device", "0", "--bundle", TINY, prelude=prelude),
                    "--device 0 (HDMI speaker) has no input channels")


def test_mic_streams_from_the_chosen_device_until_ctrl_c(tmp_path):
    word = soundfile.read(CLIPS / "yes.wav", dtype="float32")[0]
    recording = np.concatenate([np.zeros(8000, np.float32), word, np.zeros(8000, np.float32)])
    prelude = _fake_sounddevice(tmp_path, [SPEAKER, USB_MIC], np.round(recording, 6).tolist())
    result = _cli("stream", "--mic", "--device", "USB", "--json", prelude=prelude)
    assert result.returncode == 0, result.stderr
    detections = [json.loads(line)["detection"]["label"] for line in result.stdout.splitlines()]
    assert detections == ["yes"]
    assert "listening to USB microphone at 16000 Hz" in result.stderr
    assert re.search(r"^stream: 2\.00 s of audio, \d+ results, 1 detection \(", result.stderr, re.M), result.stderr


# ---- 3. the CLI speaks in its flags ----

@pytest.mark.parametrize("args, flag, message", [
    (["stream", "x.wav", "--hop", "0"], "--hop", "must be a number above 0, got 0"),
    (["stream", "x.wav", "--threshold", "2"], "--threshold", "must be a probability in [0, 1], e.g. 0.5, got 2"),
    (["stream", "x.wav", "--threshold", "nan"], "--threshold", "must be a probability in [0, 1]"),
    (["classify", "x.wav", "--top-k", "0"], "--top-k", "must be a whole number >= 1, got 0"),
    (["classify", "x.wav", "--top-k", "two"], "--top-k", "must be a whole number >= 1, got 'two'"),
    (["classify", "x.wav", "--threads", "-1"], "--threads", "must be a whole number >= 1, got -1"),
    (["classify", "x.wav", "--jobs", "0"], "--jobs", "must be a whole number >= 1, got 0"),
])
def test_bad_flag_values_exit_2_naming_the_flag(capsys, args, flag, message):
    status, out, err = _run(capsys, *args)
    assert status == 2 and out == ""
    assert re.search(rf"error: argument (-\w/)?{flag}: {re.escape(message)}", err), err


@pytest.mark.parametrize("args, message", [
    (["--hop", "0.5", "--context", "0.3"], "--hop (0.5) must not exceed --context (0.3)"),
    (["--hop", "7"], "--hop (7.0) must not exceed the bundle's stream context (6.0)"),
    (["--context", "60"], "--context must be between 0.05 and 30.0 s, got 60.0"),
    (["--hop", "0.123"], "--hop must be a multiple of 10 ms"),
])
def test_stream_timing_errors_name_the_flags(capsys, args, message):
    status, _, err = _run(capsys, "stream", CLIPS / "yes.wav", "--bundle", TINY, *args)
    assert status == 2
    assert f"hear-edge stream: error: {message}" in err, err
    assert "hop_seconds" not in err and "context_seconds" not in err


def test_stream_without_a_file_or_mic_is_a_usage_error(capsys):
    status, _, err = _run(capsys, "stream", "--bundle", TINY)
    assert status == 2 and "error: give an audio FILE to stream, or --mic" in err
    status, _, err = _run(capsys, "stream", CLIPS / "yes.wav", "--device", "1")
    assert status == 2 and "error: --device needs --mic" in err


def test_an_unreadable_file_shows_no_python_object(tmp_path, capsys):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    for command in ("classify", "stream"):
        status, _, err = _run(capsys, command, bad, "--bundle", TINY)
        assert status in (1, 2) and "is not audio that soundfile can read (Format not recognised)" in err, err
        assert not re.search(r"<[A-Za-z_][\w.]* ", err), err  # e.g. <_io.BufferedReader name=6>


def test_top_k_defaults_to_the_librarys_max_results():
    from hear_edge.tools.cluster import run_on_cluster

    parsed = build_parser().parse_args(["classify", "x.wav"])
    assert parsed.top_k == DEFAULT_MAX_RESULTS
    load = inspect.signature(HearEdge.load).parameters
    assert (parsed.backend, parsed.precision, parsed.threads) == \
        (load["backend"].default, load["precision"].default, load["num_threads"].default)
    for function in (HearEdge.classify, HearEdge.create_stream):
        assert inspect.signature(function).parameters["max_results"].default == DEFAULT_MAX_RESULTS
    for function in (batch.run_batch, run_on_cluster):
        assert inspect.signature(function).parameters["top_k"].default == DEFAULT_MAX_RESULTS


def test_classify_json_and_a_results_file_write_the_same_record(tmp_path, capsys):
    status, out, err = _run(capsys, "classify", CLIPS / "yes.wav", "--bundle", TINY, "--json")
    assert status == 0, err
    printed = json.loads(out)
    assert printed.pop("timings_ms").keys() >= {"frontend_ms", "total_ms"}
    status, _, err = _run(capsys, "classify", CLIPS / "yes.wav", "--bundle", TINY, "-o", tmp_path / "r.jsonl")
    assert status == 0, err
    assert json.loads((tmp_path / "r.jsonl").read_text()) == printed
    assert set(printed) == {"file", "start_s", "end_s", "categories", "scores"}


def test_one_set_of_audio_suffixes():
    assert batch.AUDIO_SUFFIXES is audio.AUDIO_SUFFIXES
    assert {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aifc", ".caf"} <= audio.AUDIO_SUFFIXES


# ---- 4. streams: --all keeps the detections; a summary closes every stream ----

@pytest.fixture(scope="module")
def words_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words.wav"
    gap = np.zeros(8000, np.float32)
    soundfile.write(path, np.concatenate([part for word in WORDS
                                          for part in (gap, soundfile.read(CLIPS / f"{word}.wav", dtype="float32")[0])]
                                         + [gap]), 16000)
    return path


def test_stream_all_prints_every_result_and_the_same_detections(words_file, capsys):
    status, out, err = _run(capsys, "stream", words_file, "--json")
    assert status == 0, err
    detected = [json.loads(line) for line in out.splitlines()]
    status, out, err_all = _run(capsys, "stream", words_file, "--json", "--all")
    assert status == 0, err_all
    every = [json.loads(line) for line in out.splitlines()]
    assert len(every) > len(detected) > 0
    assert [(r["end_s"], r["detection"]) for r in every if "detection" in r] == \
        [(r["end_s"], r["detection"]) for r in detected]
    threshold = HearEdge.load().manifest.stream_score_threshold
    assert all(r["detection"]["score"] >= threshold for r in detected)
    # --all shows each result's best --top-k labels, whatever their scores.
    assert all(len(r["categories"]) == DEFAULT_MAX_RESULTS for r in every)
    summary = err_all.strip().splitlines()[-1]
    seconds = soundfile.info(words_file).duration
    assert summary.startswith(f"stream: {seconds:.2f} s of audio, {len(every)} results, {len(detected)} detection")
    assert err.strip().splitlines()[-1] == summary


def test_a_stream_with_nothing_detected_still_says_what_it_heard(tmp_path, capsys):
    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.zeros(32000, np.float32), 16000)
    status, out, err = _run(capsys, "stream", quiet, "--threshold", "1")
    assert status == 0 and out == ""
    smoothing = HearEdge.load().manifest.stream_smoothing_seconds
    assert re.fullmatch(r"stream: 2\.00 s of audio, \d+ results, 0 detections \(.*score >= 1"
                        + re.escape(f", scores averaged over {smoothing:g} s of results" if smoothing else "")
                        + r"\)\n", err), err


# ---- 5. one-frame chunks ----

def _four_channels(seconds=1.0):
    rng = np.random.default_rng(3)
    return (0.1 * rng.standard_normal((int(16000 * seconds), 4))).astype(np.float32)


def test_one_frame_chunks_of_a_known_channel_count_are_taken():
    model = HearEdge.load(TINY, backend="onnx", precision="fp32")
    audio = _four_channels()
    whole = model.create_stream(hop_seconds=0.25, context_seconds=0.5)
    expected = whole.accept_waveform(audio, 16000) + whole.flush()
    stream = model.create_stream(hop_seconds=0.25, context_seconds=0.5)
    results = stream.accept_waveform(audio[:1], 16000)  # a first chunk of one frame: one frame of 4 channels
    for start in range(1, len(audio), 1601):
        results += stream.accept_waveform(audio[start:start + 1600], 16000)  # 1600 frames ...
        results += stream.accept_waveform(audio[start + 1600:start + 1601], 16000)  # ... then a (1, 4) chunk
    results += stream.flush()
    assert [(r.start_s, r.end_s) for r in results] == [(r.start_s, r.end_s) for r in expected]
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got.logits, want.logits, atol=1e-5)


def test_a_first_one_frame_chunk_of_many_channels_is_refused_with_the_rule():
    stream = HearEdge.load(TINY, backend="onnx", precision="fp32").create_stream()
    wide = MAX_ONE_FRAME_CHANNELS + 1
    with pytest.raises(InvalidAudioError, match=rf"chunk: shape \(1, {wide}\) has more channels \({wide}\) than "
                                                rf"samples \(1\).*only for one frame of at most "
                                                rf"{MAX_ONE_FRAME_CHANNELS} channels"):
        stream.accept_waveform(np.zeros((1, wide), np.float32), 16000)
    stream.accept_waveform(np.zeros((1, 2), np.float32), 16000)  # then a stereo stream
    assert stream.accept_waveform(np.zeros((1, 2), np.float32), 16000) == []


# ---- 6. load checks every file the manifest lists ----

def _copy(tmp_path):
    copy = tmp_path / "b.hearedge"
    shutil.copytree(TINY, copy)
    return copy


def test_a_missing_graph_of_another_variant_fails_the_load(tmp_path):
    copy = _copy(tmp_path)
    size = (copy / "task.int8.onnx").stat().st_size
    (copy / "task.int8.onnx").unlink()
    with pytest.raises(BundleError, match=rf"b\.hearedge is missing its onnx int8 task graph task\.int8\.onnx "
                                          rf"\(the manifest says {size} bytes, found no file\).*Re-copy"):
        HearEdge.load(copy, backend="onnx", precision="fp32")


def test_a_resized_graph_of_another_variant_fails_the_load(tmp_path):
    copy = _copy(tmp_path)
    size = (copy / "acoustic_window.int8.onnx").stat().st_size
    with open(copy / "acoustic_window.int8.onnx", "r+b") as handle:
        handle.truncate(size - 10)
    with pytest.raises(BundleError, match=rf"acoustic_window\.int8\.onnx is {size - 10} bytes, the manifest says "
                                          rf"{size}.*Re-copy the bundle"):
        HearEdge.load(copy, backend="onnx", precision="fp32")
    assert (copy / CHECKSUM_NAME).is_file()


# ---- 7. the README starts with the user's path, and its commands parse ----

def _user_path():
    text = (REPO_ROOT / "README.md").read_text()
    return text[:text.index("\n## The default model")]


def test_the_readme_starts_with_install_classify_microphone_and_export():
    head = _user_path()
    first_block = head.split("```")[1]
    assert 'pip install -e ".[onnx]" && hear-edge classify examples/clips/yes.wav' in first_block
    assert 'pip install -e ".[all]" && python3 -m pytest -q' in first_block
    titles = re.findall(r"^## (.+)$", head, re.M)
    assert titles[:4] == ["Install: which extra on which device", "First classify", "Stream from the microphone",
                          "Your own model: the official checkpoint, fine-tuning, export"]
    assert "Where each rule lives" not in (REPO_ROOT / "README.md").read_text()
    assert "## Where each rule lives" in (REPO_ROOT / "ARCHITECTURE.md").read_text()


def test_every_command_on_the_readmes_first_screens_parses():
    import shlex

    parser = build_parser()
    blocks = re.findall(r"```bash\n(.*?)```", _user_path(), re.S)
    commands = [shlex.split(line, comments=True) for block in blocks
                for line in block.replace("\\\n", " ").splitlines()]
    commands = [c[c.index("hear-edge") + 1:] for c in commands if "hear-edge" in c]
    assert len(commands) >= 8
    for command in commands:
        parser.parse_args(command)  # argparse exits (a failure here) on an unknown flag or a bad value
