"""Fine-tune HEAR on folders of labelled audio; writes an official-layout checkpoint `hear-edge export` takes."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import HearConfig
from .errors import InvalidArgumentError
from .model import HEAR, _read_state_dict, is_acoustic_only, load_checkpoint
from .training import (LabelledAudio, batch_logits, epoch_batches, evaluate, speed_perturb, start_run,
                       write_sidecars)

logger = logging.getLogger("hear_edge")


@dataclass
class FinetuneResult:
    checkpoint: Path
    labels_file: Path
    config_file: Path
    best_epoch: int
    best_val_accuracy: float
    history: list[dict] = field(default_factory=list)


def _initial_model(init, config, num_classes: int) -> HEAR:
    if init is None:
        if config is None:
            config = HearConfig()
        elif not isinstance(config, HearConfig):
            config = HearConfig.from_json(config) if isinstance(config, (str, Path)) else HearConfig.from_dict(config)
        config.classification_decoder.num_classes = num_classes
        return HEAR(config)
    # Read once, as every checkpoint is read (typed errors; {"state_dict": ...} and module. prefixes).
    state = _read_state_dict(init)
    if is_acoustic_only(state):
        return load_checkpoint(state, config, num_classes=num_classes)
    model = load_checkpoint(state, config)
    if model.decoder.out.out_features != num_classes:
        # A fine-tuned head of another task: keep everything but the last layer.
        model.decoder.out = torch.nn.Linear(model.decoder.out.in_features, num_classes)
        model.config.classification_decoder.num_classes = num_classes
    return model


def finetune(data_dir, output, init=None, config=None, freeze_acoustic: bool = False, epochs: int = 10,
             seed: int = 0, batch_size: int = 32, learning_rate: float | None = None, val_fraction: float = 0.1,
             device: str = "auto", augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
             train_data: LabelledAudio | None = None, val_data: LabelledAudio | None = None,
             max_minutes: float | None = None, progress: bool = True, spec_augment: bool = False,
             speed_range: tuple[float, float] | None = None,
             frequency_warp: float | None = None) -> FinetuneResult:
    """Train HEAR's head (and, unless frozen, the Acoustic Model) on labelled folders of audio.

    Args:
        data_dir: one folder per label; or `train/` and `val/` folders that each hold them.
        output: the checkpoint to write (`HEAR.state_dict()`, official keys); `.labels.txt` and
            `.config.json` are written beside it.
        init: an official checkpoint to start from: a full `HEAR.state_dict()` (its head is
            replaced when the label count differs) or the acoustic-model file; None trains from
            scratch with `config` (official defaults when None).
        freeze_acoustic: train only the Spectrogram Mixture, Task Model and head.
        epochs, seed, batch_size, learning_rate: the run (learning rate defaults: 1e-4 from a
            checkpoint, 5e-4 from scratch, with warm-up and cosine decay). Deterministic for a seed on CPU.
        augment: an optional fn(waveform, rng) -> waveform applied to each training clip each epoch.
        max_minutes: stop early once this much time has passed (the best epoch so far is kept).
        spec_augment: mask random frequency bands and time spans of the features while training.
        speed_range: play each training clip at a random speed in this range (pitch follows),
            a cheap stand-in for more speakers.
        frequency_warp: stretch each training clip's frequency axis by a random factor in
            [1 - w, 1 + w] (formants move, pitch and tempo stay): another stand-in for speakers.

    Returns:
        FinetuneResult with the written paths, per-epoch history and the best validation accuracy.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}; with no epoch to train no "
                                       f"checkpoint would be written. Pass e.g. {name}={10 if name == 'epochs' else 32}.")
    if speed_range is not None and not (len(speed_range) == 2 and 0 < speed_range[0] <= speed_range[1]):
        raise InvalidArgumentError(f"speed_range must be (slowest, fastest) playback factors with 0 < slowest "
                                   f"<= fastest, e.g. (0.8, 1.25); got {speed_range!r}.")
    if frequency_warp is not None and not 0 < frequency_warp < 0.5:
        raise InvalidArgumentError(f"frequency_warp must be between 0 and 0.5 (a +-fraction of the frequency "
                                   f"axis, e.g. 0.12); got {frequency_warp!r}.")
    device, train_data, val_data = start_run(seed, device, data_dir, train_data, val_data, val_fraction)
    labels = train_data.labels
    model = _initial_model(init, config, len(labels)).to(device)
    if freeze_acoustic:
        for parameter in model.acoustic_model.parameters():
            parameter.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    learning_rate = learning_rate or (1e-4 if init is not None else 5e-4)
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_data.clips) / batch_size)
    total_steps, warmup = epochs * steps_per_epoch, max(1, steps_per_epoch // 2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / max(1, total_steps)))))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    labels_file, config_file = output.with_suffix(".labels.txt"), output.with_suffix(".config.json")
    result = FinetuneResult(output, labels_file, config_file, -1, -1.0)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        if freeze_acoustic:
            model.acoustic_model.eval()
        bar = epoch_batches(len(train_data.clips), rng, batch_size, f"epoch {epoch}/{epochs}", progress)
        losses = []
        for picked in bar:
            clips = [train_data.clips[i] for i in picked]
            if augment is not None:
                clips = [augment(c, rng) for c in clips]
            clips = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)).to(device) for c in clips]
            if speed_range is not None:
                clips = speed_perturb(clips, rng.uniform(*speed_range, size=len(clips)))
            targets = torch.tensor([train_data.targets[i] for i in picked], device=device)
            warp = torch.tensor(rng.uniform(1 - frequency_warp, 1 + frequency_warp, size=len(clips)),
                                device=device) if frequency_warp else None
            logits = batch_logits(model, clips, generator if spec_augment else None, warp)
            loss = F.cross_entropy(logits, targets, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val_accuracy = evaluate(model, val_data, device)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "val_accuracy": val_accuracy, "minutes": (time.perf_counter() - started) / 60}
        result.history.append(record)
        logger.info("epoch %d: train loss %.4f, validation accuracy %.4f", epoch, record["train_loss"], val_accuracy)
        if val_accuracy > result.best_val_accuracy:
            result.best_epoch, result.best_val_accuracy = epoch, val_accuracy
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, output)
        if max_minutes is not None and record["minutes"] >= max_minutes:
            logger.info("stopping after %.1f minutes (max_minutes)", record["minutes"])
            break
    write_sidecars(output, labels, model.config, train_data)
    return result
