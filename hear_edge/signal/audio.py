"""Audio in: files and arrays checked in one place, integer PCM scaled, any rate resampled to 16 kHz."""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hear_edge.errors import InvalidAudioError
from .frontend import SAMPLE_RATE_HZ

# The file suffixes a folder is searched for (classify, training, calibration): what libsndfile reads.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
                            ".snd", ".caf", ".w64", ".rf64"})
# Formats (soundfile's `format`) whose header frame count is exact, so a short read means a truncated
# file. Others (MP3: a header's count is an estimate, off by the encoder's padding) are what decodes.
EXACT_FRAME_COUNT_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF", "AU", "CAF", "OGG"})
# A chunk of one frame, shape (1, c), is taken as one frame of c channels up to this many channels
# (more: it is a (channels, samples) array to transpose); see `check_array`.
MAX_ONE_FRAME_CHANNELS = 8
MIN_RATE_HZ = 8000
MAX_RATE_HZ = 192000
# Float audio is in [-1, 1]; up to +6 dB over is kept for slightly overdriven float audio (inter-sample
# peaks, resampler ringing, gain staging). Beyond that it is a scaling error, e.g. PCM stored as float.
_FLOAT_PEAK_LIMIT = 2.0
_INT16_PEAK = 32768
READ_BLOCK_FRAMES = 1 << 16


def audio_blocks(path: str | Path, block_frames: int = READ_BLOCK_FRAMES) -> tuple[Iterator[np.ndarray], int]:
    """Open an audio file: an iterator of (frames, channels) float32 blocks, and its sample rate.

    The one file reader: non-regular files (pipes, devices, folders) are refused before they are
    opened, since reading one can block forever; a file with fewer frames than its header declares
    (truncated: only for formats whose count is exact, `EXACT_FRAME_COUNT_FORMATS`; an MP3's count
    is an estimate, so what decodes is the audio), damaged data or NaN samples raises when the blocks
    reach it; the file is closed on every path.

    Raises:
        InvalidAudioError: missing, not a regular file, not audio, an unsupported rate; while
            iterating: truncated, damaged, or non-finite samples.
    """
    import soundfile

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InvalidAudioError(f"audio file {path} does not exist.") from None
    except OSError as error:
        raise InvalidAudioError(f"audio file {path} cannot be read ({error.strerror}); check the path and "
                                f"its permissions.") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a pipe (FIFO)" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device or other special file")
        raise InvalidAudioError(f"{path} is {kind}, not a regular file; pass the path of an audio file.")
    try:
        # Non-blocking, so a file swapped for a pipe since the stat cannot block the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        raise InvalidAudioError(f"audio file {path} cannot be opened ({error.strerror}); check its "
                                f"permissions.") from None
    handle = os.fdopen(fd, "rb")
    try:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise InvalidAudioError(f"{path} is not a regular file; pass the path of an audio file.")
        declared = _wav_declared_frames(handle)
        handle.seek(0)
        try:
            sound = soundfile.SoundFile(handle)
        except (RuntimeError, ValueError, TypeError) as error:  # soundfile's LibsndfileError is a RuntimeError
            raise InvalidAudioError(f"{path} is not audio that soundfile can read ({_reason(error)}); formats "
                                    f"it reads include WAV, FLAC, OGG/Vorbis, Opus and MP3.") from None
        try:
            rate = check_sample_rate(sound.samplerate)
        except InvalidAudioError as error:
            sound.close()
            raise InvalidAudioError(f"{path}: {error}") from None
        if sound.format not in EXACT_FRAME_COUNT_FORMATS:
            declared = None
        elif declared is None and sound.frames > 0:
            declared = sound.frames
    except BaseException:
        handle.close()
        raise
    return _read_blocks(path, handle, sound, rate, declared, block_frames), rate


