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

from hear_edge.errors import InvalidArgumentError
from hear_edge.reference.config import HearConfig
from hear_edge.reference.model import HEAR, _read_state_dict, is_acoustic_only, load_checkpoint
from .toolkit import (LabelledAudio, autocast, balanced_batches, balanced_epoch_clips, batch_logits, evaluate,
                      progress_bar, resolve_precision, restore_rng_states, rng_states, save_run_state, shuffled_batches,
                      speed_perturb, start_run, write_sidecars)

logger = logging.getLogger("hear_edge")


@dataclass
class FinetuneResult:
    """What a run wrote and how it went. `finished` is False when max_steps stopped it (the run state
    in `run_state`, when there is one, continues it); `precision` is the one the steps ran in."""

    checkpoint: Path
    labels_file: Path
    config_file: Path
    best_epoch: int
    best_val_accuracy: float
    history: list[dict] = field(default_factory=list)
    precision: str = "fp32"
    steps: int = 0
    finished: bool = True
    run_state: Path | None = None


def _initial_model(init, config, labels: list[str]) -> HEAR:
    num_classes = len(labels)
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
    order = _head_order(init, labels) if model.decoder.out.out_features == num_classes else None
    if order is None:
        # A fine-tuned head of another task: keep everything but the last layer.
        model.decoder.out = torch.nn.Linear(model.decoder.out.in_features, num_classes)
        model.config.classification_decoder.num_classes = num_classes
    else:
        # The head's rows follow the checkpoint's labels; the data's folders may sort them otherwise.
        with torch.no_grad():
            model.decoder.out.weight.copy_(model.decoder.out.weight[order])
            model.decoder.out.bias.copy_(model.decoder.out.bias[order])
    return model


def _head_order(init, labels: list[str]) -> list[int] | None:
    """Which row of the init checkpoint's head each of `labels` is, from its `.labels.txt`; None when
    those are another task's labels (the head is replaced)."""
    sidecar = Path(init).with_suffix(".labels.txt") if isinstance(init, (str, Path)) else None
    if sidecar is None or not sidecar.is_file():
        logger.warning("init checkpoint has a %d-class head and no .labels.txt beside it: its rows are taken to "
                       "be the data's labels in this order: %s", len(labels), ", ".join(labels))
        return list(range(len(labels)))
    from hear_edge.export.api import load_labels

    init_labels = load_labels(sidecar)
    if sorted(init_labels) != sorted(labels):
        logger.info("init checkpoint's head is for other labels (%s): a new head is trained", ", ".join(init_labels))
        return None
    return [init_labels.index(label) for label in labels]


RUN_STATE = "last.pt"


