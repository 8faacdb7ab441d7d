"""Fine-tune the default model on a keyword set built by `examples/kws/kws.py build`, on the CPU.

The recipe behind a default-model update when no GPU is lent: start from the shipped model's
weights (its label order kept, so its head starts where it was), train on the build's `train/`
folders, keep the best epoch on `val/`, stop at a time budget.

    python3 examples/recover_checkpoint.py OLD.hearedge runs/kws12-0.2.pt     # if the fp32 file is gone
    python3 examples/finetune_default_model.py BUILD_DIR --init runs/kws12-0.2.pt --out runs/kws12-0.3 \\
        --epochs 4 --max-minutes 60

With the Whisper teacher and a resumable run (the recipe of model 0.4, examples/kws/RECIPE_0.4.md):
the teacher's frames are cached per clip, so waveform augmentations drawn per epoch are off
(`--speed-range none`); `--resume` continues the run saved in `--checkpoint-dir`, in a later session too.

    python3 examples/finetune_default_model.py MIX --init kws12-0.3.pt --out runs/teacher --epochs 3 \\
        --batch-size 32 --speed-range none --teacher whisper-tiny.en --teacher-cache CACHE \\
        --checkpoint-dir runs/teacher/state --checkpoint-every 25 --threads 1 [--resume] [--max-steps N]

The labels are read in the default model's order (LABELS), so the written checkpoint keeps it
(`hear-edge finetune` sorts the folders and reorders an init head by its `.labels.txt`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", type=Path, help="a kws.py build: train/ and val/ folders, one per label")
    parser.add_argument("--init", required=True, help="the model to start from (full HEAR checkpoint)")
    parser.add_argument("--config", help="its config.json (default: the .config.json beside --init)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--freeze-acoustic", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed-range", default="0.8,1.25", help="SLOWEST,FASTEST playback, or none (a teacher "
                                                                  "needs none)")
    parser.add_argument("--teacher", default=None, help="whisper-tiny.en (needs hear-edge[teacher])")
    parser.add_argument("--teacher-weight", type=float, default=1.0)
    parser.add_argument("--teacher-layer", type=int, default=-1)
    parser.add_argument("--teacher-cache", default=None, help="the folder hear-edge teacher-frames filled")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--checkpoint-dir", default=None, help="the run's state (optimizer, RNGs, step)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="also save the state every N steps")
    parser.add_argument("--resume", action="store_true", help="continue the run in --checkpoint-dir")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps in all (resume later)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--balance-labels", action="store_true", help="draw every label equally often each epoch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spinning threads slow a shared host
    speed_range = None if args.speed_range == "none" else tuple(float(x) for x in args.speed_range.split(","))

    import torch

    from hear_edge.training.finetune import finetune
    from hear_edge.training.toolkit import read_labelled_folders

    config = args.config or str(Path(args.init).with_suffix(".config.json"))
    train = read_labelled_folders(args.build / "train", LABELS)
    val = read_labelled_folders(args.build / "val", LABELS)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = finetune(None, args.out / "model.pt", init=args.init, config=config, train_data=train, val_data=val,
                      freeze_acoustic=args.freeze_acoustic, epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.lr, seed=args.seed, max_minutes=args.max_minutes, spec_augment=True,
                      speed_range=speed_range, frequency_warp=0.12, device="cpu", teacher=args.teacher,
                      teacher_weight=args.teacher_weight, teacher_layer=args.teacher_layer,
                      teacher_cache=args.teacher_cache, precision=args.precision,
                      checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                      resume=args.resume, max_steps=args.max_steps, balance_labels=args.balance_labels)
    report = {"train_clips": len(train.clips), "val_clips": len(val.clips), "init": str(args.init),
              "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "freeze_acoustic": args.freeze_acoustic, "speed_range": speed_range, "teacher": args.teacher,
              "teacher_weight": args.teacher_weight, "precision": result.precision, "steps": result.steps,
              "finished": result.finished, "threads": torch.get_num_threads(), "best_epoch": result.best_epoch,
              "best_val_accuracy": result.best_val_accuracy, "history": result.history,
              "minutes": (time.perf_counter() - started) / 60, "cpu_s": time.process_time()}
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
