"""Fine-tune HEAR on folders of labelled audio; writes an official-layout checkpoint `hear-edge export` takes."""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .audio import AUDIO_SUFFIXES, load_input
from .config import HearConfig
from .errors import HearEdgeError, InvalidArgumentError
from .frontend import mel_filterbank
from .model import FRONTEND, HEAR, _read_state_dict, is_acoustic_only, load_checkpoint

logger = logging.getLogger("hear_edge")


@dataclass
class LabelledAudio:
    labels: list[str]
    clips: list[np.ndarray]  # mono float32 at 16 kHz
    targets: list[int]
    names: list[str]


@dataclass
class FinetuneResult:
    checkpoint: Path
    labels_file: Path
    config_file: Path
    best_epoch: int
    best_val_accuracy: float
    history: list[dict] = field(default_factory=list)


def read_labelled_folders(root: str | Path, labels: list[str] | None = None) -> LabelledAudio:
    """One sub-folder per label, audio files inside (any depth), read and resampled to 16 kHz mono."""
    root = Path(root)
    if not root.is_dir():
        raise HearEdgeError(f"data folder {root} does not exist.")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if labels is None:
        labels = [p.name for p in folders]
    if len(labels) < 2:
        raise HearEdgeError(f"{root} needs at least two label folders (one folder per label), found {len(labels)}.")
    data = LabelledAudio(labels, [], [], [])
    for index, label in enumerate(labels):
        files = sorted(p for p in (root / label).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise HearEdgeError(f"label folder {root / label} has no audio files.")
        for path in files:
            data.clips.append(load_input(path).mean(axis=0).astype(np.float32))
            data.targets.append(index)
            data.names.append(str(path.relative_to(root)))
    return data


def _split(data: LabelledAudio, val_fraction: float, seed: int) -> tuple[LabelledAudio, LabelledAudio]:
    rng = np.random.default_rng(seed)
    train, val = (LabelledAudio(data.labels, [], [], []) for _ in range(2))
    for index in range(len(data.labels)):
        members = [i for i, t in enumerate(data.targets) if t == index]
        rng.shuffle(members)
        cut = max(1, int(round(len(members) * val_fraction)))
        for position, i in enumerate(members):
            part = val if position < cut else train
            part.clips.append(data.clips[i])
            part.targets.append(index)
            part.names.append(data.names[i])
    return train, val


def train_and_validation_sets(data_dir, val_fraction: float, seed: int) -> tuple[LabelledAudio, LabelledAudio]:
    """`train/` and `val/` folders when there are both, else a per-label split of the label folders."""
    root = Path(data_dir)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_data = read_labelled_folders(root / "train")
        return train_data, read_labelled_folders(root / "val", train_data.labels)
    return _split(read_labelled_folders(root), val_fraction, seed)


def write_sidecars(checkpoint: Path, labels: list[str], config: HearConfig,
                   data: LabelledAudio | None = None) -> tuple[Path, Path]:
    """The `.labels.txt` and `.config.json` beside a checkpoint, which `hear-edge export` reads, and
    `.training.json` with the median training clip length, from which export sets the stream defaults."""
    checkpoint = Path(checkpoint)
    labels_file, config_file = checkpoint.with_suffix(".labels.txt"), checkpoint.with_suffix(".config.json")
    labels_file.write_text("\n".join(labels) + "\n")
    config_file.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if data is not None and data.clips:
        clip_seconds = round(float(np.median([len(c) for c in data.clips])) / 16000, 2)
        checkpoint.with_suffix(".training.json").write_text(json.dumps({"clip_seconds": clip_seconds}) + "\n")
    return labels_file, config_file


def start_run(seed: int, device: str, data_dir, train_data: LabelledAudio | None,
              val_data: LabelledAudio | None, val_fraction: float):
    """The opening of a training run: every generator seeded, the device picked ("auto": a GPU when
    there is one), the data read from `data_dir` unless given. Returns (device, train, val)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          ("cpu" if device == "auto" else device))
    if train_data is None:
        train_data, val_data = train_and_validation_sets(data_dir, val_fraction, seed)
    return device, train_data, val_data


def epoch_batches(count: int, rng: np.random.Generator, batch_size: int, description: str, progress: bool):
    """One epoch's shuffled batches of clip indices, behind a progress bar when tqdm is installed.
    A last batch of one clip is dropped: BatchNorm needs two."""
    order = rng.permutation(count)
    batches = [order[start:start + batch_size] for start in range(0, count, batch_size)]
    batches = [picked for picked in batches if len(picked) >= 2]
    try:
        from tqdm import tqdm
    except ImportError:
        return batches
    return tqdm(batches, desc=description, disable=not progress, leave=False)


def batch_logits(model: HEAR, clips: list[torch.Tensor], spec_augment: torch.Generator | None = None,
                 warp_factors: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of clips of any lengths, each normalised over itself as the runtime does it.

    The official batched preprocessor lets padding into each clip's statistics; here every clip
    is preprocessed alone (or together, when no padding is needed) and only the features are
    padded, which the model then masks.
    """
    if len({clip.shape[0] for clip in clips}) == 1:
        waveform = torch.stack(clips)[:, None]
        log_mel, num_frames, log_power = model.preprocessor(
            waveform, torch.full((len(clips),), clips[0].shape[0], device=waveform.device))
    else:
        features = [model.preprocessor(clip[None, None], torch.tensor([clip.shape[0]], device=clip.device))
                    for clip in clips]
        frames = max(f[0].shape[-1] for f in features)
        log_mel = torch.stack([F.pad(f[0][0], (0, frames - f[0].shape[-1])) for f in features])
        log_power = torch.stack([F.pad(f[2][0], (0, frames - f[2].shape[-1])) for f in features])
        num_frames = torch.cat([f[1] for f in features])
    if warp_factors is not None:
        mel_hz, power_hz = _bin_centres_hz(model.preprocessor.n_fft)
        log_mel = _warp_frequency(log_mel, warp_factors, mel_hz)
        log_power = _warp_frequency(log_power, warp_factors, power_hz)
    if spec_augment is not None:
        log_mel, log_power = _spec_augment(log_mel, log_power, spec_augment)
    hidden, lengths = model.forward_features(log_mel, log_power, num_frames)
    return model.decoder(hidden, lengths)


def _spec_augment(log_mel: torch.Tensor, log_power: torch.Tensor, generator: torch.Generator):
    """Two frequency bands and two time spans per clip set to the mean (0 after normalisation)."""
    batch, mels, frames = log_mel.shape
    bins = log_power.shape[1]
    keep_mel = torch.ones_like(log_mel)
    keep_power = torch.ones_like(log_power)
    draws = torch.rand(batch, 8, generator=generator).tolist()
    for b, (f0, f1, f2, f3, t0, t1, t2, t3) in enumerate(draws):
        for start, width in ((f0, f1), (f2, f3)):
            low, size = int(start * mels), int(width * 16)
            keep_mel[b, low:low + size] = 0
            keep_power[b, int(start * bins):int(start * bins) + int(width * 64)] = 0
        for start, width in ((t0, t1), (t2, t3)):
            low, size = int(start * frames), int(width * max(1, frames // 10))
            keep_mel[b, :, low:low + size] = 0
            keep_power[b, :, low:low + size] = 0
    return log_mel * keep_mel, log_power * keep_power


def _warp_frequency(features: torch.Tensor, factors: torch.Tensor, bin_hz: np.ndarray) -> torch.Tensor:
    """Move each clip's spectrum from f to f * factor (formants shift, pitch and tempo stay): a
    vocal-tract-length perturbation on features whose bins are centred at `bin_hz`, by interpolation."""
    positions = np.arange(len(bin_hz), dtype=np.float64)
    source = np.stack([np.interp(bin_hz / factor, bin_hz, positions) for factor in factors.tolist()])
    source = torch.from_numpy(source).to(features.device, features.dtype)
    low = source.floor().long()
    high = (low + 1).clamp(max=len(bin_hz) - 1)
    weight = (source - low)[:, :, None]

    def take(index):
        return features.gather(1, index[:, :, None].expand(-1, -1, features.shape[2]))

    return take(low) * (1 - weight) + take(high) * weight


@functools.lru_cache(maxsize=4)
def _bin_centres_hz(power_n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre frequencies of the log-mel bins (filter centroids) and of the log-power bins; computed
    once per size, not per training batch."""
    fb = mel_filterbank(FRONTEND.sample_rate_hz, FRONTEND.n_fft, FRONTEND.num_mel_bins).astype(np.float64)
    fft_hz = np.linspace(0, FRONTEND.sample_rate_hz / 2, fb.shape[0])
    mel_hz = (fb * fft_hz[:, None]).sum(0) / np.maximum(fb.sum(0), 1e-12)
    return mel_hz, np.linspace(0, FRONTEND.sample_rate_hz / 2, power_n_fft // 2 + 1)


def _speed_batch(waves: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """_speed for a (batch, samples) stack, one factor per clip, by linear interpolation about the centre."""
    length = waves.shape[1]
    centre = (length - 1) / 2
    source = (torch.arange(length, device=waves.device, dtype=waves.dtype)[None] - centre) * factors[:, None].to(
        waves.dtype) + centre
    inside = (source >= 0) & (source <= length - 1)
    source = source.clamp(0, length - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=length - 1)
    weight = source - low
    return (waves.gather(1, low) * (1 - weight) + waves.gather(1, high) * weight) * inside


def _speed(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """Play `factor` times faster (pitch moves with it), cropped or zero-padded to the same length."""
    length = clip.shape[0]
    stretched = F.interpolate(clip[None, None], size=max(2, int(round(length / factor))), mode="linear",
                              align_corners=False)[0, 0]
    if stretched.shape[0] >= length:
        start = (stretched.shape[0] - length) // 2
        return stretched[start:start + length]
    pad = length - stretched.shape[0]
    return F.pad(stretched, (pad // 2, pad - pad // 2))


def evaluate(model: HEAR, data: LabelledAudio, device, batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data.clips), batch_size):
            clips = [torch.from_numpy(c).to(device) for c in data.clips[start:start + batch_size]]
            predicted = batch_logits(model, clips).argmax(dim=1).cpu().numpy()
            correct += int((predicted == np.array(data.targets[start:start + batch_size])).sum())
    return correct / max(1, len(data.clips))


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
                factors = rng.uniform(*speed_range, size=len(clips))
                if len({c.shape[0] for c in clips}) == 1:
                    clips = list(_speed_batch(torch.stack(clips), torch.tensor(factors, device=device)))
                else:
                    clips = [_speed(c, float(f)) for c, f in zip(clips, factors)]
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
