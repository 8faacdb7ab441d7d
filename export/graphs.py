"""The two graphs a bundle carries, as torch modules over a loaded reference model.

acoustic_window: one 300-frame window (600 log-mel frames) and its valid length -> hidden states.
task: acoustic hidden states, spectrum pairs and valid length -> logits and the pooled embedding.
Both take the valid length as int32 (LiteRT has no int64 inputs) and mask what lies past it,
so a short clip or the last window runs through the same static-shape graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hear_edge.model import HEAR, Decoder, lengths_to_mask

WINDOW_INPUTS = ("log_mel", "valid_frames")
WINDOW_OUTPUTS = ("acoustic",)
TASK_INPUTS = ("acoustic", "spectrum_pairs", "valid_frames")
TASK_OUTPUTS = ("logits", "pooled")


class AcousticWindowGraph(nn.Module):
    def __init__(self, model: HEAR):
        super().__init__()
        self.acoustic_model = model.acoustic_model

    def forward(self, log_mel: torch.Tensor, valid_frames: torch.Tensor) -> torch.Tensor:
        return self.acoustic_model.encode_window(log_mel, valid_frames)


class TaskGraph(nn.Module):
    """Spectrogram Mixture, Task Model and pooling head.

    The Task Model's post-norm encoder layer is written out with its own weights: the exporters
    bake the sequence length into nn.MultiheadAttention's reshapes, and this form keeps it free.
    """

    def __init__(self, model: HEAR):
        super().__init__()
        self.mixture = model.spectrogram_mixture
        self.task_model = model.task_model
        self.decoder = model.decoder
        layer = model.task_model.transformer
        self.num_heads = layer.self_attn.num_heads

    def _attention(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        attention = self.task_model.transformer.self_attn
        query, key, value = F.linear(hidden, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
        head_size = hidden.shape[-1] // self.num_heads

        def heads(x):
            return x.unflatten(-1, (self.num_heads, head_size)).transpose(1, 2)

        scores = heads(query) @ heads(key).transpose(-1, -2) / math.sqrt(head_size)
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        out = (torch.softmax(scores, dim=-1) @ heads(value)).transpose(1, 2).flatten(2)
        return attention.out_proj(out)

    def forward(self, acoustic: torch.Tensor, spectrum_pairs: torch.Tensor, valid_frames: torch.Tensor):
        frames = acoustic.shape[1]
        key_mask = lengths_to_mask(valid_frames, frames)
        hidden = self.mixture.mix_pairs(acoustic, spectrum_pairs) + self.task_model.pos_embed[:, :frames]
        layer = self.task_model.transformer
        hidden = layer.norm1(hidden + self._attention(hidden, key_mask))
        hidden = layer.norm2(hidden + layer.linear2(F.relu(layer.linear1(hidden))))
        pooled = Decoder.pool(hidden, valid_frames)
        return self.decoder.classify_pooled(pooled), pooled


def window_example(model: HEAR) -> tuple[torch.Tensor, torch.Tensor]:
    mel_frames = 2 * model.acoustic_model.max_length
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(1, 128, mel_frames, generator=generator),
            torch.tensor([model.acoustic_model.max_length], dtype=torch.int32))


def task_example(model: HEAR, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    acoustic_size = model.config.acoustic_model.hidden_size
    bins = model.config.acoustic_model.spectrogram_n_fft // 2 + 1
    return (torch.randn(1, frames, acoustic_size, generator=generator),
            torch.randn(1, frames, 2 * bins, generator=generator),
            torch.tensor([frames], dtype=torch.int32))
