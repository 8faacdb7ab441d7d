"""What fine-tuning and trimming both train with: labelled audio folders, a seeded run's opening,
shuffled batches, logits of clips of any length, augmentations, evaluation and the sidecar files."""

from __future__ import annotations

import functools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hear_edge.errors import DataFolderError, InvalidArgumentError
from hear_edge.host import cpu_has_bf16
from hear_edge.reference.config import HearConfig
from hear_edge.reference.model import FRONTEND, HEAR
from hear_edge.signal.audio import AUDIO_SUFFIXES, load_input
from hear_edge.signal.frontend import mel_filterbank


@dataclass
class LabelledAudio:
    """Clips with the index of each one's label and the file it came from."""

    labels: list[str]
    clips: list[np.ndarray]  # mono float32 at 16 kHz
    targets: list[int]
    names: list[str]


def read_labelled_folders(root: str | Path, labels: list[str] | None = None) -> LabelledAudio:
    """One sub-folder per label, audio files inside (any depth), read and resampled to 16 kHz mono."""
    root = Path(root)
    if not root.is_dir():
        raise DataFolderError(f"data folder {root} does not exist.")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if labels is None:
        labels = [p.name for p in folders]
    if len(labels) < 2:
        raise DataFolderError(f"{root} needs at least two label folders (one folder per label), found {len(labels)}.")
    data = LabelledAudio(labels, [], [], [])
    for index, label in enumerate(labels):
        files = sorted(p for p in (root / label).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise DataFolderError(f"label folder {root / label} has no audio files.")
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
    return progress_bar(shuffled_batches(count, rng, batch_size), description, progress)


def shuffled_batches(count: int, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
    """One epoch's batches of clip indices in a random order; a last batch of one clip is dropped."""
    return _in_batches(rng.permutation(count), batch_size)


def balanced_epoch_clips(targets) -> int:
    """How many clips one epoch of `balanced_batches` draws: len(targets) // labels present, each."""
    present = len(np.unique(np.asarray(targets)))
    return len(targets) // present * present


def balanced_batches(targets, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
    """One epoch's batches in which every label is drawn equally often (len(targets) // labels clips each):
    a label with more clips gives a random share of them, one with fewer is repeated, each pass in a new
    order; a last batch of one clip is dropped."""
    targets = np.asarray(targets)
    groups = [np.flatnonzero(targets == label) for label in np.unique(targets)]
    share = balanced_epoch_clips(targets) // len(groups)
    drawn = [np.concatenate([rng.permutation(members) for _ in range(-(-share // len(members)))])[:share]
             for members in groups]
    return _in_batches(rng.permutation(np.concatenate(drawn)), batch_size)


def _in_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """`order` cut into batches; a last batch of one clip is dropped (BatchNorm needs two)."""
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return [picked for picked in batches if len(picked) >= 2]


def progress_bar(items, description: str, progress: bool):
    """`items` behind a tqdm bar when tqdm is installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=description, disable=not progress, leave=False)


def batch_logits(model: HEAR, clips: list[torch.Tensor], spec_augment: torch.Generator | None = None,
                 warp_factors: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of clips of any lengths, each normalised over itself as the runtime does it.

    The official batched preprocessor lets padding into each clip's statistics; here every clip
    is preprocessed alone (or together, when no padding is needed) and only the features are
    padded, which the model then masks.
    """
    with torch.autocast(clips[0].device.type, enabled=False):  # features in fp32 under bf16 training
        log_mel, num_frames, log_power = _batch_features(model, clips)
    if warp_factors is not None:
        mel_hz, power_hz = _bin_centres_hz(model.preprocessor.n_fft)
        log_mel = _warp_frequency(log_mel, warp_factors, mel_hz)
        log_power = _warp_frequency(log_power, warp_factors, power_hz)
    if spec_augment is not None:
        log_mel, log_power = _spec_augment(log_mel, log_power, spec_augment)
    hidden, lengths = model.forward_features(log_mel, log_power, num_frames)
    return model.decoder(hidden, lengths)


def _batch_features(model: HEAR, clips: list[torch.Tensor]):
    if len({clip.shape[0] for clip in clips}) == 1:
        waveform = torch.stack(clips)[:, None]
        return model.preprocessor(waveform, torch.full((len(clips),), clips[0].shape[0], device=waveform.device))
    features = [model.preprocessor(clip[None, None], torch.tensor([clip.shape[0]], device=clip.device))
                for clip in clips]
    frames = max(f[0].shape[-1] for f in features)
    log_mel = torch.stack([F.pad(f[0][0], (0, frames - f[0].shape[-1])) for f in features])
    log_power = torch.stack([F.pad(f[2][0], (0, frames - f[2].shape[-1])) for f in features])
    return log_mel, torch.cat([f[1] for f in features]), log_power


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: torch.device) -> str:
    """"bf16" or "fp32" for a run: "auto" is bf16 autocast where the hardware computes bfloat16
    (a CPU with AMX or AVX-512 BF16, a GPU that supports it), fp32 elsewhere; the others force it."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The context a training step's forward runs in: bf16 autocast, or nothing (fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def write_atomically(path: Path, write) -> None:
    """`write(file)` into a temporary file beside `path`, then rename: a process killed while writing
    leaves the previous file whole (run states, the teacher's cached frames)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_run_state(path: Path, state: dict) -> None:
    """torch.save, atomically: a run killed while writing leaves the previous checkpoint whole."""
    write_atomically(path, lambda file: torch.save(state, file))


def rng_states(rng: np.random.Generator, generator: torch.Generator) -> dict:
    """Every random state a run draws from: numpy's run generator, the spec-augment generator,
    torch's global one (dropout) and Python's."""
    return {"numpy": rng.bit_generator.state, "generator": generator.get_state(),
            "torch": torch.get_rng_state(), "python": random.getstate()}


def restore_rng_states(states: dict, rng: np.random.Generator, generator: torch.Generator) -> None:
    rng.bit_generator.state = states["numpy"]
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])


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


def _speed(waves: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(batch, samples) clips each played `factors[i]` times faster (pitch moves with it), by linear
    interpolation about the centre; the length stays, past either end is silence."""
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


def speed_perturb(clips: list[torch.Tensor], factors) -> list[torch.Tensor]:
    """Each clip played `factors[i]` times faster, at its own length. Clip by clip through one
    `_speed`, so a clip and factor give the same samples whatever batch the clip is in."""
    return [_speed(clip[None], torch.tensor([float(factor)], device=clip.device))[0]
            for clip, factor in zip(clips, factors)]


def evaluate(model: HEAR, data: LabelledAudio, device, batch_size: int = 64) -> float:
    """Top-1 accuracy of `model` on `data` (eval mode, no gradients)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data.clips), batch_size):
            clips = [torch.from_numpy(c).to(device) for c in data.clips[start:start + batch_size]]
            predicted = batch_logits(model, clips).argmax(dim=1).cpu().numpy()
            correct += int((predicted == np.array(data.targets[start:start + batch_size])).sum())
    return correct / max(1, len(data.clips))
