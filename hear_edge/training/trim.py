"""Trimming: learn which attention heads and FFN channels of a frozen Acoustic Model a task needs, cut the rest.

After Genova et al., "Keep what you need" (audio representation trimming): one real value per unit,
a hard 0/1 gate round(sigmoid(m)) with a straight-through gradient, a sparsity loss on the fraction
of gates kept (or, as in the paper, on the mean sigmoid), the foundation model frozen while the
masks and the head train; the units whose gate is 0 are then sliced out of the weights, so the
trimmed model is smaller, not just masked.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hear_edge.errors import InvalidArgumentError
from hear_edge.reference.macs import config_acoustic_macs
from hear_edge.reference.model import HEAR, load_checkpoint
from .toolkit import LabelledAudio, batch_logits, epoch_batches, evaluate, start_run, write_sidecars

logger = logging.getLogger("hear_edge")

_LAYER = "acoustic_model.contextual_encoder.layers.{}."


class UnitGates(nn.Module):
    """One gate per unit: forward round(sigmoid(m)) in {0, 1}; backward straight through to m."""

    def __init__(self, units: int, open_logit: float = 1.0, spread: float = 0.5):
        super().__init__()
        # The paper starts every m at 1 (sigmoid 0.73, gate open). Spread over [1 - spread, 1 + spread],
        # the gates of equally useless units cross 0 one by one instead of all in the same step, so
        # the sparsity settles at the target rather than swinging between none and all.
        start = float(open_logit) + spread * (2 * torch.rand(units) - 1)
        self.logits = nn.Parameter(start)

    def forward(self) -> torch.Tensor:
        hard = torch.round(torch.sigmoid(self.logits))
        return self.logits + (hard - self.logits).detach()

    def kept(self) -> torch.Tensor:
        return torch.round(torch.sigmoid(self.logits.detach())) > 0


class TrimMasks(nn.Module):
    """Gates on every head (before `linear_out`) and FFN channel (after SiLU) of a model's Acoustic Model.

    Attached as forward pre-hooks, so the model's own modules stay untouched; `remove()` detaches them.
    """

    def __init__(self, model: HEAR, open_logit: float = 1.0):
        super().__init__()
        layers = model.acoustic_model.contextual_encoder.layers
        self.head_size = model.config.acoustic_model.head_size
        self.heads = nn.ModuleList(UnitGates(layer.self_attn.num_heads, open_logit) for layer in layers)
        self.channels = nn.ModuleList(UnitGates(layer.ffn.intermediate_dense.out_features, open_logit)
                                      for layer in layers)
        self._handles = []
        for layer, head_gates, channel_gates in zip(layers, self.heads, self.channels):
            self._handles.append(layer.self_attn.linear_out.register_forward_pre_hook(
                lambda module, args, gates=head_gates: (args[0] * gates().repeat_interleave(self.head_size),)))
            self._handles.append(layer.ffn.output_dense.register_forward_pre_hook(
                lambda module, args, gates=channel_gates: (args[0] * gates(),)))

    def _modules_with_units(self) -> list[UnitGates]:
        return [g for g in (*self.heads, *self.channels) if g.logits.numel()]

    def sparsity_loss(self, target_sparsity: float, weight: float, measure: str = "sigmoid") -> torch.Tensor:
        """weight * (mean over mask modules of mean(sigmoid(m)) - (1 - target_sparsity))^2.

        measure="gates" puts the 0/1 gates (straight-through) in place of sigmoid(m): the fraction
        really kept. The paper's sigmoid form is met by every gate open at m just above 0 whenever
        the target is at most 0.5, so below that it leaves the gates open."""
        modules = self._modules_with_units()
        if measure == "gates":
            density = torch.stack([g().mean() for g in modules]).mean()
        else:
            density = torch.stack([torch.sigmoid(g.logits).mean() for g in modules]).mean()
        return weight * (density - (1.0 - target_sparsity)) ** 2

    def sparsity(self) -> float:
        """1 - mean over mask modules of the fraction of units kept: the figure the loss steers."""
        return 1.0 - float(np.mean([g.kept().float().mean().item() for g in self._modules_with_units()]))

    def kept_heads(self) -> list[int]:
        return [int(g.kept().sum()) for g in self.heads]

    def kept_channels(self) -> list[int]:
        return [int(g.kept().sum()) for g in self.channels]

    def kept_units(self) -> dict[str, list[list[int]]]:
        """Indices of the heads and FFN channels kept in each layer."""
        return {"heads": [g.kept().nonzero().flatten().tolist() for g in self.heads],
                "channels": [g.kept().nonzero().flatten().tolist() for g in self.channels]}

    def set_kept_units(self, kept: dict[str, list[list[int]]]) -> None:
        """Gates open exactly on the given indices (what `kept_units` returned), closed elsewhere."""
        with torch.no_grad():
            for gates, indices in zip((*self.heads, *self.channels), (*kept["heads"], *kept["channels"])):
                gates.logits.fill_(-1.0)
                gates.logits[torch.as_tensor(indices, dtype=torch.long)] = 1.0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def remove_masked_units(model: HEAR, masks: TrimMasks) -> HEAR:
    """A new model without the units whose gate is 0: kept heads' q/k/v rows and `linear_out` columns,
    kept FFN rows and columns. A sublayer with no unit left becomes its output bias (a constant).
    The relative-position tables are shared by a layer's heads and stay whole."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    head_size = masks.head_size
    for index, (head_gates, channel_gates) in enumerate(zip(masks.heads, masks.channels)):
        prefix = _LAYER.format(index)
        heads = head_gates.kept().nonzero().flatten()
        rows = (heads[:, None] * head_size + torch.arange(head_size)).flatten()
        for name in ("linear_q", "linear_k", "linear_v"):
            for part in ("weight", "bias"):
                key = f"{prefix}self_attn.{name}.{part}"
                state[key] = state[key][rows].contiguous()
        for name in ("query_bias1", "query_bias2"):
            state[f"{prefix}self_attn.{name}"] = state[f"{prefix}self_attn.{name}"][heads].contiguous()
        key = f"{prefix}self_attn.linear_out.weight"
        state[key] = state[key][:, rows].contiguous()
        channels = channel_gates.kept().nonzero().flatten()
        for part in ("weight", "bias"):
            key = f"{prefix}ffn.intermediate_dense.{part}"
            state[key] = state[key][channels].contiguous()
        key = f"{prefix}ffn.output_dense.weight"
        state[key] = state[key][:, channels].contiguous()
    config = copy.deepcopy(model.config)
    config.acoustic_model.layer_attention_heads = masks.kept_heads()
    config.acoustic_model.layer_intermediate_sizes = masks.kept_channels()
    return load_checkpoint(state, config)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class TrimResult:
    checkpoint: Path
    labels_file: Path
    config_file: Path
    target_sparsity: float
    sparsity: float
    best_epoch: int
    best_val_accuracy: float
    kept_heads: list[int]
    kept_channels: list[int]
    acoustic_parameters: tuple[int, int]  # (before, after)
    acoustic_macs_10s: tuple[float, float]  # (before, after)
    kept_units: dict[str, list[list[int]]] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def trim(checkpoint, data_dir, output, target_sparsity: float = 0.5, config=None, epochs: int = 10,
         seed: int = 0, batch_size: int = 32, learning_rate: float = 1e-4, mask_learning_rate: float = 5e-3,
         sparsity_weight: float = 100.0, sparsity_tolerance: float = 0.05, patience: int = 3,
         val_fraction: float = 0.1, device: str = "auto", train_data: LabelledAudio | None = None,
         val_data: LabelledAudio | None = None, max_minutes: float | None = None,
         progress: bool = True, sparsity_measure: str = "gates") -> TrimResult:
    """Learn a task-specific subnetwork of a checkpoint's frozen Acoustic Model and write it, trimmed.

    Args:
        checkpoint: a full `HEAR.state_dict()` with a head for the task (e.g. from `finetune`).
        data_dir: one folder per label (or `train/` and `val/` folders holding them), as for finetune.
        output: the trimmed checkpoint to write (official keys, smaller per-layer shapes);
            `.labels.txt` and `.config.json` (with per-layer sizes) are written beside it.
        target_sparsity: the fraction of units to remove, averaged over the mask modules (12 for the
            official six layers: one head mask and one FFN mask per layer), in (0, 1).
        epochs, seed, batch_size: the run; deterministic for a seed on the CPU.
        learning_rate: Adam rate of the head (Spectrogram Mixture, Task Model, decoder).
        mask_learning_rate: Adam rate of the mask values (the paper: 1e-3 over 100k steps; 5e-3
            settles within a few thousand).
        sparsity_weight: the sparsity loss weight (the paper: 100).
        sparsity_measure: what the sparsity loss steers: "gates", the fraction of units really
            kept (straight-through), or "sigmoid", the paper's mean sigmoid(m), which leaves every
            gate open for targets up to 0.5 and overshoots above (see the README's table).
        sparsity_tolerance: epochs whose sparsity is within this of the target compete on
            validation accuracy for the written checkpoint (else the closest epoch is written).
        patience: stop after this many counted epochs without a better validation accuracy.
        max_minutes: stop once this much time has passed.

    Returns:
        TrimResult: written paths, kept units per layer, sparsity reached, parameters and
        multiply-accumulates of the Acoustic Model before and after, per-epoch history.

    Raises:
        InvalidArgumentError: a target sparsity outside (0, 1), or no epochs.
    """
    if not 0.0 < target_sparsity < 1.0:
        raise InvalidArgumentError(f"target_sparsity must be between 0 and 1 (the fraction of heads and FFN "
                                   f"channels to remove), got {target_sparsity}.")
    if sparsity_measure not in ("gates", "sigmoid"):
        raise InvalidArgumentError(f"sparsity_measure must be 'gates' or 'sigmoid', got {sparsity_measure!r}.")
    if epochs < 1:
        raise InvalidArgumentError(f"epochs must be at least 1, got {epochs}.")
    device, train_data, val_data = start_run(seed, device, data_dir, train_data, val_data, val_fraction)
    model = load_checkpoint(checkpoint, config)
    classes = model.decoder.out.out_features
    if classes != len(train_data.labels):
        raise InvalidArgumentError(f"the checkpoint's head has {classes} classes but the data has "
                                   f"{len(train_data.labels)} labels ({train_data.labels}); trim a checkpoint "
                                   f"fine-tuned on these labels (hear-edge finetune).")
    before = parameter_count(model.acoustic_model), config_acoustic_macs(model.config, 10.0)  # per 10 s clip
    model.to(device)
    for parameter in model.acoustic_model.parameters():
        parameter.requires_grad_(False)
    masks = TrimMasks(model).to(device)
    head = [p for name, p in model.named_parameters() if not name.startswith("acoustic_model.")]
    optimizer = torch.optim.Adam([{"params": head, "lr": learning_rate},
                                  {"params": masks.parameters(), "lr": mask_learning_rate}])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    best_rank, best_epoch, best_accuracy, best_state, stale = None, -1, -1.0, None, 0
    history = []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        model.acoustic_model.eval()  # frozen: no dropout either
        bar = epoch_batches(len(train_data.clips), rng, batch_size, f"trim epoch {epoch}/{epochs}", progress)
        task_losses = []
        for picked in bar:
            clips = [torch.from_numpy(np.ascontiguousarray(train_data.clips[i], dtype=np.float32)).to(device)
                     for i in picked]
            targets = torch.tensor([train_data.targets[i] for i in picked], device=device)
            task_loss = F.cross_entropy(batch_logits(model, clips), targets)
            loss = task_loss + masks.sparsity_loss(target_sparsity, sparsity_weight, sparsity_measure)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            task_losses.append(float(task_loss.detach()))
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(task_losses[-20:]):.3f}", sparsity=f"{masks.sparsity():.2f}")
        accuracy = evaluate(model, val_data, device)
        sparsity = masks.sparsity()
        history.append({"epoch": epoch, "train_loss": float(np.mean(task_losses)) if task_losses else float("nan"),
                        "val_accuracy": accuracy, "sparsity": sparsity, "kept_heads": masks.kept_heads(),
                        "kept_channels": masks.kept_channels(), "minutes": (time.perf_counter() - started) / 60})
        logger.info("trim epoch %d: task loss %.4f, validation accuracy %.4f, sparsity %.3f (target %.2f)",
                    epoch, history[-1]["train_loss"], accuracy, sparsity, target_sparsity)
        # Epochs at the target compete on accuracy; until one gets there, the closest one is kept.
        at_target = abs(sparsity - target_sparsity) <= sparsity_tolerance
        rank = (1, accuracy) if at_target else (0, -abs(sparsity - target_sparsity))
        if best_rank is None or rank > best_rank:
            best_rank, best_epoch, best_accuracy, stale = rank, epoch, accuracy, 0
            best_state = copy.deepcopy({"model": model.state_dict(), "masks": masks.state_dict()})
        elif at_target:
            stale += 1
        if stale >= patience:
            logger.info("no better validation accuracy in %d epochs at the target sparsity: stopping", patience)
            break
        if max_minutes is not None and history[-1]["minutes"] >= max_minutes:
            break
    if best_rank[0] == 0:
        logger.warning("sparsity never came within %.2f of the target %.2f; keeping epoch %d, the closest "
                       "(%.3f): train longer or change sparsity_weight", sparsity_tolerance, target_sparsity,
                       best_epoch, history[best_epoch - 1]["sparsity"])
    model.load_state_dict(best_state["model"])
    masks.load_state_dict(best_state["masks"])
    model.eval().cpu()
    masks.cpu()
    trimmed = remove_masked_units(model, masks)
    masks.remove()
    torch.save(trimmed.state_dict(), output)
    labels_file, config_file = write_sidecars(output, train_data.labels, trimmed.config, train_data)
    return TrimResult(output, labels_file, config_file, target_sparsity, masks.sparsity(), best_epoch,
                      best_accuracy, masks.kept_heads(), masks.kept_channels(),
                      (before[0], parameter_count(trimmed.acoustic_model)),
                      (before[1], config_acoustic_macs(trimmed.config, 10.0)),
                      masks.kept_units(), history)
