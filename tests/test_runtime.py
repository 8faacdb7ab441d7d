import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from conftest import BLOCK_TORCH, REPO_ROOT, TINY_CASES, TINY_GOLDEN, TINY_LABELS
from hear_edge import HearEdge, hear_api
from hear_edge.errors import AudioTooShortError, BundleError, InvalidArgumentError, InvalidAudioError, LabelError

FP32_BOUND = 1e-3


@pytest.fixture(scope="module")
def onnx_model(tiny_bundle):
    return HearEdge.load(tiny_bundle, backend="onnx", precision="fp32")


@pytest.fixture(scope="module")
def litert_model(tiny_bundle):
    return HearEdge.load(tiny_bundle, backend="litert", precision="fp32")


def _golden(case):
    return np.load(TINY_GOLDEN / f"{case}.npz")


@pytest.mark.parametrize("case", TINY_CASES)
def test_classify_equals_the_official_logits_on_both_backends(onnx_model, litert_model, case):
    golden = _golden(case)
    audio = golden["wav"].T  # (samples, channels), as soundfile returns it
    for model in (onnx_model, litert_model):
        result = model.classify(audio, sample_rate=16000, max_results=None)
        assert np.abs(result.logits - golden["logits"]).max() <= FP32_BOUND, model.backend
        assert result.top.index == int(np.argmax(golden["logits"]))
        assert [c.label for c in result.categories] == [TINY_LABELS[i] for i in np.argsort(-golden["logits"])]
        np.testing.assert_allclose(result.scores.sum(), 1.0, rtol=1e-5)
        assert result.duration_s == pytest.approx(golden["wav"].shape[1] / 16000)
        assert set(result.timings_ms) >= {"frontend_ms", "acoustic_ms", "task_ms", "total_ms"}


def test_both_backends_give_the_same_fp32_answer(onnx_model, litert_model):
    for case in TINY_CASES:
        audio = _golden(case)["wav"][0]
        a = onnx_model.classify(audio, 16000).logits
        b = litert_model.classify(audio, 16000).logits
        assert np.abs(a - b).max() <= 1e-4, case


def test_classify_a_file_equals_classify_the_array(onnx_model, tmp_path):
    audio = _golden("odd_17s")["wav"][0]
    path = tmp_path / "clip.wav"
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(onnx_model.classify(path).logits, onnx_model.classify(audio, 16000).logits)


def test_auto_choices_and_default_precision(tiny_bundle):
    model = HearEdge.load(tiny_bundle)
    assert model.backend == "onnx" and model.precision == "int8"  # int8 passed its gate
    assert HearEdge.load(tiny_bundle, backend="litert").backend == "litert"


def test_integer_pcm_is_scaled_by_its_range(onnx_model):
    audio = _golden("clip_10s")["wav"][0]
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    as_int = onnx_model.classify(pcm, 16000).logits
    as_float = onnx_model.classify(pcm.astype(np.float32) / 32768, 16000).logits
    np.testing.assert_allclose(as_int, as_float, atol=1e-6)


def test_resampled_copies_give_the_same_answer(onnx_model):
    import soxr

    audio = _golden("clip_10s")["wav"][0].astype(np.float64)
    # The golden clip is full-band to 8 kHz; no band-limited resampler keeps its top 5 % (the
    # filter's transition band), and the log power spectrum sees that. Below 7 kHz it must be exact.
    spectrum = np.fft.rfft(audio)
    spectrum[np.fft.rfftfreq(len(audio), 1 / 16000) > 7000] = 0
    band_limited = np.fft.irfft(spectrum, len(audio))
    for clip, bound in ((band_limited, 1e-3), (audio, None)):
        reference = onnx_model.classify(clip, 16000, max_results=None)
        for rate in (48000, 44100):
            result = onnx_model.classify(soxr.resample(clip, 16000, rate, quality="VHQ"), rate, max_results=None)
            assert result.top.label == reference.top.label, rate
            if bound is not None:
                assert np.abs(result.logits - reference.logits).max() <= bound, rate


