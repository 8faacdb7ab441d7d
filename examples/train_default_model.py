"""Train the default model: full-size HEAR (official config) on the synthetic 12-class keyword set.

The recipe behind `hear_edge/assets/hear-kws12-demo.hearedge`. It runs on the CPU and uses a GPU
when there is one (the shipped model was trained on one NVIDIA H100 in about seven minutes:
`--epochs 12 --spec-augment --speed-min 0.8 --speed-max 1.25 --dropout 0.2 --frequency-warp 0.12`).

    python3 examples/kws/kws.py synth data/words          # TTS renderings (see examples/kws/INSTALL.md)
    python3 examples/kws/kws.py noise data/noise          # real background recordings + room IRs
    python3 examples/train_default_model.py --words data/words --noise data/noise --out runs/kws12
    hear-edge export runs/kws12/model.pt -o hear-kws12-demo.hearedge --config runs/kws12/model.config.json \\
        --labels runs/kws12/model.labels.txt --precision int8 --calibration <real audio folder>

Training clips are mixed from the training speakers and noises only; validation and test use
held-out speakers and noise recordings (examples/kws/kws.py splits by voice family and by file).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent / "kws"))
from common import LABELS  # noqa: E402  (the keyword-set builder's labels)
from mixing import build  # noqa: E402

from hear_edge.training.finetune import finetune  # noqa: E402
from hear_edge.training.toolkit import LabelledAudio, evaluate  # noqa: E402


def _build_part(job):
    out, words, noise, counts, seed = job
    build(out, words, noise, counts, seed=seed, progress=False)
    arrays = {}
    for split, count in counts.items():
        if count:
            clips = [soundfile.read(str(Path(out) / split / label / f"{i:05d}.wav"), dtype="int16")[0]
                     for label in LABELS for i in range(count)]
            arrays[split] = np.stack(clips)
    return counts, arrays


def build_sets(words, noise, work: Path, train_per_class: int, val_per_class: int, test_per_class: int,
               workers: int) -> dict[str, LabelledAudio]:
    """Clips mixed in parallel, each worker with its own seed; the same arguments give the same clips."""
    per_worker = -(-train_per_class // workers)
    jobs = [(str(work / f"part{i}"), str(words), str(noise),
             {"train": per_worker, "val": val_per_class if i == 0 else 0, "test": test_per_class if i == 0 else 0},
             1000 + i) for i in range(workers)]
    sets = {split: LabelledAudio(LABELS, [], [], []) for split in ("train", "val", "test")}
    with Pool(workers) as pool:
        for counts, arrays in pool.imap(_build_part, jobs):
            for split, array in arrays.items():
                per_class = counts[split]
                for row, clip in enumerate(array):
                    sets[split].clips.append(clip.astype(np.float32) / 32768)
                    sets[split].targets.append(row // per_class)
                    sets[split].names.append(f"{split}/{LABELS[row // per_class]}/{row % per_class}")
    return sets


def add_set_arguments(parser: argparse.ArgumentParser, work: str, train_per_class: int) -> None:
    """The options of `build_sets`, shared by the scripts that build the keyword set."""
    parser.add_argument("--work", default=work)
    parser.add_argument("--train-per-class", type=int, default=train_per_class)
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8)


def save_shards(checkpoint: Path, out: Path, shard_mb: float = 15.0) -> list[str]:
    """Split a state_dict into files under `shard_mb` (a transfer limit of the training machine)."""
    import torch

    state = torch.load(checkpoint, weights_only=True)
    shards, current, size = [], {}, 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > shard_mb * 1e6:
            shards.append(current)
            current, size = {}, 0
        current[key], size = tensor, size + nbytes
    shards.append(current)
    names = []
    for i, shard in enumerate(shards):
        names.append(f"model.shard{i}.pt")
        torch.save(shard, out / names[-1])
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", required=True)
    parser.add_argument("--noise", required=True)
    parser.add_argument("--out", required=True, help="folder for model.pt, labels, config and the report")
    add_set_arguments(parser, work="/tmp/kws-build", train_per_class=8000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spec-augment", action="store_true")
    parser.add_argument("--speed-min", type=float, default=None)
    parser.add_argument("--speed-max", type=float, default=None)
    parser.add_argument("--frequency-warp", type=float, default=None, help="VTLP: +-this frequency stretch")
    parser.add_argument("--keep", help="also copy model.pt here (a later run on the same machine trims it)")
    parser.add_argument("--dropout", type=float, default=None, help="training dropout (official: 0.1)")
    parser.add_argument("--shards", action="store_true", help="also write the checkpoint as <16 MB shards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sets = build_sets(args.words, args.noise, Path(args.work), args.train_per_class, args.val_per_class,
                      args.test_per_class, args.workers)
    build_minutes = (time.perf_counter() - started) / 60
    logging.info("built %s clips in %.1f min", {k: len(v.clips) for k, v in sets.items()}, build_minutes)
    from hear_edge.reference.config import HearConfig

    config = HearConfig()
    if args.dropout is not None:
        config.acoustic_model.dropout_probability = config.task_model.dropout_rate = args.dropout
        config.classification_decoder.dropout_rate = args.dropout
    speed = (args.speed_min, args.speed_max) if args.speed_min else None
    result = finetune(None, out / "model.pt", train_data=sets["train"], val_data=sets["val"], epochs=args.epochs,
                      config=config, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                      max_minutes=args.max_minutes, progress=False, spec_augment=args.spec_augment,
                      speed_range=speed, frequency_warp=args.frequency_warp)
    from hear_edge.reference.model import load_checkpoint

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_checkpoint(out / "model.pt", result.config_file).to(device)
    test_accuracy = evaluate(model, sets["test"], device)
    report = {"train_clips": len(sets["train"].clips), "val_clips": len(sets["val"].clips),
              "test_clips": len(sets["test"].clips), "build_minutes": build_minutes,
              "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
              "test_accuracy_heldout_voices": test_accuracy, "history": result.history,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "args": vars(args)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    logging.info("test accuracy on held-out voices and noises: %.4f", test_accuracy)
    if args.keep:
        import shutil

        Path(args.keep).mkdir(parents=True, exist_ok=True)
        for name in ("model.pt", "model.config.json", "model.labels.txt", "report.json"):
            shutil.copy(out / name, Path(args.keep) / name)
    if args.shards:
        report["shards"] = save_shards(out / "model.pt", out)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
