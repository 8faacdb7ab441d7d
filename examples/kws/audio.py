"""16 kHz mono audio: reading, resampling, trimming, levels and FLAC/PCM16 writing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16000
CLIP = SR  # 1 s


def to_mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, sr_in: float, sr_out: int = SR) -> np.ndarray:
    if abs(sr_in - sr_out) < 1e-9:
        return np.asarray(x, dtype=np.float64)
    return soxr.resample(np.asarray(x, dtype=np.float64), sr_in, sr_out, quality="HQ")


def play_at(x: np.ndarray, factor: float) -> np.ndarray:
    """x played `factor` times as fast (pitch follows): len(x) / factor samples."""
    return resample(x, SR * factor, SR)


def window(x: np.ndarray, start: int, n: int = CLIP) -> np.ndarray:
    """x[start:start+n], zero-padded where it runs off either end."""
    out = np.zeros(n)
    lo, hi = max(start, 0), min(start + n, len(x))
    if hi > lo:
        out[lo - start: hi - start] = x[lo:hi]
    return out


def centred(x: np.ndarray, n: int = CLIP) -> np.ndarray:
    """The middle n samples of x: cropped about its centre when longer, zero-padded on both sides when shorter."""
    return window(x, (len(x) - n) // 2, n)


def frame_db(x: np.ndarray, frame: int = SR // 100) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.full(1, 10 * np.log10(np.mean(x ** 2) + 1e-12))
    f = x[: n * frame].reshape(n, frame)
    return 10 * np.log10(np.mean(f ** 2, axis=1) + 1e-12)


def trim_silence(x: np.ndarray, sr: int = SR, top_db: float = 40.0, floor_db: float = -60.0,
                 pad_ms: float = 20.0) -> np.ndarray:
    """Cut leading/trailing frames quieter than max(peak frame - top_db, floor_db)."""
    frame = sr // 100
    e = frame_db(x, frame)
    thr = max(float(e.max()) - top_db, floor_db)
    idx = np.flatnonzero(e > thr)
    if len(idx) == 0:
        return x[:0]
    pad = int(pad_ms * sr / 1000)
    return x[max(idx[0] * frame - pad, 0): min((idx[-1] + 1) * frame + pad, len(x))]


def fade(x: np.ndarray, ms: float = 5.0) -> np.ndarray:
    """Raised-cosine fade-in/out (espeak starts vowels at full level on sample 0)."""
    n = min(int(ms * SR / 1000), len(x) // 2)
    if n < 2:
        return x
    w = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
    x = np.array(x, dtype=np.float64)
    x[:n] *= w
    x[-n:] *= w[::-1]
    return x


def active_rms(x: np.ndarray, rel_db: float = 30.0) -> float:
    """RMS over the 10 ms frames within rel_db of the loudest frame (speech level)."""
    e = frame_db(x)
    sel = e > e.max() - rel_db
    return float(np.sqrt(np.mean(10 ** (e[sel] / 10)))) if sel.any() else 0.0


def peak_normalize(x: np.ndarray, peak: float = 0.89) -> np.ndarray:
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return x * (peak / m) if m > 0 else x


def read_mono(path) -> np.ndarray:
    """An audio file as float64 mono at 16 kHz."""
    x, sr = sf.read(str(path), dtype="float64", always_2d=False)
    return resample(to_mono(x), sr)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] (clipped) as int16 samples."""
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def write_flac(path: Path, x: np.ndarray, subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    try:  # soundfile >= 0.12: max FLAC compression (~3 % smaller)
        sf.write(str(path), x, SR, format="FLAC", subtype=subtype, compression_level=1.0)
    except TypeError:
        sf.write(str(path), x, SR, format="FLAC", subtype=subtype)
