"""Audio in: files and arrays checked in one place, integer PCM scaled, any rate resampled to 16 kHz."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InvalidAudioError
from .frontend import SAMPLE_RATE_HZ

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif"}
MIN_RATE_HZ = 8000
MAX_RATE_HZ = 192000
# Float audio whose peak is above this is almost surely integer PCM stored as float.
_FLOAT_PEAK_LIMIT = 16.0


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file with soundfile: (samples, channels) float32 in [-1, 1] and its rate."""
    import soundfile

    path = Path(path)
    if not path.exists():
        raise InvalidAudioError(f"audio file {path} does not exist.")
    if not path.is_file():
        raise InvalidAudioError(f"{path} is not a file; pass the path of an audio file.")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as error:
        raise InvalidAudioError(f"{path} is not audio that soundfile can read ({error}); formats it reads "
                                f"include WAV, FLAC, OGG/Vorbis, Opus and MP3.") from None
    return samples, int(rate)


def scale_pcm(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] from float or integer PCM (int16 / 32768, int32 / 2**31, uint8 centred at 128)."""
    if np.issubdtype(audio.dtype, np.floating):
        audio = audio.astype(np.float32, copy=False)
        if audio.size and np.isfinite(audio).all():
            peak = float(np.abs(audio).max())
            if peak > _FLOAT_PEAK_LIMIT:
                raise InvalidAudioError(
                    f"float audio peaks at {peak:.1f}; float samples are expected in [-1, 1]. If this is "
                    f"16-bit PCM stored as float, divide by 32768 (or pass it as int16).")
        return audio
    if audio.dtype == np.uint8:
        return (audio.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(audio.dtype, np.signedinteger):
        return (audio.astype(np.float64) / float(np.iinfo(audio.dtype).max + 1)).astype(np.float32)
    raise InvalidAudioError(f"audio dtype {audio.dtype} is not audio: pass float32/float64 in [-1, 1] "
                            f"or integer PCM (int16, int32, uint8).")


def check_sample_rate(sample_rate) -> int:
    if sample_rate is None:
        raise InvalidAudioError("sample_rate is required with an array: pass the rate the audio was "
                                "recorded at, e.g. classify(audio, sample_rate=48000).")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float, np.floating)) \
            or float(sample_rate) != int(sample_rate):
        raise InvalidAudioError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}.")
    rate = int(sample_rate)
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise InvalidAudioError(f"sample_rate {rate} Hz is outside the supported {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz; "
                                f"check the value, or resample the audio into that range first.")
    return rate


def check_array(audio, what: str = "audio") -> np.ndarray:
    """Validate soundfile's layout, (samples,) or (samples, channels); return (samples, channels) float32."""
    if not isinstance(audio, np.ndarray):
        raise InvalidAudioError(f"{what}: expected a numpy array or a file path, got {type(audio).__name__}.")
    if audio.ndim not in (1, 2):
        raise InvalidAudioError(f"{what}: expected shape (samples,) or (samples, channels), got {audio.shape}.")
    if audio.size == 0:
        raise InvalidAudioError(f"{what}: the audio is empty (shape {audio.shape}); pass at least 32 ms of sound.")
    if audio.ndim == 2 and audio.shape[1] > audio.shape[0]:
        raise InvalidAudioError(
            f"{what}: shape {audio.shape} has more channels ({audio.shape[1]}) than samples "
            f"({audio.shape[0]}); audio arrays are (samples, channels) as soundfile returns them. "
            f"If yours is (channels, samples), pass audio.T.")
    audio = scale_pcm(audio)
    if not np.isfinite(audio).all():
        bad = int(audio.size - np.count_nonzero(np.isfinite(audio)))
        raise InvalidAudioError(f"{what}: {bad} sample(s) are NaN or infinite; clean or drop them first.")
    return audio if audio.ndim == 2 else audio[:, None]


def resample(audio: np.ndarray, rate_hz: int, target_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Band-limited (soxr, high quality) resampling of (samples, channels) float32."""
    if rate_hz == target_hz:
        return audio
    import soxr

    return soxr.resample(audio, rate_hz, target_hz, quality="HQ").astype(np.float32, copy=False)


def load_input(audio, sample_rate=None, what: str = "audio") -> np.ndarray:
    """A path or an array at any supported rate -> (channels, samples) float32 at 16 kHz."""
    if isinstance(audio, (str, Path)):
        if sample_rate is not None:
            raise InvalidAudioError(f"{what}: sample_rate is read from the file; drop sample_rate= "
                                    f"when passing a path.")
        audio, sample_rate = read_audio(audio)
    rate = check_sample_rate(sample_rate)
    samples = resample(check_array(audio, what), rate)
    return np.ascontiguousarray(samples.T)
