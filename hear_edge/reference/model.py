"""The HEAR reference model in PyTorch, under the official parameter names.

torch is imported here and nowhere else in `hear_edge` outside export and fine-tuning code.
"""

from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hear_edge.errors import CheckpointError, ClipTooLongError, ConfigError, InvalidAudioError
from hear_edge.signal.frontend import FrontendParams, mel_filterbank
from hear_edge.signal.windows import blend_weights, plan_windows
from .config import AcousticModelConfig, ClassificationDecoderConfig, HearConfig, TaskModelConfig

FRONTEND = FrontendParams()


# ---------------------------------------------------------------------------------------------
# Preprocessor: torch.stft with the buffers torchaudio's transforms keep, so official keys load.

class _WindowHolder(nn.Module):
    def __init__(self, window_samples: int):
        super().__init__()
        self.register_buffer("window", torch.hann_window(window_samples))


class _MelScale(nn.Module):
    def __init__(self, n_fft: int):
        super().__init__()
        fb = mel_filterbank(FRONTEND.sample_rate_hz, n_fft, FRONTEND.num_mel_bins)
        self.register_buffer("fb", torch.from_numpy(fb).float())


class _MelSpectrogram(nn.Module):
    def __init__(self, n_fft: int):
        super().__init__()
        self.spectrogram = _WindowHolder(FRONTEND.window_samples)
        self.mel_scale = _MelScale(n_fft)