def _read_blocks(path, handle, sound, rate: int, declared: int | None, block_frames: int) -> Iterator[np.ndarray]:
    read = 0
    try:
        while True:
            try:
                block = sound.read(block_frames, dtype="float32", always_2d=True)
            except RuntimeError as error:
                raise InvalidAudioError(f"{path} is damaged {read / rate:.2f} s in ({_reason(error)}); re-copy "
                                        f"or re-encode the file.") from None
            if not len(block):
                break
            if not np.isfinite(block).all():
                raise InvalidAudioError(f"{path} holds NaN or infinite samples; clean the file first.")
            read += len(block)
            yield block
        if declared is not None and read < declared:
            raise InvalidAudioError(
                f"{path} is truncated: its header declares {declared} frames ({declared / rate:.2f} s) but "
                f"only {read} ({read / rate:.2f} s) could be read. Re-copy the file, or re-encode what is "
                f"left so that its header matches.")
    finally:
        sound.close()
        handle.close()


def _reason(error: Exception) -> str:
    """libsndfile's own words, without the repr of the file object soundfile was handed."""
    reason = getattr(error, "error_string", None) or str(error)
    return re.sub(r"(Error opening )?<[^<>]*>:?\s*", "", reason).strip().rstrip(".") or type(error).__name__


