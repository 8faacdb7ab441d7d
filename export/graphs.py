"""The two graphs a bundle carries, as torch modules over a loaded reference model.

acoustic_window: one window of up to 300 frames (twice that in log-mel frames) -> hidden states.
    ONNX keeps the frame axis free and runs exactly the frames a clip has (no mask: every frame
    is valid). LiteRT cannot convert a free length, so its file has one signature per length
    bucket, sharing weights, with the valid length as int32 and what lies past it masked.
task: acoustic hidden states, spectrum pairs and valid length -> logits and the pooled embedding.
The valid length is int32 (LiteRT has no int64 inputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hear_edge.reference.model import HEAR, Decoder, lengths_to_mask, relative_position_rows


# Query rows per chunk of the bucketed task graph's attention (LiteRT): buckets up to this length run
# in one piece, longer ones in chunks, so the 1500-frame bucket's attention buffers shrink 6-fold.
TASK_QUERY_CHUNK_FRAMES = 250


class AcousticWindowGraph(nn.Module):
    """A window whose every frame is valid: nothing to mask, so no mask is computed."""

    def __init__(self, model: HEAR):
        super().__init__()
        self.acoustic_model = model.acoustic_model

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        # One clip a call: the layers run on unbatched (frames, hidden) states, so that the reshapes
        # have constant sizes or sizes computed once from the position rows, each linear layer traces
        # to one Gemm with its bias, and the attention runs in query blocks (relative_position_rows).
        hidden = self.acoustic_model.feature_extractor(log_mel)[0]
        rows = relative_position_rows(hidden.shape[0], self.acoustic_model.max_length)
        for layer in self.acoustic_model.contextual_encoder.layers:
            hidden = layer(hidden, None, rows)
        return hidden[None]


class BucketedAcousticWindowGraph(AcousticWindowGraph):
    """A window padded to a static bucket length, frames past `valid_frames` masked.

    Not in query blocks: with static lengths the converter folds each bucket's table rows into
    constants, and the skew's (2T - 1, head) tables become int8 FULLY_CONNECTED weights; the blocks'
    gathered tables stayed float, 1.6 MB a layer at 300 frames (the int8 file grew 14.6 -> 37.3 MB).
    """

    def forward(self, log_mel: torch.Tensor, valid_frames: torch.Tensor) -> torch.Tensor:
        return self.acoustic_model.encode_window(log_mel, valid_frames)


class TaskGraph(nn.Module):
    """Spectrogram Mixture, Task Model and pooling head.

    The Task Model's post-norm encoder layer is written out with its own weights: the exporters
    bake the sequence length into nn.MultiheadAttention's reshapes, and this form keeps it free.
    """

    query_chunk_frames: int | None = None  # static lengths: query rows per chunk (BucketedTaskGraph)
    query_parts = 2  # a free length: the queries in this many slices
    split_mixture = True  # the mixture's linear as one matmul per input it joins (ONNX: see _mix)

    def __init__(self, model: HEAR):
        super().__init__()
        self.mixture = model.spectrogram_mixture
        self.task_model = model.task_model
        self.decoder = model.decoder
        layer = model.task_model.transformer
        self.num_heads = layer.self_attn.num_heads
        if self.split_mixture:
            joined, hidden_size = self.mixture.mixture, self.mixture.gate_linear.in_features
            self.mixture_hidden = nn.Linear(hidden_size, joined.out_features, bias=False)
            self.mixture_spectrum = nn.Linear(joined.in_features - hidden_size, joined.out_features)
            with torch.no_grad():  # copies of the two column blocks, taken when the graph is built
                self.mixture_hidden.weight.copy_(joined.weight[:, :hidden_size])
                self.mixture_spectrum.weight.copy_(joined.weight[:, hidden_size:])
                self.mixture_spectrum.bias.copy_(joined.bias)

    def _mix(self, acoustic: torch.Tensor, spectrum_pairs: torch.Tensor) -> torch.Tensor:
        """The Spectrogram Mixture. Split, its linear over [hidden, spectrum] is the sum of one matmul per
        input, so that the int8 graph quantises each on its own scale: acoustic states and the normalised
        spectrum branch differ in range, and one scale for both cost the joined matmul its int8 accuracy."""
        if not self.split_mixture:
            return self.mixture.mix_pairs(acoustic, spectrum_pairs)
        spectrum = self.mixture.gated_spectrum(acoustic, spectrum_pairs)
        return self.mixture_hidden(acoustic) + self.mixture_spectrum(spectrum)

    def _attention(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """hidden (B, T, H), or one clip's (T, H) without a mask -> the same shape."""
        attention = self.task_model.transformer.self_attn
        query, key, value = F.linear(hidden, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
        head_size, unbatched = attention.head_dim, hidden.dim() == 2

        def heads(x):  # (..., T, H) -> (..., heads, T, head); unbatched to constant sizes
            if unbatched:
                return x.reshape(-1, self.num_heads, head_size).transpose(0, 1)
            return x.unflatten(-1, (self.num_heads, head_size)).transpose(1, 2)

        query, key, value = heads(query), heads(key).transpose(-1, -2), heads(value)
        frames, chunk, parts = hidden.shape[-2], self.query_chunk_frames, self.query_parts
        # Queries go in parts, one after another, so that the runtime holds one part's (heads, rows, frames)
        # scores at a time (a 1500-frame clip's are 36 MB whole): static lengths in chunks of `chunk`
        # rows, a free length (ONNX) in `parts` slices whose bounds the graph computes.
        if chunk and isinstance(frames, int) and frames > chunk:
            bounds = [(start, start + chunk) for start in range(0, frames, chunk)]
        elif parts > 1:
            bounds = [(frames * part // parts, frames * (part + 1) // parts) for part in range(parts)]
        else:
            bounds = [(None, None)]
        outs = []
        for start, stop in bounds:
            rows = query if start is None else query[:, start:stop] if unbatched else query[:, :, start:stop]
            scores = rows @ key / math.sqrt(head_size)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
            else:
                # onnxruntime's softmax runs 10-20x slower where exp(score - max) underflows, as a trained
                # model's peaked attention makes it do (4.4 ms of a 500-frame task graph's 14): scores
                # below max - 80 (weights under 2e-35 of the largest) are raised to it.
                scores = torch.maximum(scores, scores.amax(dim=-1, keepdim=True) - 80.0)
            outs.append(torch.softmax(scores, dim=-1) @ value)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1 if unbatched else 2)
        out = out.transpose(0, 1).reshape(-1, attention.embed_dim) if unbatched else out.transpose(1, 2).flatten(2)
        return attention.out_proj(out)

    def _encode(self, acoustic: torch.Tensor, spectrum_pairs: torch.Tensor, key_mask: torch.Tensor | None):
        frames = acoustic.shape[-2]
        position = self.task_model.pos_embed[:, :frames]  # sliced first: the table keeps its name in the graph
        position = position[0] if acoustic.dim() == 2 else position
        hidden = self._mix(acoustic, spectrum_pairs) + position
        layer = self.task_model.transformer
        hidden = layer.norm1(hidden + self._attention(hidden, key_mask))
        return layer.norm2(hidden + layer.linear2(F.relu(layer.linear1(hidden))))

    def forward(self, acoustic: torch.Tensor, spectrum_pairs: torch.Tensor):
        """Every frame valid: no mask, and plain mean, max and std over time. The clip's states run
        unbatched, (frames, hidden), so each linear layer is one Gemm with its bias, as in the window
        graph: batched, onnxruntime left MatMul and Add apart and fused a SkipLayerNormalization that
        ran 7x slower than LayerNormalization (the int8 graph 9 % slower at 50 and 500 frames)."""
        hidden = self._encode(acoustic[0], spectrum_pairs[0], None)
        frames = torch.ones_like(hidden[:, :1]).sum(dim=0)  # (1,): the free length, as a tensor
        mean = hidden.sum(dim=0) / frames
        squares = ((hidden - mean) ** 2).sum(dim=0)
        std = torch.sqrt(squares / (frames - 1).clamp(min=1e-5) + 1e-8)  # as Decoder.pool
        pooled = torch.cat([mean, hidden.max(dim=0)[0], std])[None]
        return self.decoder.classify_pooled(pooled), pooled


class BucketedTaskGraph(TaskGraph):
    """Padded to a static bucket length, frames past `valid_frames` masked, queries in chunks; the mixture
    whole (LiteRT's recipe quantises it as one layer)."""

    query_chunk_frames, query_parts, split_mixture = TASK_QUERY_CHUNK_FRAMES, 1, False

    def forward(self, acoustic: torch.Tensor, spectrum_pairs: torch.Tensor, valid_frames: torch.Tensor):
        hidden = self._encode(acoustic, spectrum_pairs, lengths_to_mask(valid_frames, acoustic.shape[1]))
        pooled = Decoder.pool(hidden, valid_frames)
        return self.decoder.classify_pooled(pooled), pooled


def window_example(model: HEAR, frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    frames = frames or model.acoustic_model.max_length
    generator = torch.Generator().manual_seed(0)
    mels = model.acoustic_model.feature_extractor.conv.in_channels
    return (torch.randn(1, mels, 2 * frames, generator=generator), torch.tensor([frames], dtype=torch.int32))


def task_example(model: HEAR, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    acoustic_size = model.config.acoustic_model.hidden_size
    bins = model.config.acoustic_model.spectrogram_n_fft // 2 + 1
    return (torch.randn(1, frames, acoustic_size, generator=generator),
            torch.randn(1, frames, 2 * bins, generator=generator),
            torch.tensor([frames], dtype=torch.int32))
