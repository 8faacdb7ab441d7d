import numpy as np
import pytest

from conftest import TINY_CASES, TINY_GOLDEN
from hear_edge import compute_features
from hear_edge.errors import AudioTooShortError, InvalidAudioError
from hear_edge.signal.frontend import FrontendParams, LogMelFrontend, mel_filterbank

FEATURE_BOUND = 1e-3


@pytest.mark.parametrize("case", TINY_CASES)
def test_features_match_official_preprocessor(case):
    golden = np.load(TINY_GOLDEN / f"{case}.npz")
    log_mel, power = compute_features(golden["wav"])
    assert log_mel.dtype == np.float32 and power.dtype == np.float32
    assert log_mel.shape == golden["log_mel"].shape and power.shape == golden["power_spectrum"].shape
    assert log_mel.shape[1] == int(golden["num_frames"])
    assert np.abs(log_mel - golden["log_mel"]).max() <= FEATURE_BOUND
    assert np.abs(power - golden["power_spectrum"]).max() <= FEATURE_BOUND


def test_full_size_features(full_golden):
    golden = np.load(full_golden / "clip_10s.npz")
    log_mel, power = compute_features(golden["wav"])
    assert np.abs(log_mel - golden["log_mel"]).max() <= FEATURE_BOUND
    assert np.abs(power - golden["power_spectrum"]).max() <= FEATURE_BOUND


def test_mel_filterbank_equals_the_checkpoint_buffer():
    torch = pytest.importorskip("torch")
    state = torch.load(TINY_GOLDEN / "state_dict.pt", weights_only=True)
    official = state["preprocessor.mel_spectrogram.mel_scale.fb"].numpy()
    assert np.abs(mel_filterbank(16000, 1024, 128) - official).max() <= 1e-4


def test_frame_count_and_mono_equivalence():
    rng = np.random.default_rng(0)
    wav = rng.uniform(-0.5, 0.5, 16000 + 77).astype(np.float32)
    log_mel, power = compute_features(wav)
    assert log_mel.shape == (128, (16000 + 77) // 160 + 1) and power.shape == (513, log_mel.shape[1])
    log_mel_2d, _ = compute_features(wav[None, :])
    np.testing.assert_array_equal(log_mel, log_mel_2d)


def test_float64_input_is_accepted():
    wav = np.random.default_rng(1).uniform(-0.5, 0.5, 8000)
    log_mel64, _ = compute_features(wav)
    log_mel32, _ = compute_features(wav.astype(np.float32))
    assert np.abs(log_mel64 - log_mel32).max() < 1e-3


@pytest.mark.parametrize("wav, sample_rate, message", [
    (np.zeros(0, np.float32), 16000, r"empty"),
    (np.zeros((2, 0), np.float32), 16000, r"empty"),
    (np.array([0.1, np.nan] * 1000, np.float32), 16000, r"1000 sample\(s\) are NaN or infinite"),
    (np.array([0.1, np.inf] * 1000, np.float32), 16000, r"NaN or infinite"),
    (np.zeros(16000, np.int16), 16000, r"expected float32 or float64.*got dtype int16.*/ 32768"),
    (np.zeros(16000, np.int32), 16000, r"got dtype int32"),
    (np.zeros(16000, np.float32), 44100, r"expected 16000 Hz audio, got sample_rate=44100.*Resample"),
    (np.zeros((1, 1, 16000), np.float32), 16000, r"expected shape \(samples,\) or \(channels, samples\)"),
    (np.zeros((16000, 2), np.float32), 16000, r"more channels than samples.*waveform\.T"),
    ([0.0] * 16000, 16000, r"expected a numpy array, got list"),
])
def test_bad_input_raises_a_clear_error(wav, sample_rate, message):
    with pytest.raises(InvalidAudioError, match=message):
        compute_features(wav, sample_rate)


def test_too_short_audio_raises():
    with pytest.raises(AudioTooShortError, match=r"has 512 samples; the frontend needs at least 513"):
        compute_features(np.zeros(512, np.float32))
    assert LogMelFrontend().min_samples == 513
    compute_features(np.random.default_rng(0).uniform(-1, 1, 513).astype(np.float32))


def _plain_log_features(frontend: LogMelFrontend, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frontend written plainly: every frame's 1024-point FFT, the dense filterbank product, the logs."""
    p = frontend.params
    padded = np.pad(mono, p.n_fft // 2, mode="reflect")
    frames = np.stack([padded[i * p.hop_samples:i * p.hop_samples + p.n_fft] for i in range(frontend.num_frames(len(mono)))])
    window = np.zeros(p.n_fft)
    start = (p.n_fft - p.window_samples) // 2
    window[start:start + p.window_samples] = frontend.window
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    return (np.log(power @ frontend.mel_filters + p.log_offset).astype(np.float32),
            np.log(power + p.log_offset).astype(np.float32))


@pytest.mark.parametrize("samples", [600, 16000, 16000 * 2 + 333])  # one block, several, a partial last one
def test_block_wise_in_place_frontend_equals_the_plain_formula(samples):
    # log_features sums the mel bands over rows of bins-first power, block by block, in place.
    frontend = LogMelFrontend()
    mono = np.random.default_rng(samples).uniform(-0.5, 0.5, samples)
    mono -= mono.mean()
    log_mel, log_power = frontend.log_features(mono)
    plain_mel, plain_power = _plain_log_features(frontend, mono)
    assert log_mel.dtype == np.float32 and log_power.dtype == np.float32
    np.testing.assert_allclose(log_mel, plain_mel, rtol=0, atol=1e-5)
    np.testing.assert_allclose(log_power, plain_power, rtol=0, atol=1e-5)
    # The stream's path: each block's spectra written by the caller (here a frame at a time), the same numbers.
    padded = np.pad(mono, 512, mode="reflect")

    def frame_by_frame(first, count, out):
        for row in range(count):
            out[row] = frontend.spectra(padded, first + row, 1)[0]

    for from_blocks, blocked in zip(frontend.log_features_of_blocks(log_mel.shape[0], frame_by_frame),
                                    (log_mel, log_power)):
        np.testing.assert_array_equal(from_blocks, blocked)


@pytest.mark.parametrize("n_fft, window_samples", [(1024, 400), (256, 256)])  # 256: 14 bands cover no bin
def test_mel_power_equals_the_dense_filterbank_product(n_fft, window_samples):
    frontend = LogMelFrontend(FrontendParams(n_fft=n_fft, window_samples=window_samples))
    power = np.random.default_rng(3).exponential(1.0, (37, n_fft // 2 + 1))
    dense = power @ frontend.mel_filters
    np.testing.assert_allclose(frontend.mel_power(power), dense, rtol=1e-12, atol=0)