def test_a_tone_above_8khz_does_not_alias_into_the_16khz_features(onnx_model):
    from hear_edge.run.classifier import _resampled_mono

    rate = 48000
    t = np.arange(rate * 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)[:, None]
    resampled = np.concatenate(list(_resampled_mono(iter([tone]), rate)))
    rms_in = np.sqrt(np.mean(tone ** 2))
    rms_out = np.sqrt(np.mean(resampled[4000:-4000] ** 2))
    assert 20 * np.log10(rms_out / rms_in) < -60  # plain decimation would fold it to 4 kHz at 0 dB


def test_clips_over_30_seconds_are_classified_in_segments(onnx_model):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(70 * 16000)).astype(np.float32)
    result = onnx_model.classify(audio, 16000, max_results=None)
    assert [(s.start_s, s.end_s) for s in result.segments] == [(0.0, 30.0), (30.0, 60.0), (40.0, 70.0)]
    for segment in result.segments:
        alone = onnx_model.classify(audio[int(segment.start_s * 16000):int(segment.end_s * 16000)], 16000)
        np.testing.assert_allclose(segment.logits, alone.logits, atol=1e-5)
    np.testing.assert_allclose(result.scores, np.mean([s.scores for s in result.segments], axis=0), atol=1e-6)
    assert result.end_s == 70.0


MEMORY_PROBE = """
import resource, sys
from hear_edge import HearEdge
model = HearEdge.load(sys.argv[1], backend="onnx", precision="fp32")
model.classify(sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024))
"""
# Linux carries ru_maxrss across exec, so a child forked from pytest would start at pytest's RSS:
# the probe is started by a bare interpreter (about 10 MB) and reports a peak that is its own.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
TINY_SHIPPED = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"
# 600 s of 16 kHz mono held at once would be 38.4 MB as float32 (76.8 MB as float64), 34.6 MB more
# than 60 s; a file read, resampled and classified segment by segment costs about the same at any
# length, plus a slowly growing tail of heap fragmentation (Python 3.13, numpy 2.5, stop 29, six fresh
# processes each: 60 s 181-198 MiB, 600 s 189-204 MiB; 1200 s about 203). A margin of 24 MB tolerates
# that and still fails if the whole file, or any whole-clip float32 array, is resident.
MEMORY_MARGIN_BYTES = 24 << 20
# The tail only adds, and single runs came within 2 MiB of the margin and once over it: each length's
# peak is the least of PROBE_RUNS processes.
PROBE_RUNS = 3


def test_peak_rss_stays_flat_with_clip_length(tmp_path):
    rng = np.random.default_rng(1)
    peaks = {}
    for seconds in (60, 600):
        path = tmp_path / f"{seconds}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(seconds * 16000)).astype(np.float32), 16000)
        runs = []
        for _ in range(PROBE_RUNS):
            result = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, sys.executable, "-c", MEMORY_PROBE,
                                     str(TINY_SHIPPED), str(path)], capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr
            runs.append(int(result.stdout.strip()))
        peaks[seconds] = min(runs)
    assert peaks[600] < peaks[60] + MEMORY_MARGIN_BYTES, {s: f"{p / 2 ** 20:.1f} MiB" for s, p in peaks.items()}


def _stream_results(model, audio, chunk, rate=16000, **options):
    stream = model.create_stream(max_results=None, **options)
    results, position, rng = [], 0, np.random.default_rng(7)
    while position < len(audio):
        size = int(rng.integers(1, 6000)) if chunk == "random" else chunk
        results += stream.accept_waveform(audio[position:position + size], rate)
        position += size
    return results + stream.flush()


