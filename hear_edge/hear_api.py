"""The HEAR benchmark's model API (hear-eval-kit) over a hear-edge bundle.

Not to be confused with HEAR the model: this is the Holistic Evaluation of Audio Representations
interface. `audio` is (n_sounds, n_samples) at 16 kHz, as torch tensors or numpy arrays; results
come back as the same kind. Timestamps are in milliseconds, the centres of the 20 ms frames.
"""

from __future__ import annotations

import numpy as np

from .audio import check_array
from .classifier import HearEdge
from .errors import InvalidAudioError
from .frontend import SAMPLE_RATE_HZ


class HearEdgeEmbedder:
    sample_rate = SAMPLE_RATE_HZ

    def __init__(self, model: HearEdge):
        self.model = model
        self.scene_embedding_size = model.manifest.embedding_size
        self.timestamp_embedding_size = model.manifest.acoustic_hidden_size


def load_model(model_file_path: str = "", **kwargs) -> HearEdgeEmbedder:
    """A bundle folder, or "" for the default bundle; kwargs go to HearEdge.load."""
    return HearEdgeEmbedder(HearEdge.load(model_file_path or None, **kwargs))


def _as_numpy(audio):
    """(n_sounds, n_samples) float32, every sound checked as classify checks audio, before any inference."""
    is_torch = hasattr(audio, "detach")
    array = audio.detach().cpu().numpy() if is_torch else audio
    if not isinstance(array, np.ndarray):
        raise InvalidAudioError(f"audio must be a (n_sounds, n_samples) numpy array or torch tensor, got "
                                f"{type(audio).__name__}; wrap it with np.asarray(..., dtype=np.float32).")
    if array.ndim != 2:
        raise InvalidAudioError(f"audio must be (n_sounds, n_samples), got shape {array.shape}; pass a batch, "
                                f"e.g. audio[None] for one sound.")
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidAudioError(f"the HEAR API takes float audio in [-1, 1], got {array.dtype}; convert integer "
                                f"PCM first, e.g. audio.astype(np.float32) / 32768 for int16.")
    if array.shape[0] == 0:
        # An empty batch is an upstream bug more often than a request; its timestamp axis has no answer either.
        raise InvalidAudioError(f"the batch holds no sounds (shape {array.shape}); pass at least one.")
    for i, sound in enumerate(array):
        check_array(sound, f"audio[{i}]")
    return array.astype(np.float32, copy=False), is_torch


def _like(array: np.ndarray, is_torch: bool):
    if is_torch:
        import torch  # the caller passed torch tensors, so torch is already there

        return torch.from_numpy(array)
    return array


def get_timestamp_embeddings(audio, model: HearEdgeEmbedder):
    """(embeddings (n_sounds, n_timestamps, size), timestamps (n_sounds, n_timestamps) in ms)."""
    array, is_torch = _as_numpy(audio)
    outputs = [model.model.embed(clip, SAMPLE_RATE_HZ) for clip in array]
    embeddings = np.stack([o.frames for o in outputs]).astype(np.float32)
    timestamps = np.stack([1000.0 * o.frame_times_s for o in outputs]).astype(np.float32)
    return _like(embeddings, is_torch), _like(timestamps, is_torch)


def get_scene_embeddings(audio, model: HearEdgeEmbedder):
    """(n_sounds, scene_embedding_size): the pooled Task Model states."""
    array, is_torch = _as_numpy(audio)
    return _like(np.stack([model.model.embed(clip, SAMPLE_RATE_HZ).scene for clip in array]).astype(np.float32),
                 is_torch)