def _wav_declared_frames(handle) -> int | None:
    """Frames a RIFF/RF64 WAV header declares (libsndfile silently shortens it to what is there); else None."""
    head = handle.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    block_align, rf64_data_bytes = None, None
    for _ in range(256):
        chunk = handle.read(8)
        if len(chunk) < 8:
            return None
        name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        if name == b"data":
            if head[:4] == b"RF64" and size == 0xFFFFFFFF:
                size = rf64_data_bytes
            if not block_align or not size or size == 0xFFFFFFFF:  # length unknown, as a streamed WAV writes
                return None
            return size // block_align
        body = handle.read(min(size, 28))
        if name == b"fmt " and len(body) >= 14:
            block_align = int.from_bytes(body[12:14], "little")
        elif name == b"ds64" and len(body) >= 16:
            rf64_data_bytes = int.from_bytes(body[8:16], "little")
        handle.seek(size + (size & 1) - len(body), os.SEEK_CUR)
    return None


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a whole file: (samples, channels) float32 in [-1, 1] and its rate (see `audio_blocks`)."""
    blocks, rate = audio_blocks(path)
    blocks = list(blocks)
    if not blocks:
        return np.zeros((0, 1), np.float32), rate
    return np.concatenate(blocks), rate


def scale_pcm(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """float32 in [-1, 1] from float or integer PCM (int16 / 32768, int32 / 2**31, uint8 centred at 128)."""
    if np.issubdtype(audio.dtype, np.floating):
        audio = audio.astype(np.float32, copy=False)
        if audio.size and np.isfinite(audio).all():
            peak = float(np.abs(audio).max())
            if peak > _FLOAT_PEAK_LIMIT:
                raise InvalidAudioError(
                    f"{what}: float audio peaks at {peak:.1f}; float samples are expected in [-1, 1] (peaks "
                    f"up to {_FLOAT_PEAK_LIMIT:g} pass as overdriven). If this is 16-bit PCM stored as float, "
                    f"divide by 32768 (or pass it as int16); if it is float audio that is too loud, divide it "
                    f"by its peak.")
        return audio
    if audio.dtype == np.uint8:
        return (audio.astype(np.float32) - 128.0) / 128.0
    if audio.dtype == np.int32 and audio.size:
        peak = int(np.abs(audio.astype(np.int64)).max())
        if 0 < peak <= _INT16_PEAK:
            raise InvalidAudioError(
                f"{what}: int32 samples peaking at {peak} fit 16-bit PCM, but as 32-bit PCM they would be "
                f"{20 * math.log10(peak / 2 ** 31):.0f} dBFS, near silence; the scale is ambiguous. Pass "
                f"audio.astype(np.int16) if they are 16-bit values, or float32 in [-1, 1].")
    if audio.dtype in (np.int8, np.int16, np.int32):
        return (audio.astype(np.float64) / float(np.iinfo(audio.dtype).max + 1)).astype(np.float32)
    if audio.dtype == np.int64:
        raise InvalidAudioError(
            f"{what}: int64 samples (what np.array(list_of_ints) gives) have no PCM scale: as 64-bit PCM, "
            f"16-bit values would be silence. Pass audio.astype(np.int16) for 16-bit PCM, "
            f"audio.astype(np.int32) for 32-bit PCM, or float32 in [-1, 1].")
    raise InvalidAudioError(f"{what}: audio dtype {audio.dtype} is not audio: pass float32/float64 in [-1, 1] "
                            f"or integer PCM (int16, int32, int8, uint8).")


def check_sample_rate(sample_rate) -> int:
    """The rate as an int Hz, refused unless it is a finite whole number in the supported range."""
    if sample_rate is None:
        raise InvalidAudioError("sample_rate is required with an array: pass the rate the audio was "
                                "recorded at, e.g. classify(audio, sample_rate=48000).")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float, np.floating)) \
            or (isinstance(sample_rate, (float, np.floating))
                and (not math.isfinite(sample_rate) or float(sample_rate) != math.floor(sample_rate))):
        raise InvalidAudioError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}; pass the rate "
                                f"the audio was recorded at, e.g. 16000.")
    rate = int(sample_rate)
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise InvalidAudioError(f"sample_rate {rate} Hz is outside the supported {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz; "
                                f"check the value, or resample the audio into that range first.")
    return rate


def check_array(audio, what: str = "audio", allow_empty: bool = False, channels: int | None = None) -> np.ndarray:
    """Validate soundfile's layout, (samples,) or (samples, channels); return (samples, channels) float32.

    The one array validator: classify, embed, streams (allow_empty and `channels` for a chunk) and
    the HEAR API. An array with more channels than samples is refused as a likely (channels, samples)
    array, except where its channel count is known to be right: `channels` (a stream's count, known
    from its earlier chunks) equals it, or it is one frame, shape (1, c), of at most
    `MAX_ONE_FRAME_CHANNELS` channels (a stream's first chunk may be a callback's single frame).
    """
    if not isinstance(audio, np.ndarray):
        raise InvalidAudioError(f"{what}: expected a numpy array or a file path, got {type(audio).__name__}.")
    if audio.ndim not in (1, 2):
        raise InvalidAudioError(f"{what}: expected shape (samples,) or (samples, channels), got {audio.shape}.")
    if audio.ndim == 2 and audio.shape[1] == 0:
        raise InvalidAudioError(f"{what}: shape {audio.shape} has zero channels; pass (samples,) or "
                                f"(samples, channels) with at least one channel.")
    if audio.size == 0:
        if not allow_empty:
            raise InvalidAudioError(f"{what}: the audio is empty (shape {audio.shape}); pass at least 32 ms "
                                    f"of sound.")
    elif audio.ndim == 2 and audio.shape[1] > audio.shape[0] and audio.shape[1] != channels \
            and not (audio.shape[0] == 1 and audio.shape[1] <= MAX_ONE_FRAME_CHANNELS):
        raise InvalidAudioError(
            f"{what}: shape {audio.shape} has more channels ({audio.shape[1]}) than samples "
            f"({audio.shape[0]}); audio arrays are (samples, channels) as soundfile returns them "
            f"(more channels than samples is taken only for one frame of at most {MAX_ONE_FRAME_CHANNELS} "
            f"channels, or a stream's known channel count). If yours is (channels, samples), pass audio.T.")
    audio = scale_pcm(audio, what)
    if not np.isfinite(audio).all():
        bad = int(audio.size - np.count_nonzero(np.isfinite(audio)))
        raise InvalidAudioError(f"{what}: {bad} sample(s) are NaN or infinite; clean or drop them first.")
    return audio if audio.ndim == 2 else audio[:, None]


# One resampler for every path (whole arrays, file blocks, stream chunks), so that they agree.
RESAMPLE_QUALITY = "HQ"


def resample(audio: np.ndarray, rate_hz: int, target_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Band-limited (soxr, high quality) resampling of (samples, channels) float32."""
    if rate_hz == target_hz:
        return audio
    import soxr

    return soxr.resample(audio, rate_hz, target_hz, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


def mono_resampler(rate_hz: int, target_hz: int = SAMPLE_RATE_HZ):
    """A streaming soxr resampler of mono float64, as `resample` filters (chunks give the same samples)."""
    import soxr

    return soxr.ResampleStream(rate_hz, target_hz, 1, dtype="float64", quality=RESAMPLE_QUALITY)


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