@pytest.mark.parametrize("chunk", [1, 160, 1000, 16000, "random"])
def test_stream_results_equal_classify_of_each_window_for_any_chunk_size(onnx_model, chunk):
    audio = _golden("odd_17s")["wav"][0]
    results = _stream_results(onnx_model, audio, chunk, hop_seconds=1.0, context_seconds=6.0)
    assert [(r.start_s, r.end_s) for r in results[:7]] == [(0.0, float(k)) for k in range(1, 7)] + [(1.0, 7.0)]
    assert results[-1].end_s == pytest.approx(len(audio) / 16000)
    for result in results:
        window = audio[round(result.start_s * 16000):round(result.end_s * 16000)]
        expected = onnx_model.classify(window, 16000, max_results=None)
        assert np.abs(result.logits - expected.logits).max() <= 1e-5
        assert np.abs(result.scores - expected.scores).max() <= 1e-5


def test_stream_is_identical_across_chunk_sizes_at_48khz(onnx_model):
    import soxr

    audio = soxr.resample(_golden("clip_10s")["wav"][0], 16000, 48000)
    runs = [_stream_results(onnx_model, audio, chunk, rate=48000, hop_seconds=0.5, context_seconds=3.0)
            for chunk in (480, 48000, "random")]
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other):
            assert np.abs(a.logits - b.logits).max() <= 1e-5


def test_two_streams_on_one_model_in_threads_match_serial_runs(onnx_model):
    clips = [_golden("odd_17s")["wav"][0], _golden("clip_10s")["wav"][0]]
    serial = [_stream_results(onnx_model, clip, 1000) for clip in clips]
    threaded = [None, None]

    def run(i):
        threaded[i] = _stream_results(onnx_model, clips[i], 1000)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a_run, b_run in zip(serial, threaded):
        assert [r.end_s for r in a_run] == [r.end_s for r in b_run]
        for a, b in zip(a_run, b_run):
            np.testing.assert_array_equal(a.logits, b.logits)


def test_stream_rejects_a_rate_change_and_reset_allows_it(onnx_model):
    stream = onnx_model.create_stream()
    stream.accept_waveform(np.zeros(1600, np.float32), 16000)
    with pytest.raises(InvalidAudioError, match=r"sample rate changed mid-stream from 16000 to 48000 Hz.*reset\(\)"):
        stream.accept_waveform(np.zeros(4800, np.float32), 48000)
    stream.reset()
    assert stream.accept_waveform(np.zeros(4800, np.float32), 48000) == []


def test_stream_parameters_are_checked(onnx_model):
    with pytest.raises(InvalidArgumentError, match=r"hop_seconds must be a multiple of 10 ms"):
        onnx_model.create_stream(hop_seconds=0.123)
    with pytest.raises(InvalidArgumentError, match=r"must not exceed context_seconds"):
        onnx_model.create_stream(hop_seconds=2.0, context_seconds=1.0)
    with pytest.raises(InvalidArgumentError, match=r"score_threshold is a probability in \[0, 1\], got 2"):
        onnx_model.create_stream(score_threshold=2)


def test_load_options_are_checked(tiny_bundle):
    with pytest.raises(InvalidArgumentError, match=r"backend must be 'auto', 'onnx' or 'litert', got 'tensorrt'"):
        HearEdge.load(tiny_bundle, backend="tensorrt")
    with pytest.raises(InvalidArgumentError, match=r"num_threads must be a positive int, got 0"):
        HearEdge.load(tiny_bundle, backend="onnx", num_threads=0)


def test_filters_max_results_threshold_allow_and_deny(onnx_model):
    audio = _golden("clip_10s")["wav"][0]
    full = onnx_model.classify(audio, 16000, max_results=None)
    ranked = [c.label for c in full.categories]
    assert [c.label for c in onnx_model.classify(audio, 16000, max_results=2).categories] == ranked[:2]
    threshold = full.categories[1].score
    kept = onnx_model.classify(audio, 16000, max_results=None, score_threshold=threshold).categories
    assert [c.label for c in kept] == ranked[:2]
    assert [c.label for c in onnx_model.classify(audio, 16000, allowlist=[ranked[3]]).categories] == [ranked[3]]
    assert ranked[0] not in [c.label for c in onnx_model.classify(audio, 16000, denylist=[ranked[0]]).categories]


