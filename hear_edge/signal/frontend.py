"""HEAR's log-mel and log-power frontend in numpy: the official `Preprocessor`, without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from hear_edge.errors import AudioTooShortError, InvalidAudioError

SAMPLE_RATE_HZ = 16000
# Frames per FFT block: the complex128 spectra of a 30 s segment would take 25 MB at once;
# 32 frames keep every float64 temporary under 0.3 MB, in cache (Intel Xeon: 5-20 % faster than 64
# at 1-10 s, 16 and 48 slower, 128 and 256 up to 2x slower; AMD EPYC with the mel in dense blocks:
# 48-64 up to 7 % faster at 1-10 s, 64 and more 20 % slower at 30 s). Every path that makes features
# goes through these blocks, so a frame's mel product has one shape whatever the clip.
_BLOCK_FRAMES = 32
# Dense blocks of the mel filterbank (LogMelFrontend._mel_blocks): 8 ran fastest at 32 frames (6 and 12
# within 10 %, 4 and 16 15-25 % slower).
_MEL_BLOCKS = 8


def mel_filterbank(sample_rate_hz: int, n_fft: int, num_mel_bins: int,
                   f_min_hz: float = 0.0, f_max_hz: float | None = None) -> np.ndarray:
    """HTK-scale triangular filters without area normalisation, shape (n_fft // 2 + 1, num_mel_bins)."""
    f_max_hz = sample_rate_hz / 2 if f_max_hz is None else f_max_hz
    fft_freqs_hz = np.linspace(0.0, sample_rate_hz // 2, n_fft // 2 + 1)
    mel_min, mel_max = (2595.0 * np.log10(1.0 + f / 700.0) for f in (f_min_hz, f_max_hz))
    edges_hz = 700.0 * (10.0 ** (np.linspace(mel_min, mel_max, num_mel_bins + 2) / 2595.0) - 1.0)
    edge_gaps_hz = np.diff(edges_hz)
    slopes = edges_hz[None, :] - fft_freqs_hz[:, None]
    falling = -slopes[:, :-2] / edge_gaps_hz[:-1]
    rising = slopes[:, 2:] / edge_gaps_hz[1:]
    return np.maximum(0.0, np.minimum(falling, rising))


@dataclass(frozen=True)
class FrontendParams:
    """Every number the frontend needs; travels in a bundle's manifest."""

    sample_rate_hz: int = SAMPLE_RATE_HZ
    n_fft: int = 1024
    window_samples: int = 400
    hop_samples: int = 160
    num_mel_bins: int = 128
    log_offset: float = 1e-6
    norm_eps: float = 1e-6

    def to_dict(self) -> dict:
        return asdict(self)


class LogMelFrontend:
    """Framing, Hann-windowed FFT, HTK mel and log, as the official torchaudio transforms do.

    Frames are centred (reflect padding of n_fft // 2), so a clip of n samples gives
    n // hop + 1 frames. The power spectrum uses the same frames.
    """

    def __init__(self, params: FrontendParams = FrontendParams()):
        self.params = params

    @cached_property
    def window(self) -> np.ndarray:
        n = self.params.window_samples
        return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)  # periodic Hann, as torch.hann_window

    @cached_property
    def mel_filters(self) -> np.ndarray:
        p = self.params
        return mel_filterbank(p.sample_rate_hz, p.n_fft, p.num_mel_bins)

    @cached_property
    def _mel_blocks(self) -> list[tuple[slice, slice, np.ndarray]]:
        """The filterbank as dense blocks (bands, bins, weights (bands, bins)): consecutive bands with
        the contiguous range of bins their triangles cover, cut so that the blocks' bands span about
        equal sums of bins.
        Each triangle covers a few bins, so the projection is ~8,500 products a frame instead of
        65,664, in _MEL_BLOCKS small matrix products (5-7x faster than summing runs of bins with
        reduceat, whose per-row overhead dominated; the dense product is 2-5x slower)."""
        covered = self.mel_filters > 0
        bins, bands = covered.shape
        has_bins = covered.any(axis=0)
        first = np.where(has_bins, covered.argmax(axis=0), bins)
        stop = np.where(has_bins, bins - covered[::-1].argmax(axis=0), 0)
        work = np.cumsum(np.maximum(stop - first, 1))
        cuts = np.searchsorted(work, work[-1] * np.arange(1, _MEL_BLOCKS) / _MEL_BLOCKS)
        blocks = []
        for start, end in zip([0, *cuts], [*cuts, bands]):
            if end <= start:
                continue
            low = int(first[start:end].min())
            high = max(int(stop[start:end].max()), low)  # bands without bins: an empty range, zero sums
            blocks.append((slice(int(start), int(end)), slice(low, high),
                           np.ascontiguousarray(self.mel_filters[low:high, start:end].T)))
        return blocks

    def mel_power(self, power: np.ndarray) -> np.ndarray:
        """(frames, bins) power -> (frames, mels) through the mel filterbank, float64."""
        return self._mel_bins_first(np.ascontiguousarray(power.T)).T

    def _mel_bins_first(self, power_t: np.ndarray) -> np.ndarray:
        """(bins, frames) C-contiguous power -> (mels, frames), float64."""
        mel = np.empty((self.params.num_mel_bins, power_t.shape[1]))
        for bands, bins, weights in self._mel_blocks:
            np.matmul(weights, power_t[bins], out=mel[bands])
        return mel

    @property
    def min_samples(self) -> int:
        return self.params.n_fft // 2 + 1  # reflect padding needs more samples than it pads

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.params.hop_samples + 1

    @cached_property
    def window_spectrum(self) -> np.ndarray:
        """Spectrum of a constant 1 through the window: what a DC offset adds to every frame."""
        return np.fft.rfft(self.window, n=self.params.n_fft)

    def spectra(self, padded: np.ndarray, first_frame: int, num_frames: int) -> np.ndarray:
        """Complex spectra (num_frames, n_fft // 2 + 1) of frames of an already reflect-padded signal."""
        return self.frame_fft(num_frames)(padded, self.frame_start(first_frame), num_frames)

    def padded_range(self, signal: np.ndarray, first: int, stop: int) -> np.ndarray:
        """Samples [first, stop) of `signal` reflect-padded by n_fft // 2 on each side, as `log_features` pads a
        clip, built for that range only (a stream window's edge frames need ~900 of its 17,024). The signal
        has at least `min_samples`, so one reflection reaches every padded sample."""
        last = len(signal) - 1
        index = np.abs(np.arange(first - self.params.n_fft // 2, stop - self.params.n_fft // 2))
        return signal[np.where(index > last, 2 * last - index, index)]

    def frame_start(self, frame: int) -> int:
        """Where frame `frame`'s window starts in the reflect-padded signal. Only the window's 400 samples
        are non-zero inside the 1024-sample frame; moving them to the frame's start changes the FFT's
        phase, not its power."""
        p = self.params
        return frame * p.hop_samples + (p.n_fft - p.window_samples) // 2

    def frame_fft(self, max_frames: int = _BLOCK_FRAMES) -> _FrameFft:
        """Spectra of Hann-windowed frames one hop apart, up to `max_frames` a call, through one reused buffer:
        `fft(signal, first_sample, num_frames, out=None)`, `first_sample` where the first window starts."""
        return _FrameFft(self, max_frames)

    def log_features_of_blocks(self, num_frames: int, block_spectra) -> tuple[np.ndarray, np.ndarray]:
        """Float32 (log mel (frames, mels), log power (frames, bins)) of `num_frames` frames whose complex
        spectra `block_spectra(first, count, out)` writes into `out` ((count, bins) complex128),
        _BLOCK_FRAMES frames at a time into one reused buffer: no whole-clip complex or float64 array.
        The power and the mel sums stay float64; only the logs, whose rounding is 6e-8 relative, are float32.
        Every path that makes features (a clip's, a stream window's) goes through these blocks: a matrix
        product's sums may depend on its shape, so a frame goes through the same products on every path and
        a stream's window equals its clip bit for bit."""
        p = self.params
        log_mel = np.empty((num_frames, p.num_mel_bins), np.float32)
        log_power = np.empty((num_frames, p.n_fft // 2 + 1), np.float32)
        spectra = np.empty((min(_BLOCK_FRAMES, num_frames), p.n_fft // 2 + 1), np.complex128)
        for first in range(0, num_frames, _BLOCK_FRAMES):
            count = min(_BLOCK_FRAMES, num_frames - first)
            block = spectra[:count]
            block_spectra(first, count, block)
            self._log_features_into(block, log_mel[first:first + count], log_power[first:first + count])
        return log_mel, log_power

    def _log_features_into(self, spectra: np.ndarray, log_mel: np.ndarray, log_power: np.ndarray) -> None:
        """One block of `log_features_of_blocks`, written into the given float32 arrays, with two float64
        temporaries (the power, bins first, and the mel sums) instead of seven."""
        offset = self.params.log_offset
        power = np.square(spectra.real)
        power += np.square(spectra.imag)
        mel_t = self._mel_bins_first(np.ascontiguousarray(power.T))
        mel_t += offset
        log_mel.T[...] = np.log(mel_t, out=mel_t)
        power += offset
        log_power[...] = np.log(power, out=power)

    def features_from_log(self, log_mel: np.ndarray, log_power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-clip normalisation of (frames, bins) logs -> model inputs (bins, frames) float32."""
        return self.normalize(log_mel).T, self.normalize(log_power).T

    def log_features(self, mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalised float32 (log_mel (frames, mels), log_power (frames, bins)) of a mono float64
        signal, computed block by block (`log_features_of_blocks`)."""
        padded = np.pad(mono, self.params.n_fft // 2, mode="reflect")
        frames = self.num_frames(mono.shape[0])
        fft = self.frame_fft(min(_BLOCK_FRAMES, frames))
        return self.log_features_of_blocks(
            frames, lambda first, count, out: fft(padded, self.frame_start(first), count, out))

    def normalize(self, log_spectrum: np.ndarray) -> np.ndarray:
        """Zero mean, unit (biased) std over every frame and bin; statistics accumulated in float64."""
        mean = float(log_spectrum.mean(dtype=np.float64))
        centred = (log_spectrum - np.float32(mean)).astype(np.float32, copy=False)
        std = float(np.sqrt(np.mean(np.square(centred), dtype=np.float64)))
        centred *= np.float32(1.0 / (std + self.params.norm_eps))
        return centred

    def __call__(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mono = downmix(waveform)
        if mono.shape[0] < self.min_samples:
            raise AudioTooShortError(
                f"audio has {mono.shape[0]} samples; the frontend needs at least {self.min_samples} "
                f"({1000 * self.min_samples / self.params.sample_rate_hz:.1f} ms at "
                f"{self.params.sample_rate_hz} Hz). Pad the clip or pass a longer one.")
        return self.features_from_log(*self.log_features(mono))


# numpy 2 writes an FFT into a given array; numpy 1 returns a new one.
_RFFT_TAKES_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


class _FrameFft:
    """Spectra of Hann-windowed frames through one zero-padded (frames, n_fft) buffer, reused call after
    call: rfft(x, n=n_fft) would pad each call's frames into a new array (6 % of a 1 s clip's frontend)."""

    def __init__(self, frontend: LogMelFrontend, max_frames: int):
        self.params, self.window, self.max_frames = frontend.params, frontend.window, max_frames
        self.padded = np.zeros((max_frames, frontend.params.n_fft))

    def __call__(self, signal: np.ndarray, first_sample: int, num_frames: int, out: np.ndarray | None = None):
        p = self.params
        step = signal.strides[0]
        if signal.flags.c_contiguous:  # a view on the signal's own buffer (10x cheaper than as_strided)
            frames = np.ndarray((num_frames, p.window_samples), signal.dtype, signal, first_sample * step,
                                (p.hop_samples * step, step))
        else:
            frames = np.lib.stride_tricks.as_strided(signal[first_sample:], shape=(num_frames, p.window_samples),
                                                     strides=(p.hop_samples * step, step), writeable=False)
        padded = self.padded[:num_frames]
        np.multiply(frames, self.window, out=padded[:, :p.window_samples])
        if out is None:
            return np.fft.rfft(padded, axis=-1)
        if _RFFT_TAKES_OUT:
            return np.fft.rfft(padded, axis=-1, out=out)
        out[...] = np.fft.rfft(padded, axis=-1)
        return out


def downmix(waveform: np.ndarray) -> np.ndarray:
    """Per-channel DC removal, then the channel mean, in float64: the official order."""
    waveform = np.asarray(waveform, dtype=np.float64)
    if waveform.ndim == 1:
        waveform = waveform[None, :]
    waveform = waveform - waveform.mean(axis=-1, keepdims=True)
    return waveform.mean(axis=0)


def check_float_waveform(waveform, sample_rate: int, *, what: str = "audio") -> np.ndarray:
    """Validate float audio in the frontend's (samples,) / (channels, samples) layout."""
    if not isinstance(waveform, np.ndarray):
        raise InvalidAudioError(f"{what}: expected a numpy array, got {type(waveform).__name__}. "
                                f"Wrap it with np.asarray(..., dtype=np.float32).")
    if not np.issubdtype(waveform.dtype, np.floating):
        hint = (f" Scale integer PCM first: x.astype(np.float32) / {np.iinfo(waveform.dtype).max + 1}."
                if np.issubdtype(waveform.dtype, np.integer) else "")
        raise InvalidAudioError(f"{what}: expected float32 or float64 samples in [-1, 1], got dtype "
                                f"{waveform.dtype}.{hint}")
    if sample_rate != SAMPLE_RATE_HZ:
        raise InvalidAudioError(f"{what}: expected {SAMPLE_RATE_HZ} Hz audio, got sample_rate={sample_rate}. "
                                f"Resample to 16 kHz first (HearEdge.classify does it for you).")
    if waveform.ndim not in (1, 2):
        raise InvalidAudioError(f"{what}: expected shape (samples,) or (channels, samples), got "
                                f"{waveform.shape}.")
    if waveform.size == 0:
        raise InvalidAudioError(f"{what}: the waveform is empty (shape {waveform.shape}); pass at least "
                                f"one frame of audio.")
    if waveform.ndim == 2 and waveform.shape[0] > waveform.shape[1]:
        raise InvalidAudioError(f"{what}: shape {waveform.shape} has more channels than samples; this "
                                f"function takes (channels, samples). Transpose (samples, channels) input "
                                f"with waveform.T.")
    if not np.isfinite(waveform).all():
        bad = int(np.size(waveform) - np.count_nonzero(np.isfinite(waveform)))
        raise InvalidAudioError(f"{what}: {bad} sample(s) are NaN or infinite; clean or drop them first.")
    return waveform


_DEFAULT_FRONTEND = LogMelFrontend()


def compute_features(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> tuple[np.ndarray, np.ndarray]:
    """Compute HEAR's normalised log-mel and log-power spectrograms.

    Args:
        waveform: float32/float64 samples in [-1, 1], shape (samples,) or (channels, samples).
            Channels are DC-corrected and averaged, as the official preprocessor does.
        sample_rate: must be 16000; resample other rates before calling.

    Returns:
        (log_mel (128, frames), power_spectrum (513, frames)), float32, each normalised over
        the whole clip to zero mean and unit standard deviation. frames = samples // 160 + 1.

    Raises:
        InvalidAudioError: for integer, empty, non-finite or wrongly shaped input or another rate.
        AudioTooShortError: for fewer than 513 samples.
    """
    waveform = check_float_waveform(waveform, sample_rate, what="compute_features")
    return _DEFAULT_FRONTEND(waveform)