class Preprocessor(nn.Module):
    def __init__(self, config: AcousticModelConfig):
        super().__init__()
        if config.spectrogram_sampling_rate != FRONTEND.sample_rate_hz:
            raise ConfigError("only spectrogram_sampling_rate 16000 is supported, got "
                              f"{config.spectrogram_sampling_rate}.")
        self.n_fft = config.spectrogram_n_fft
        self.spectrogram = _WindowHolder(FRONTEND.window_samples)
        self.mel_spectrogram = _MelSpectrogram(FRONTEND.n_fft)

    def _power(self, mono: torch.Tensor, n_fft: int, window: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(mono, n_fft=n_fft, hop_length=FRONTEND.hop_samples,
                              win_length=FRONTEND.window_samples, window=window, center=True,
                              pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        return spectrum.abs().pow(2)

    @staticmethod
    def _normalize(spectrogram: torch.Tensor) -> torch.Tensor:
        mean = spectrogram.mean(dim=[-2, -1], keepdim=True)
        std = spectrogram.std(dim=[-2, -1], unbiased=False, keepdim=True)
        return (spectrogram - mean) / (std + FRONTEND.norm_eps)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor):
        waveform = waveform - waveform.mean(dim=-1, keepdim=True)
        mono = waveform.mean(dim=1)
        power = self._power(mono, self.n_fft, self.spectrogram.window)
        log_power = self._normalize(torch.log(power + FRONTEND.log_offset))
        mel_power = self._power(mono, FRONTEND.n_fft, self.mel_spectrogram.spectrogram.window)
        mel = torch.matmul(mel_power.transpose(-1, -2), self.mel_spectrogram.mel_scale.fb).transpose(-1, -2)
        log_mel = self._normalize(torch.log(mel + FRONTEND.log_offset))
        num_frames = torch.div(num_samples, FRONTEND.hop_samples, rounding_mode="floor") + 1
        return log_mel, num_frames, log_power


def _linear(in_features: int, out_features: int) -> nn.Linear:
    # A trimmed sublayer may have no units left: a zero-width Linear whose init would only warn.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


# ---------------------------------------------------------------------------------------------
# Acoustic Model: Conv1d front end and pre-norm transformer layers with Shaw relative positions.

class FeatureExtractor(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.conv = nn.Conv1d(FRONTEND.num_mel_bins, hidden_size, 2, 2)
        self.relu = nn.ReLU()

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(log_mel)).transpose(1, 2)


class RelativePositionEncoder(nn.Module):
    def __init__(self, head_size: int, max_length: int):
        super().__init__()
        self.max_length = max_length
        self.positional_embedding = nn.Embedding(2 * max_length, head_size)

    def table(self, length: int) -> torch.Tensor:
        """Rows for distances -(length-1) .. length-1: row c is distance c - (length - 1)."""
        return self.positional_embedding.weight[self.max_length - length + 1:self.max_length + length]

    def gathered(self, length: int) -> torch.Tensor:
        """(length, length, head) table indexed [i, j] by distance j - i, as the official code builds it."""
        positions = torch.arange(length, device=self.positional_embedding.weight.device)
        return self.positional_embedding(positions[None, :] - positions[:, None] + self.max_length)


def _relative_shift(scores: torch.Tensor, length: int, heads: int) -> torch.Tensor:
    # scores[..., i, c] holds distance c - (length - 1); out[..., i, j] = scores[..., i, j - i + length - 1]
    if scores.dim() == 3:  # unbatched (heads, T, 2T - 1): reshapes to constant sizes, one slice bound from T
        flat = scores.reshape(heads, -1)[:, length - 1:-1]
        return flat.reshape(heads, length, -1)[:, :, :length]
    flat = scores.flatten(-2)[..., length - 1:length - 1 + length * (2 * length - 2)]
    return flat.unflatten(-1, (length, 2 * length - 2))[..., :length]


def _relative_unshift(probs: torch.Tensor, length: int, heads: int) -> torch.Tensor:
    # inverse of _relative_shift: (..., T, T) -> (..., T, 2T - 1) with zeros where no key sits
    if probs.dim() == 3:
        flat = F.pad(F.pad(probs, (0, length - 2)).reshape(heads, -1), (length - 1, 1))
        return flat.reshape(heads, length, -1)
    flat = F.pad(F.pad(probs, (0, length - 2)).flatten(-2), (length - 1, 1))
    return flat.unflatten(-1, (length, 2 * length - 1))


# Query rows per block in the exported graphs' attention: a block of B queries needs T + B - 1 table
# rows, not 2T - 1 (a 300-frame window computes 349 position columns per query instead of 599).
POSITION_BLOCK_FRAMES = 50


def relative_position_rows(length, max_length: int) -> torch.Tensor:
    """(ceil(T / B), T + B - 1) table rows per query block: row c of block b is distance c - (B - 1) - b B.
    Every size the blocked attention needs is read from this one tensor, so a graph computes them once."""
    block = POSITION_BLOCK_FRAMES
    blocks = (length + block - 1) // block
    start = max_length - block + 1 - block * torch.arange(blocks)
    # Rows below 0 only meet the padding queries of a last block (dropped), never a real query.
    return (start[:, None] + torch.arange(length + block - 1)[None, :]).clamp(min=0)


class MultiHeadSelfAttentionWithRelativePosition(nn.Module):
    # "skew" computes the position terms against the 2T-1 table rows and shifts them into place:
    # the same numbers as the official gather, without materialising (T, T, head) tables.
    position_mode = "skew"

    def __init__(self, hidden_size: int, num_heads: int, dropout_probability: float, max_length: int,
                 head_size: int | None = None):
        super().__init__()
        # A trimmed layer keeps num_heads of the original heads, each still head_size wide.
        self.num_heads = num_heads
        self.head_size = head_size or hidden_size // num_heads
        inner = num_heads * self.head_size
        self.linear_q = _linear(hidden_size, inner)
        self.linear_k = _linear(hidden_size, inner)
        self.linear_v = _linear(hidden_size, inner)
        self.dropout = nn.Dropout(p=dropout_probability)
        self.linear_out = _linear(inner, hidden_size)
        self.relative_position_k = RelativePositionEncoder(self.head_size, max_length)
        self.relative_position_v = RelativePositionEncoder(self.head_size, max_length)
        self.query_bias1 = nn.Parameter(torch.zeros(num_heads, self.head_size))
        self.query_bias2 = nn.Parameter(torch.zeros(num_heads, self.head_size))
        for linear in (self.linear_q, self.linear_k, self.linear_v):
            if inner:
                nn.init.xavier_uniform_(linear.weight)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, heads * head) -> (..., T, heads, head); unbatched (T, ...) input reshapes to constant sizes,
        which the exported window graph (hidden states without a batch axis) needs no shape arithmetic for."""
        if x.dim() == 2:
            return x.reshape(-1, self.num_heads, self.head_size)
        return x.unflatten(-1, (self.num_heads, self.head_size))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return self._split(x).transpose(-3, -2)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None = None,
                position_rows: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (B, T, H), or unbatched (T, H) without a mask -> the same shape; with
        `relative_position_rows` (unbatched, key_mask (T,) or None), queries go in blocks."""
        if self.num_heads == 0:  # every head trimmed away: what is left is linear_out's bias
            return self.linear_out.bias.expand(*hidden.shape[:-1], -1)
        if position_rows is not None:
            return self._blocked(hidden, key_mask, position_rows)
        length = hidden.shape[-2]
        query = self._split(self.linear_q(hidden))
        query_content = (query + self.query_bias1).transpose(-3, -2)
        query_position = (query + self.query_bias2).transpose(-3, -2)
        key, value = self._heads(self.linear_k(hidden)), self._heads(self.linear_v(hidden))

        gather = self.position_mode == "gather" or length < 2
        if gather:
            position_scores = torch.einsum("...hid,ijd->...hij", query_position,
                                           self.relative_position_k.gathered(length))
        else:
            position_scores = _relative_shift(
                query_position @ self.relative_position_k.table(length).t(), length, self.num_heads)
        scores = (query_content @ key.transpose(-1, -2) + position_scores) / math.sqrt(self.head_size)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = self.dropout(torch.softmax(scores, dim=-1))

        if gather:
            position_values = torch.einsum("...hij,ijd->...hid", probs, self.relative_position_v.gathered(length))
        else:
            position_values = _relative_unshift(probs, length, self.num_heads) @ self.relative_position_v.table(length)
        out = (probs @ value + position_values).transpose(-3, -2)
        out = out.reshape(-1, self.num_heads * self.head_size) if hidden.dim() == 2 else out.flatten(-2)
        return self.linear_out(out)

    def _blocked(self, hidden: torch.Tensor, key_mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """The forward in query blocks of B rows, each against its T + B - 1 table rows (heads, blocks, B, ...);
        the sizes come from `rows` (relative_position_rows), the scale from the query projection."""
        heads, size, block = self.num_heads, self.head_size, POSITION_BLOCK_FRAMES
        width = rows.shape[1]  # T + B - 1
        length = width - block + 1
        # (q + bias1) / sqrt(d) straight out of linear_q, whose weights and bias absorb the scale and the
        # content bias (constants once exported), padded once to whole blocks; the position query is one
        # Add away (its padded rows hold that bias, and are dropped like the rest): 24 fewer nodes in a
        # 6-layer window, int8 2.6-4 % faster at 50 frames.
        scale = 1 / math.sqrt(size)
        content = F.linear(hidden, self.linear_q.weight * scale,
                           (self.linear_q.bias + self.query_bias1.reshape(-1)) * scale)
        content = F.pad(self._split(content), (0, 0, 0, 0, 0, rows.shape[0] * block - length))  # (Tp, h, d)
        query_position = (content + (self.query_bias2 - self.query_bias1) * scale).transpose(0, 1)

        key, value = self._heads(self.linear_k(hidden)), self._heads(self.linear_v(hidden))
        position = query_position.reshape(heads, -1, block, size) \
            @ self.relative_position_k.positional_embedding.weight[rows].transpose(1, 2)  # (h, nb, B, W)
        position = position.reshape(-1, block * width)[:, block - 1:block - 1 + block * (width - 1)]
        position = position.reshape(heads, -1, width - 1)[..., :length]  # (h, Tp, T)
        scores = content.transpose(0, 1) @ key.transpose(-1, -2) + position
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        probs = self.dropout(torch.softmax(scores, dim=-1))  # (h, Tp, T)
        unshifted = F.pad(F.pad(probs, (0, block - 2)).reshape(-1, block * (width - 1)), (block - 1, 1))
        table_v = self.relative_position_v.positional_embedding.weight[rows]
        position_values = unshifted.reshape(heads, -1, block, width) @ table_v  # (h, nb, B, d)
        out = probs @ value + position_values.reshape(heads, -1, size)
        return self.linear_out(out.transpose(0, 1).reshape(-1, heads * size)[:length])


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, dropout_probability: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.intermediate_dense = _linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = nn.SiLU()
        self.intermediate_dropout = nn.Dropout(p=dropout_probability)
        self.output_dense = _linear(intermediate_size, hidden_size)
        self.output_dropout = nn.Dropout(p=dropout_probability)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.intermediate_dense.out_features == 0:  # every channel trimmed away: output_dense's bias
            return self.output_dense.bias.expand(*hidden.shape[:-1], -1)
        hidden = self.intermediate_act_fn(self.intermediate_dense(self.layer_norm(hidden)))
        return self.output_dropout(self.output_dense(self.intermediate_dropout(hidden)))


class TransformerWithRelativePosition(nn.Module):
    def __init__(self, config: AcousticModelConfig, index: int = 0):
        super().__init__()
        size = config.hidden_size
        self.layer_norm1 = nn.LayerNorm(size)
        self.self_attn = MultiHeadSelfAttentionWithRelativePosition(
            size, config.heads_in_layer(index), config.dropout_probability, config.max_length, config.head_size)
        self.layer_norm2 = nn.LayerNorm(size)  # the official FFN normalises once more inside
        self.ffn = FeedForward(size, config.intermediate_size_in_layer(index), config.dropout_probability)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None,
                position_rows: torch.Tensor | None = None) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.layer_norm1(hidden), key_mask, position_rows)
        return hidden + self.ffn(self.layer_norm2(hidden))


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