def finetune(data_dir, output, init=None, config=None, freeze_acoustic: bool = False, epochs: int = 10,
             seed: int = 0, batch_size: int = 32, learning_rate: float | None = None, val_fraction: float = 0.1,
             device: str = "auto", augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
             train_data: LabelledAudio | None = None, val_data: LabelledAudio | None = None,
             max_minutes: float | None = None, progress: bool = True, spec_augment: bool = False,
             speed_range: tuple[float, float] | None = None,
             frequency_warp: float | None = None, teacher=None, teacher_weight: float = 1.0,
             teacher_layer: int = -1, teacher_loss: str = "cosine", teacher_cache: str | Path | None = None,
             precision: str = "auto", checkpoint_dir: str | Path | None = None,
             checkpoint_every: int | None = None, resume: bool = False,
             max_steps: int | None = None, balance_labels: bool = False) -> FinetuneResult:
    """Train HEAR's head (and, unless frozen, the Acoustic Model) on labelled folders of audio.

    Args:
        data_dir: one folder per label; or `train/` and `val/` folders that each hold them.
        output: the checkpoint to write (`HEAR.state_dict()`, official keys); `.labels.txt` and
            `.config.json` are written beside it.
        init: an official checkpoint to start from: a full `HEAR.state_dict()` or the acoustic-model
            file; None trains from scratch with `config` (official defaults when None). A full
            checkpoint's head is kept when the `.labels.txt` beside it names the data's labels (its
            rows put in the data's label order) or when it has none and the count matches; else a new
            head is trained.
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
        balance_labels: each epoch draws every label equally often (clips of rare labels repeat, of
            common ones a random share), so a label that most of the data holds stops being the
            safe guess.
        teacher: "whisper-tiny.en" (needs `pip install "hear-edge[teacher]"`) or an object with
            `teacher_id`, `width` and `encode(clips)`: a learned projection of Acoustic Model layer
            `teacher_layer`'s frames is pulled towards the frozen teacher's frames (50 frames/s, the
            same grid), weighted by `teacher_weight`, with `teacher_loss` "cosine" (1 - cos) or "mse".
            The teacher runs once per clip before training; its frames are cached as float16 in
            `teacher_cache` (default: `teacher-cache/` beside `output`). Clips must be at most one
            Acoustic Model window (6 s). The projection is not part of the written checkpoint.
        precision: "auto" (bf16 autocast where the CPU has AMX or AVX-512 BF16, fp32 elsewhere),
            "bf16" or "fp32". Weights and optimizer state stay fp32 either way. On a shared CPU set
            OMP_WAIT_POLICY=PASSIVE before torch is imported (`hear-edge finetune` does): spinning
            OpenMP threads made steps 3.6-6x slower on a busy 2-core host.
        checkpoint_dir: a folder for the run's state (model, projection, optimizer, schedule, random
            generators, epoch and step), written atomically at each epoch's end and every
            `checkpoint_every` steps, so `resume=True` continues it, in a later session too.
        resume: continue the run saved in `checkpoint_dir` (its settings must be this call's).
        max_steps: stop after this many optimizer steps in all (the run state is written first).

    Returns:
        FinetuneResult with the written paths, per-epoch history and the best validation accuracy.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}; with no epoch to train no "
                                       f"checkpoint would be written. Pass e.g. {name}={10 if name == 'epochs' else 32}.")
    for name, value in (("checkpoint_every", checkpoint_every), ("max_steps", max_steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidArgumentError(f"{name} must be None or an int >= 1 (optimizer steps), got {value!r}.")
    if speed_range is not None and not (len(speed_range) == 2 and 0 < speed_range[0] <= speed_range[1]):
        raise InvalidArgumentError(f"speed_range must be (slowest, fastest) playback factors with 0 < slowest "
                                   f"<= fastest, e.g. (0.8, 1.25); got {speed_range!r}.")
    if frequency_warp is not None and not 0 < frequency_warp < 0.5:
        raise InvalidArgumentError(f"frequency_warp must be between 0 and 0.5 (a +-fraction of the frequency "
                                   f"axis, e.g. 0.12); got {frequency_warp!r}.")
    if (resume or checkpoint_every is not None) and checkpoint_dir is None:
        raise InvalidArgumentError("resume and checkpoint_every need checkpoint_dir, the folder that holds the "
                                   "run's state (e.g. out/run1).")
    run_state_path = Path(checkpoint_dir) / RUN_STATE if checkpoint_dir is not None else None
    if resume and not run_state_path.is_file():
        raise InvalidArgumentError(f"resume: {run_state_path} does not exist; start the run without resume, "
                                   f"with checkpoint_dir={str(checkpoint_dir)!r}, to create it.")
    if teacher is not None:
        from .teacher import TEACHER_LOSSES, load_teacher

        if freeze_acoustic:
            raise InvalidArgumentError("a teacher regularises the Acoustic Model, which freeze_acoustic keeps "
                                       "fixed; drop one of the two.")
        if augment is not None or speed_range is not None:
            raise InvalidArgumentError("with a teacher, augment the waveforms on disk (one file per augmented "
                                       "copy): its frames are cached per clip content, so augment= and "
                                       "speed_range= (drawn anew each epoch) cannot be used; spec_augment and "
                                       "frequency_warp can (the target stays the clip's frames).")
        if teacher_loss not in TEACHER_LOSSES:
            raise InvalidArgumentError(f"teacher_loss must be one of {list(TEACHER_LOSSES)}, got {teacher_loss!r}.")
        if not teacher_weight > 0:
            raise InvalidArgumentError(f"teacher_weight must be > 0, got {teacher_weight!r}.")
        named_teacher = isinstance(teacher, str)
        teacher = load_teacher(teacher)  # before reading data: a missing extra fails at once
    device, train_data, val_data = start_run(seed, device, data_dir, train_data, val_data, val_fraction)
    precision = resolve_precision(precision, device)
    labels = train_data.labels
    model = _initial_model(init, config, labels).to(device)
    if freeze_acoustic:
        for parameter in model.acoustic_model.parameters():
            parameter.requires_grad_(False)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    regulariser = None
    if teacher is not None:
        regulariser = _TeacherRegulariser(model, teacher, teacher_layer, teacher_loss, train_data,
                                          teacher_cache or output.parent / "teacher-cache", progress, device)
        if named_teacher:
            teacher.close()  # the training steps run alone
    trainable = [p for p in model.parameters() if p.requires_grad]
    if regulariser is not None:
        trainable += list(regulariser.projection.parameters())
    learning_rate = learning_rate or (1e-4 if init is not None else 5e-4)
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.01)
    epoch_clips = balanced_epoch_clips(train_data.targets) if balance_labels else len(train_data.clips)
    steps_per_epoch = math.ceil(epoch_clips / batch_size)
    total_steps, warmup = epochs * steps_per_epoch, max(1, steps_per_epoch // 2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / max(1, total_steps)))))
    labels_file, config_file = output.with_suffix(".labels.txt"), output.with_suffix(".config.json")
    result = FinetuneResult(output, labels_file, config_file, -1, -1.0, precision=precision, run_state=run_state_path)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    # What a resumed run must share with the one it continues.
    settings = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "labels": labels, "train_clips": len(train_data.clips), "freeze_acoustic": freeze_acoustic,
                "spec_augment": spec_augment, "speed_range": list(speed_range) if speed_range else None,
                "frequency_warp": frequency_warp, "augment": augment is not None,
                "teacher": None if teacher is None else [teacher.teacher_id, teacher_weight,
                                                         regulariser.layer, teacher_loss]}
    if balance_labels:  # only when set, so that states saved before the option existed still resume
        settings["balance_labels"] = True
    first_epoch, batches, next_batch, losses, teacher_losses, elapsed_minutes = 1, None, 0, [], [], 0.0
    if resume:
        state = torch.load(run_state_path, map_location="cpu", weights_only=True)
        saved = state["settings"]
        differing = [f"{k}: {saved.get(k)!r} there, {settings.get(k)!r} now"
                     for k in sorted(settings.keys() | saved.keys()) if saved.get(k) != settings.get(k)]
        if differing:
            raise InvalidArgumentError(f"resume: {run_state_path} was saved by a run with other settings "
                                       f"({'; '.join(differing)}); resume with the same settings or start a "
                                       f"new checkpoint_dir.")
        model.load_state_dict(state["model"])
        if regulariser is not None:
            regulariser.projection.load_state_dict(state["projection"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        restore_rng_states(state["rng"], rng, generator)
        first_epoch, next_batch, result.steps = state["epoch"], state["batch"], state["steps"]
        batches = [b.numpy() for b in state["batches"]] if state["batches"] is not None else None
        losses, teacher_losses = list(state["losses"]), list(state["teacher_losses"])
        result.history, result.best_epoch = list(state["history"]), state["best_epoch"]
        result.best_val_accuracy, elapsed_minutes = state["best_val_accuracy"], state["minutes"]
        logger.info("resuming %s at epoch %d, batch %d (step %d)", run_state_path, first_epoch, next_batch,
                    result.steps)
    started = time.perf_counter() - elapsed_minutes * 60

    def save_state(epoch: int, batch: int, epoch_batches) -> None:
        if run_state_path is None:
            return
        save_run_state(run_state_path, {
            "settings": settings, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "projection": regulariser.projection.state_dict() if regulariser is not None else None,
            "schedule": schedule.state_dict(), "rng": rng_states(rng, generator), "epoch": epoch, "batch": batch,
            "batches": None if epoch_batches is None else [torch.from_numpy(np.asarray(b)) for b in epoch_batches],
            "steps": result.steps, "losses": losses, "teacher_losses": teacher_losses, "history": result.history,
            "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
            "minutes": (time.perf_counter() - started) / 60})

    logger.info("training in %s on %s", precision, device)
    for epoch in range(first_epoch, epochs + 1):
        model.train()
        if freeze_acoustic:
            model.acoustic_model.eval()
        if batches is None:
            batches = balanced_batches(train_data.targets, rng, batch_size) if balance_labels \
                else shuffled_batches(len(train_data.clips), rng, batch_size)
            next_batch, losses, teacher_losses = 0, [], []
        bar = progress_bar(range(next_batch, len(batches)), f"epoch {epoch}/{epochs}", progress)
        for index in bar:
            picked = batches[index]
            clips = [train_data.clips[i] for i in picked]
            if augment is not None:
                clips = [augment(c, rng) for c in clips]
            clips = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)).to(device) for c in clips]
            if speed_range is not None:
                clips = speed_perturb(clips, rng.uniform(*speed_range, size=len(clips)))
            targets = torch.tensor([train_data.targets[i] for i in picked], device=device)
            warp = torch.tensor(rng.uniform(1 - frequency_warp, 1 + frequency_warp, size=len(clips)),
                                device=device) if frequency_warp else None
            with autocast(device, precision):
                logits = batch_logits(model, clips, generator if spec_augment else None, warp)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=0.05)
                if regulariser is not None:
                    aligned = regulariser.loss(picked)
                    teacher_losses.append(float(aligned.detach()))
                    loss = loss + teacher_weight * aligned
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            result.steps += 1
            losses.append(float(loss.detach()))
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            stop = max_steps is not None and result.steps >= max_steps
            if stop or (checkpoint_every is not None and result.steps % checkpoint_every == 0):
                save_state(epoch, index + 1, batches)
            if stop:
                logger.info("stopping after %d steps (max_steps); resume=True continues", result.steps)
                result.finished = False
                return _finish(result, output, labels, model, train_data)
        val_accuracy = evaluate(model, val_data, device)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "val_accuracy": val_accuracy, "minutes": (time.perf_counter() - started) / 60}
        if regulariser is not None:
            record["teacher_loss"] = float(np.mean(teacher_losses)) if teacher_losses else float("nan")
        result.history.append(record)
        logger.info("epoch %d: train loss %.4f, validation accuracy %.4f", epoch, record["train_loss"], val_accuracy)
        if val_accuracy > result.best_val_accuracy:
            result.best_epoch, result.best_val_accuracy = epoch, val_accuracy
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, output)
        batches = None
        save_state(epoch + 1, 0, None)
        if max_minutes is not None and record["minutes"] >= max_minutes:
            logger.info("stopping after %.1f minutes (max_minutes)", record["minutes"])
            result.finished = epoch == epochs
            break
    return _finish(result, output, labels, model, train_data)


def _finish(result: FinetuneResult, output: Path, labels, model: HEAR, train_data: LabelledAudio) -> FinetuneResult:
    if output.is_file():
        write_sidecars(output, labels, model.config, train_data)
    return result


class _TeacherRegulariser:
    """The teacher's cached frames for the training clips, the hook that keeps Acoustic Model layer
    `layer`'s output, and the projection between the two."""

    def __init__(self, model: HEAR, teacher, layer: int, kind: str, train_data: LabelledAudio, cache_dir,
                 progress: bool, device):
        from .teacher import TeacherCache, TeacherProjection, cache_teacher_frames, whisper_frame_count

        layers = model.acoustic_model.contextual_encoder.layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -len(layers) <= layer < len(layers):
            raise InvalidArgumentError(f"teacher_layer must be an Acoustic Model layer index in "
                                       f"[{-len(layers)}, {len(layers) - 1}] (-1: the last), got {layer!r}.")
        self.layer = layer % len(layers)
        window = model.acoustic_model.max_length
        too_long = [name for clip, name in zip(train_data.clips, train_data.names)
                    if whisper_frame_count(len(clip)) > window]
        if too_long:
            raise InvalidArgumentError(f"with a teacher, training clips must fit one Acoustic Model window "
                                       f"({window} frames, {window / 50:g} s); {len(too_long)} are longer, e.g. "
                                       f"{too_long[0]}. Cut them shorter.")
        self.kind, self.device = kind, device
        self.cache = TeacherCache(cache_dir)
        self.keys = cache_teacher_frames(train_data.clips, teacher, self.cache, progress=progress)
        self.frame_counts = [whisper_frame_count(len(clip)) for clip in train_data.clips]
        self.projection = TeacherProjection(model.config.acoustic_model.hidden_size, teacher.width).to(device)
        self._captured: list[torch.Tensor] = []
        layers[self.layer].register_forward_hook(lambda module, args, out: self._keep(out))

    def _keep(self, out: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            self._captured.append(out)

    def loss(self, picked) -> torch.Tensor:
        from .teacher import stack_targets, teacher_loss

        student = self._captured.pop()
        self._captured.clear()
        target = stack_targets([self.cache.get(self.keys[i]) for i in picked], self.device)
        lengths = torch.tensor([self.frame_counts[i] for i in picked], device=self.device)
        return teacher_loss(self.projection(student), target, lengths, self.kind)
