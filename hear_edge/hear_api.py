"""The HEAR benchmark's model API (hear-eval-kit) over a hear-edge bundle.

Not to be confused with HEAR the model: this is the Holistic Evaluation of Audio Representations
interface. `audio` is (n_sounds, n_samples) at 16 kHz, as torch tensors or numpy arrays; results
come back as the same kind. Timestamps are in milliseconds, the centres of the 20 ms frames.

`load_model` returns a `torch.nn.Module`, as HEAR's tools (hear-validator, heareval) require, so
this module needs torch; torch is imported there only, and the rest of hear-edge stays torch-free.
"""

from __future__ import annotations

import numpy as np

from hear_edge.errors import HearEdgeError, InvalidAudioError
from hear_edge.run.classifier import HearEdge
from hear_edge.signal.audio import check_array
from hear_edge.signal.frontend import SAMPLE_RATE_HZ


class HearEdgeEmbedder:
    """A loaded bundle with HEAR's model attributes (what `load_model` wraps in a torch Module)."""

    sample_rate = SAMPLE_RATE_HZ

    def __init__(self, model: HearEdge):
        self.model = model
        self.scene_embedding_size = model.manifest.embedding_size
        self.timestamp_embedding_size = model.manifest.acoustic_hidden_size


_MODULE_CLASS = None


def _module_class():
    """HearEdgeModule(torch.nn.Module, HearEdgeEmbedder), made on first use so that torch loads only here."""
    global _MODULE_CLASS
    if _MODULE_CLASS is None:
        try:
            import torch
        except ImportError as error:  # not installed, or installed but broken
            raise HearEdgeError(f"the HEAR API's load_model returns a torch.nn.Module, as HEAR's tools require, "
                                f"and torch cannot be imported ({error}): pip install torch (or '.[export]' in a "
                                f"hear-edge checkout). Without torch, use HearEdge.load(...).embed(...).") from None

        class HearEdgeModule(torch.nn.Module, HearEdgeEmbedder):
            """The bundle as a torch Module; it holds no torch weights (the graphs run on their backend)."""

            def __init__(self, model: HearEdge):
                torch.nn.Module.__init__(self)
                HearEdgeEmbedder.__init__(self, model)

            def forward(self, audio):
                return get_scene_embeddings(audio, self)

        _MODULE_CLASS = HearEdgeModule
    return _MODULE_CLASS


def load_model(model_file_path: str = "", **kwargs):
    """A bundle folder, or "" for the default bundle; kwargs go to HearEdge.load. Returns a torch.nn.Module
    with `sample_rate`, `scene_embedding_size` and `timestamp_embedding_size`."""
    module_class = _module_class()
    return module_class(HearEdge.load(model_file_path or None, **kwargs))


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
    for i, sound in enumerate(array):  # an empty batch passes: it gets empty embeddings of the right shape
        check_array(sound, f"audio[{i}]")
    return array.astype(np.float32, copy=False), is_torch


def _like(array: np.ndarray, is_torch: bool):
    if is_torch:
        import torch  # the caller passed torch tensors, so torch is already there

        return torch.from_numpy(array)
    return array


def _timestamps_of(model: HearEdge, num_samples: int) -> int:
    """How many timestamps `embed` gives a clip of num_samples, without running the graphs."""
    if num_samples == 0:
        return 0
    step, count = 2 * model.frontend.params.hop_samples, 0
    for start_s, mono in model._segments(np.zeros(num_samples, np.float32), SAMPLE_RATE_HZ):
        count = round(start_s * SAMPLE_RATE_HZ) // step + model.frontend.num_frames(len(mono)) // 2
    return count


def get_timestamp_embeddings(audio, model: HearEdgeEmbedder):
    """(embeddings (n_sounds, n_timestamps, size), timestamps (n_sounds, n_timestamps) in ms)."""
    array, is_torch = _as_numpy(audio)
    if not len(array):
        steps = _timestamps_of(model.model, array.shape[1])
        return (_like(np.zeros((0, steps, model.timestamp_embedding_size), np.float32), is_torch),
                _like(np.zeros((0, steps), np.float32), is_torch))
    outputs = [model.model.embed(clip, SAMPLE_RATE_HZ) for clip in array]
    embeddings = np.stack([o.frames for o in outputs]).astype(np.float32)
    timestamps = np.stack([1000.0 * o.frame_times_s for o in outputs]).astype(np.float32)
    return _like(embeddings, is_torch), _like(timestamps, is_torch)


def get_scene_embeddings(audio, model: HearEdgeEmbedder):
    """(n_sounds, scene_embedding_size): the pooled Task Model states."""
    array, is_torch = _as_numpy(audio)
    if not len(array):
        return _like(np.zeros((0, model.scene_embedding_size), np.float32), is_torch)
    return _like(np.stack([model.model.embed(clip, SAMPLE_RATE_HZ).scene for clip in array]).astype(np.float32),
                 is_torch)
