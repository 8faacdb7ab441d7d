"""Multiply-accumulates and FLOPs of HEAR, counted from a config the way the runtime runs it. Torch-free:
the bench's GFLOP/s and the trimmer's before/after figures both come from here."""

from __future__ import annotations

from hear_edge.signal.windows import plan_windows
from .config import AcousticModelConfig, HearConfig


def acoustic_window_macs(acoustic: dict, frames: int) -> float:
    """Multiply-accumulates of one Acoustic Model window of `frames` frames, per-layer sizes included."""
    config = AcousticModelConfig(**acoustic)
    hidden = config.hidden_size
    macs = frames * 2 * 128 * hidden  # conv front end
    for layer in range(config.num_transformer_layers):
        width, inner = config.heads_in_layer(layer) * config.head_size, config.intermediate_size_in_layer(layer)
        macs += 4 * frames * hidden * width  # q, k, v, out
        macs += 2 * frames * frames * width  # content scores and weighted values
        macs += 2 * frames * frames * width  # the Shaw position terms, as the official gather computes them
        macs += 2 * frames * hidden * inner  # FFN
    return float(macs)


def acoustic_macs(acoustic: dict, seconds: float, window_frames: int, overlap_frames: int) -> float:
    """Acoustic Model multiply-accumulates for a clip of `seconds`, window by window as the runtime
    runs it: each window only its valid frames (the last window of a long clip is shorter)."""
    frames = (int(seconds * 16000) // 160 + 1) // 2
    return sum(acoustic_window_macs(acoustic, valid) for _, valid in plan_windows(frames, window_frames, overlap_frames))


def model_flops(manifest, seconds: float) -> float:
    """Matrix-multiply FLOPs (2 per multiply-accumulate) of one clip, as HEAR computes it."""
    config = manifest.provenance["config"]
    acoustic, task = config["acoustic_model"], config["task_model"]
    hidden = acoustic["hidden_size"]
    mel_frames = int(seconds * 16000) // 160 + 1
    frames = mel_frames // 2
    macs = acoustic_macs(acoustic, seconds, manifest.window_frames, manifest.overlap_frames)
    task_hidden, task_inner = task["hidden_size"], task["intermediate_size"]
    bins = acoustic["spectrogram_n_fft"] // 2 + 1
    macs += frames * (2 * bins * hidden + hidden * hidden + 2 * hidden * task_hidden)  # mixture
    macs += frames * (4 * task_hidden ** 2 + 2 * task_hidden * task_inner) + 2 * frames ** 2 * task_hidden
    macs += mel_frames * bins * 128  # mel filterbank
    return 2.0 * macs


def config_acoustic_macs(config: HearConfig, seconds: float) -> float:
    """`acoustic_macs` of a model's config, in the config's own windows (`max_length`, `overlap`): a
    checkpoint has no bundle to read them from. The trimmer's before and after figures."""
    acoustic = config.to_dict()["acoustic_model"]
    return acoustic_macs(acoustic, seconds, acoustic["max_length"], acoustic["overlap"])