class ContextualEncoder(nn.Module):
    def __init__(self, config: AcousticModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(TransformerWithRelativePosition(config, index)
                                    for index in range(config.num_transformer_layers))

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        key_mask = lengths_to_mask(lengths, hidden.shape[1])
        for layer in self.layers:
            hidden = layer(hidden, key_mask)
        return hidden


class AcousticModel(nn.Module):
    def __init__(self, config: AcousticModelConfig):
        super().__init__()
        self.max_length = config.max_length
        self.overlap = config.overlap
        self.feature_extractor = FeatureExtractor(config.hidden_size)
        self.contextual_encoder = ContextualEncoder(config)
        self.register_buffer("blend", torch.from_numpy(blend_weights(config.max_length, config.overlap)),
                             persistent=False)

    def encode_window(self, log_mel: torch.Tensor, valid_frames: torch.Tensor) -> torch.Tensor:
        """One window: log-mel (B, mels, 2 * frames) and valid acoustic frames (B,) -> (B, frames, hidden)."""
        return self.contextual_encoder(self.feature_extractor(log_mel), valid_frames)

    def forward(self, log_mel: torch.Tensor, num_mel_frames: torch.Tensor):
        hidden = self.feature_extractor(log_mel)
        lengths = torch.div(num_mel_frames, 2, rounding_mode="floor")
        total = hidden.shape[1]
        if total <= self.max_length:
            return self.contextual_encoder(hidden, lengths), lengths
        # Long input: the official windows, planned per clip from its own length, encoded as one batch.
        plans = [plan_windows(int(n), self.max_length, self.overlap) for n in lengths.tolist()]
        padded_total = max(start for plan in plans for start, _ in plan) + self.max_length
        hidden = F.pad(hidden, (0, 0, 0, max(0, padded_total - total)))
        owners = [(b, start) for b, plan in enumerate(plans) for start, _ in plan]
        windows = torch.stack([hidden[b, start:start + self.max_length] for b, start in owners])
        valid = torch.tensor([v for plan in plans for _, v in plan], device=hidden.device)
        encoded = self.contextual_encoder(windows, valid) * self.blend[:, None]
        summed = torch.zeros_like(hidden)
        weight_sum = torch.zeros(hidden.shape[:2] + (1,), dtype=hidden.dtype, device=hidden.device)
        for window, (b, start) in zip(encoded, owners):
            summed[b, start:start + self.max_length] += window
            weight_sum[b, start:start + self.max_length, 0] += self.blend
        return (summed / weight_sum.clamp(min=1e-8))[:, :total], lengths


# ---------------------------------------------------------------------------------------------
# Spectrogram Mixture, Task Model and the pooling head.

class SpectrogramMixture(nn.Module):
    def __init__(self, config: AcousticModelConfig, out_hidden_size: int):
        super().__init__()
        size = config.hidden_size
        self.gate_linear = nn.Linear(size, size)
        self.spectrum_linear = nn.Linear((config.spectrogram_n_fft // 2 + 1) * 2, size)
        self.layer_norm = nn.LayerNorm(size)
        self.gelu = nn.GELU()
        self.mixture = nn.Linear(size * 2, out_hidden_size)

    def forward(self, hidden: torch.Tensor, log_power: torch.Tensor) -> torch.Tensor:
        frames = hidden.shape[1]
        # Pairs of spectrum frames side by side per bin: [bin0 t0, bin0 t1, bin1 t0, ...], as F.unfold.
        pairs = log_power[..., :2 * frames].unflatten(-1, (frames, 2)).transpose(1, 2).flatten(2)
        return self.mix_pairs(hidden, pairs)

    def mix_pairs(self, hidden: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, H) and spectrum pairs (B, T, 2 * bins) -> (B, T, out_hidden)."""
        return self.mixture(torch.cat([hidden, self.gated_spectrum(hidden, pairs)], dim=-1))

    def gated_spectrum(self, hidden: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """The spectrum branch, gated by the hidden states: what `mixture` joins to them."""
        spectrum = self.spectrum_linear(pairs) * torch.sigmoid(self.gate_linear(hidden))
        return self.gelu(self.layer_norm(spectrum))


class TaskModel(nn.Module):
    def __init__(self, config: TaskModelConfig):
        super().__init__()
        self.max_length = config.max_length
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_length, config.hidden_size))
        self.transformer = nn.TransformerEncoderLayer(
            d_model=config.hidden_size, dim_feedforward=config.intermediate_size,
            nhead=config.num_attention_heads, batch_first=True, dropout=config.dropout_rate)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.pos_embed[:, :hidden.shape[1]]
        return self.transformer(hidden, src_key_padding_mask=~lengths_to_mask(lengths, hidden.shape[1]))


class Decoder(nn.Module):
    def __init__(self, config: ClassificationDecoderConfig, input_hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(input_hidden_size * 3, config.hidden_size)
        self.batch_norm = nn.BatchNorm1d(config.hidden_size)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(config.dropout_rate)
        self.out = nn.Linear(config.hidden_size, config.num_classes)

    @staticmethod
    def pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Masked mean, max and unbiased std over time, concatenated: (B, 3 * hidden)."""
        mask = lengths_to_mask(lengths, hidden.shape[1]).unsqueeze(-1)
        count = lengths.to(hidden.dtype).view(-1, 1).clamp(min=1)
        max_pool = hidden.masked_fill(~mask, -float("inf")).max(dim=1)[0]
        mean_pool = hidden.masked_fill(~mask, 0.0).sum(dim=1) / count
        squares = ((hidden - mean_pool.unsqueeze(1)) ** 2).masked_fill(~mask, 0.0).sum(dim=1)
        std_pool = torch.sqrt(squares / (count - 1).clamp(min=1e-5) + 1e-8)
        return torch.cat([mean_pool, max_pool, std_pool], dim=1)

    def classify_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.relu(self.batch_norm(self.linear(pooled)))))

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classify_pooled(self.pool(hidden, lengths))


class HEAR(nn.Module):
    """waveform -> Preprocessor -> AcousticModel -> SpectrogramMixture -> TaskModel -> Decoder -> logits."""

    def __init__(self, config: HearConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.preprocessor = Preprocessor(config.acoustic_model)
        self.acoustic_model = AcousticModel(config.acoustic_model)
        self.spectrogram_mixture = SpectrogramMixture(config.acoustic_model, config.task_model.hidden_size)
        self.task_model = TaskModel(config.task_model)
        self.decoder = Decoder(config.classification_decoder, config.task_model.hidden_size)

    @property
    def max_samples(self) -> int:
        """Longest input (in 16 kHz samples) the Task Model's position table covers."""
        max_mel_frames = 2 * self.task_model.max_length + 1
        return max_mel_frames * FRONTEND.hop_samples - 1

    def check_input(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> None:
        if not isinstance(waveform, torch.Tensor) or waveform.dim() != 3 or not waveform.is_floating_point():
            got = (f"{tuple(waveform.shape)} {waveform.dtype}" if isinstance(waveform, torch.Tensor)
                   else type(waveform).__name__)
            raise InvalidAudioError(f"expected a float tensor (batch, channels, samples), got {got}.")
        if not isinstance(num_samples, torch.Tensor) or num_samples.shape != waveform.shape[:1]:
            raise InvalidAudioError(f"expected num_samples as a tensor of shape ({waveform.shape[0]},), got "
                                    f"{getattr(num_samples, 'shape', type(num_samples).__name__)}.")
        if waveform.shape[-1] > self.max_samples:
            raise ClipTooLongError(
                f"the clip is {waveform.shape[-1] / FRONTEND.sample_rate_hz:.2f} s; the reference model "
                f"takes at most {self.max_samples} samples ({self.task_model.max_length} acoustic frames, "
                f"30 s), where its Task Model's position table ends. Classify longer audio with the "
                f"runtime (HearEdge.classify), which splits it into segments.")
        if waveform.shape[-1] < FRONTEND.n_fft // 2 + 1:
            raise InvalidAudioError(f"the clip has {waveform.shape[-1]} samples; at least "
                                    f"{FRONTEND.n_fft // 2 + 1} are needed for the reflect-padded STFT.")

    def features(self, waveform: torch.Tensor, num_samples: torch.Tensor):
        """(task_hidden (B, T, H), acoustic_lengths (B,)) with every stage on the way."""
        log_mel, num_frames, log_power = self.preprocessor(waveform, num_samples)
        return self.forward_features(log_mel, log_power, num_frames)

    def forward_features(self, log_mel: torch.Tensor, log_power: torch.Tensor, num_mel_frames: torch.Tensor):
        acoustic, lengths = self.acoustic_model(log_mel, num_mel_frames)
        mixed = self.spectrogram_mixture(acoustic, log_power)
        return self.task_model(mixed, lengths), lengths

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        self.check_input(waveform, num_samples)
        hidden, lengths = self.features(waveform, num_samples)
        return self.decoder(hidden, lengths)


def reference_outputs(model: HEAR, waveform, acoustic: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The reference on one clip, numpy in and out, for the golden check, the export's parity gate and the bench.

    Args:
        model: a loaded HEAR model.
        waveform: (samples,) or (channels, samples) at 16 kHz, official preprocessing.
        acoustic: also return the Acoustic Model's hidden states (a second pass; the bench's timed
            run leaves it out).

    Returns:
        (logits (classes,), acoustic hidden states (frames, hidden) or None).
    """
    samples = np.asarray(waveform, dtype=np.float32)
    tensor = torch.from_numpy(samples.reshape(1, -1, samples.shape[-1]))
    num_samples = torch.tensor([samples.shape[-1]])
    with torch.no_grad():
        logits = model(tensor, num_samples)[0].numpy()
        if not acoustic:
            return logits, None
        log_mel, frames, _ = model.preprocessor(tensor, num_samples)
        return logits, model.acoustic_model(log_mel, frames)[0][0].numpy()


# ---------------------------------------------------------------------------------------------
# Checkpoints by their official key names.

_ACOUSTIC_PREFIX = "acoustic_model."


def _read_state_dict(source) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        state = source
    else:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist or is not a file.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors, and loading it would run code "
                f"from the file; hear_edge loads weights only (torch.load weights_only=True). Re-save "
                f"it as a plain state_dict: torch.save(model.state_dict(), path). ({error})") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path} cannot be read: it is truncated, corrupt or not "
                                  f"a torch.save file ({type(error).__name__}: {error}).") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {source} is not a state_dict of tensors.")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def is_acoustic_only(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state_dict read by `_read_state_dict` is the stage-2 acoustic-model file (bare
    `AcousticModel` keys) rather than a full `HEAR.state_dict()`."""
    return not any(k.startswith(_ACOUSTIC_PREFIX) for k in state)


def _count_layers(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def _shape(state, key, dim=None):
    if key not in state:
        raise CheckpointError(f"checkpoint is missing {key!r}, which HEAR's layout needs to size the model.")
    shape = tuple(state[key].shape)
    return shape if dim is None else shape[dim]


def infer_config(state: Mapping[str, torch.Tensor], num_classes: int | None = None) -> HearConfig:
    """Every size the tensors determine; official defaults for the rest (overlap, dropouts)."""
    acoustic_only = is_acoustic_only(state)
    a = "" if acoustic_only else _ACOUSTIC_PREFIX
    layers = f"{a}contextual_encoder.layers."
    num_layers = _count_layers(state, layers)
    if num_layers == 0:
        raise CheckpointError("checkpoint has no Acoustic Model transformer layers "
                              f"({layers}N.*); is it a HEAR checkpoint?")
    hidden_size = _shape(state, f"{a}feature_extractor.conv.weight", 0)
    table_rows, head_size = _shape(state, f"{layers}0.self_attn.relative_position_k.positional_embedding.weight")
    if head_size == 0 or hidden_size % head_size:
        raise CheckpointError(f"the relative-position tables are {head_size} wide, which does not divide the "
                              f"hidden size {hidden_size}; is it a HEAR checkpoint?")
    # A trimmed checkpoint (hear_edge.training.trim) keeps fewer heads and FFN channels in some layers.
    layer_heads = [_shape(state, f"{layers}{i}.self_attn.query_bias1", 0) for i in range(num_layers)]
    layer_inner = [_shape(state, f"{layers}{i}.ffn.intermediate_dense.weight", 0) for i in range(num_layers)]
    full_heads = hidden_size // head_size
    if max(layer_inner) == 0:
        raise CheckpointError("every feed-forward channel of every layer is gone; the original FFN width "
                              "cannot be read from the tensors: pass config=.")
    full_inner = max(layer_inner)
    trimmed = any(h != full_heads for h in layer_heads) or any(n != full_inner for n in layer_inner)
    acoustic = AcousticModelConfig(
        hidden_size=hidden_size,
        intermediate_size=full_inner,
        num_attention_heads=full_heads,
        num_transformer_layers=num_layers,
        max_length=table_rows // 2,
        layer_attention_heads=layer_heads if trimmed else None,
        layer_intermediate_sizes=layer_inner if trimmed else None,
    )
    if acoustic_only:
        if num_classes is None:
            raise CheckpointError("this is an acoustic-model-only checkpoint: the classification head is "
                                  "new, so pass num_classes=N (the number of labels).")
        task = TaskModelConfig()
        decoder = ClassificationDecoderConfig(num_classes=num_classes)
    else:
        acoustic.spectrogram_n_fft = (_shape(state, "spectrogram_mixture.spectrum_linear.weight", 1) // 2 - 1) * 2
        _, task_max_length, task_hidden = _shape(state, "task_model.pos_embed")
        task = TaskModelConfig(hidden_size=task_hidden, max_length=task_max_length,
                               intermediate_size=_shape(state, "task_model.transformer.linear1.weight", 0))
        if task_hidden % task.num_attention_heads:
            raise CheckpointError(f"task hidden size {task_hidden} is not divisible by the default 4 heads; "
                                  f"the head count cannot be read from the tensors: pass config=.")
        decoder = ClassificationDecoderConfig(num_classes=_shape(state, "decoder.out.weight", 0),
                                              hidden_size=_shape(state, "decoder.linear.weight", 0))
    return HearConfig(acoustic, task, decoder)


def _check_keys(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
                 for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if misshaped:
        problems.append("mis-shaped tensors [" + "; ".join(misshaped) + "]")
    if problems:
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(problems) + ".")


def load_checkpoint(path, config=None, num_classes: int | None = None) -> HEAR:
    """Load an official HEAR checkpoint by its official key names.

    Args:
        path: a file saved with `torch.save`: a full `HEAR.state_dict()` (keys `preprocessor.*`,
            `acoustic_model.*`, `spectrogram_mixture.*`, `task_model.*`, `decoder.*`) or the
            stage-2 acoustic-model file (bare `AcousticModel` keys). A state_dict mapping works too.
        config: an official `config.json` path, a dict of its contents, a `HearConfig`, or None
            to infer every size from the tensor shapes (official defaults for the rest).
        num_classes: classes of the new head; required for an acoustic-model-only file, and
            checked against the checkpoint for a full one.

    Returns:
        The `HEAR` model in eval mode.

    Raises:
        CheckpointError: unreadable, code-carrying, or not fitting the model (names the keys).
        ConfigError: a config that is malformed or disagrees with `num_classes`.
    """
    state = _read_state_dict(path)
    acoustic_only = is_acoustic_only(state)
    if config is None:
        config = infer_config(state, num_classes)
    else:
        if isinstance(config, (str, Path)):
            config = HearConfig.from_json(config)
        elif isinstance(config, Mapping):
            config = HearConfig.from_dict(dict(config))
        if num_classes is not None:
            config.classification_decoder.num_classes = num_classes
    if not acoustic_only and num_classes is not None and "decoder.out.weight" in state \
            and state["decoder.out.weight"].shape[0] != num_classes:
        raise CheckpointError(f"num_classes={num_classes} but the checkpoint's head has "
                              f"{state['decoder.out.weight'].shape[0]} classes.")
    model = HEAR(config)
    if acoustic_only:
        expected = model.acoustic_model.state_dict()
        _check_keys(expected, state, "acoustic-model checkpoint")
        model.acoustic_model.load_state_dict(state, strict=True)
    else:
        expected = model.state_dict()
        _check_keys(expected, state, "checkpoint")
        model.load_state_dict(state, strict=True)
    return model.eval()