@pytest.mark.parametrize("call, error, message", [
    (lambda m: m.classify(np.zeros(0, np.float32), 16000), InvalidAudioError, r"the audio is empty"),
    (lambda m: m.classify(np.array([0.0, np.nan] * 8000, np.float32), 16000), InvalidAudioError,
     r"8000 sample\(s\) are NaN or infinite"),
    (lambda m: m.classify(np.array([0.0, np.inf] * 8000, np.float32), 16000), InvalidAudioError, r"NaN or infinite"),
    (lambda m: m.classify(np.zeros((2, 2, 16000), np.float32), 16000), InvalidAudioError,
     r"expected shape \(samples,\) or \(samples, channels\), got \(2, 2, 16000\)"),
    (lambda m: m.classify(np.zeros((2, 16000), np.float32), 16000), InvalidAudioError,
     r"more channels \(16000\) than samples \(2\).*pass audio\.T"),
    (lambda m: m.classify(np.zeros(16000, np.float32)), InvalidAudioError, r"sample_rate is required with an array"),
    (lambda m: m.classify(np.zeros(16000, np.float32), 4000), InvalidAudioError,
     r"sample_rate 4000 Hz is outside the supported 8000-192000 Hz"),
    (lambda m: m.classify(np.zeros(16000, np.float32), 384000), InvalidAudioError, r"outside the supported"),
    (lambda m: m.classify(np.zeros(16000, np.float32) + 20000.0, 16000), InvalidAudioError,
     r"float audio peaks at 20000\.0.*divide by 32768"),
    (lambda m: m.classify(np.zeros(16000, np.complex64), 16000), InvalidAudioError, r"dtype complex64 is not audio"),
    (lambda m: m.classify("/no/such/file.wav"), InvalidAudioError, r"audio file /no/such/file\.wav does not exist"),
    (lambda m: m.classify(TINY_GOLDEN / "config.json"), InvalidAudioError, r"is not audio that soundfile can read"),
    (lambda m: m.classify(np.zeros(16000, np.float32), 16000, allowlist=["nope"]), LabelError,
     r"allowlist names labels the model does not have: \['nope'\]"),
    (lambda m: m.classify(np.zeros(16000, np.float32), 16000, max_results=0), InvalidArgumentError,
     r"max_results must be an int >= 1"),
    (lambda m: m.classify(np.zeros(16000, np.float32), 16000, allowlist=["alpha"], denylist=["beta"]),
     InvalidArgumentError,
     r"give allowlist or denylist, not both"),
    (lambda m: m.classify(np.ones(300, np.float32) * 0.1, 16000), AudioTooShortError,
     r"18\.8 ms long; HEAR needs at least 513 samples"),
])
def test_bad_input_raises_a_typed_error_with_a_remedy(onnx_model, call, error, message):
    with pytest.raises(error, match=message):
        call(onnx_model)


def test_shortest_accepted_clip_gives_a_real_answer(onnx_model):
    result = onnx_model.classify(np.random.default_rng(0).uniform(-0.5, 0.5, 513).astype(np.float32), 16000)
    assert np.isfinite(result.logits).all() and len(result.categories) == 5


def test_bundle_errors_at_load(tiny_bundle, tmp_path):
    copy = tmp_path / "b.hearedge"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "acoustic_window.fp32.onnx", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(BundleError, match=r"acoustic_window\.fp32\.onnx fails its hash"):
        HearEdge.load(copy, precision="fp32")  # load verifies the graphs it runs
    (copy / "acoustic_window.fp32.onnx").unlink()
    with pytest.raises(BundleError, match=r"missing its onnx fp32 acoustic_window graph"):
        HearEdge.load(copy, precision="fp32")
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    manifest["schema_version"] = 99
    shutil.copy(tiny_bundle / "acoustic_window.fp32.onnx", copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"schema_version 99 is not one this hear-edge reads"):
        HearEdge.load(copy)
    with pytest.raises(BundleError, match=r"does not exist or is not a folder"):
        HearEdge.load(tmp_path / "nothing.hearedge")


def test_embeddings_and_the_hear_benchmark_api(onnx_model, tiny_bundle):
    audio = _golden("odd_17s")["wav"][0]
    embeddings = onnx_model.embed(audio, 16000)
    assert embeddings.frames.shape == (int(_golden("odd_17s")["num_acoustic_frames"]), 32)
    assert embeddings.scene.shape == (96,)
    np.testing.assert_allclose(embeddings.frame_times_s[:3], [0.005, 0.025, 0.045])
    api = hear_api.load_model(str(tiny_bundle), backend="onnx", precision="fp32")
    assert api.sample_rate == 16000 and api.scene_embedding_size == 96 and api.timestamp_embedding_size == 32
    batch = np.stack([audio[:160000], audio[16000:176000]])
    frames, timestamps = hear_api.get_timestamp_embeddings(batch, api)
    assert frames.shape == (2, 500, 32) and timestamps.shape == (2, 500)
    assert frames.dtype == np.float32 and timestamps.dtype == np.float32
    steps = np.diff(timestamps, axis=1)
    np.testing.assert_allclose(steps, 20.0, atol=1e-3)  # evenly spaced, in milliseconds
    scenes = hear_api.get_scene_embeddings(batch, api)
    assert scenes.shape == (2, 96) and scenes.dtype == np.float32
    np.testing.assert_allclose(frames[0], onnx_model.embed(batch[0], 16000).frames, atol=1e-6)


def test_hear_api_returns_torch_for_torch_input(tiny_bundle):
    torch = pytest.importorskip("torch")
    api = hear_api.load_model(str(tiny_bundle), backend="onnx", precision="fp32")
    frames, timestamps = hear_api.get_timestamp_embeddings(torch.zeros(1, 16000) + 0.01, api)
    assert isinstance(frames, torch.Tensor) and frames.dtype == torch.float32 and frames.shape == (1, 50, 32)


NO_TORCH = BLOCK_TORCH + """
import sys
import numpy as np
from hear_edge import HearEdge
for backend in ('onnx', 'litert'):
    model = HearEdge.load(sys.argv[1], backend=backend, precision='fp32')
    result = model.classify(np.load(sys.argv[2])['wav'][0], 16000)
    stream = model.create_stream(hop_seconds=1.0, context_seconds=2.0)
    stream.accept_waveform(np.zeros(40000, np.float32) + 0.01, 16000)
    print(backend, result.top.label)
"""


def test_classify_runs_where_torch_cannot_be_imported(tiny_bundle):
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(tiny_bundle), str(TINY_GOLDEN / "clip_10s.npz")],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["onnx", "beta", "litert", "beta"]


def test_cli_classify_stream_embed_and_info(tiny_bundle, tmp_path):
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, _golden("clip_10s")["wav"][0], 16000)

    def cli(*args):
        result = subprocess.run([sys.executable, "-m", "hear_edge.cli", *map(str, args)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert cli("classify", clip, "--bundle", tiny_bundle).startswith(f"{clip}: beta ")
    line = json.loads(cli("classify", clip, "--bundle", tiny_bundle, "--json", "--top-k", "2"))
    assert [c["label"] for c in line["categories"]] == ["beta", line["categories"][1]["label"]]
    assert len(cli("stream", clip, "--bundle", tiny_bundle, "--all").strip().splitlines()) == 10
    assert 1 <= len(cli("stream", clip, "--bundle", tiny_bundle).strip().splitlines()) < 10  # detections
    assert "frame embeddings: 500 x 32" in cli("embed", clip, "--bundle", tiny_bundle, "-o", tmp_path / "e.npz")
    info = cli("info", tiny_bundle)
    assert "labels (5): alpha, beta, gamma, delta, epsilon" in info and "parity gate: passed" in info
