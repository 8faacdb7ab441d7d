"""Fine-tune the default model on a keyword set built by `examples/kws/kws.py build`, on the CPU.

The recipe behind a default-model update when no GPU is lent: start from the shipped model's
weights (its label order kept, so its head starts where it was), train on the build's `train/`
folders, keep the best epoch on `val/`, stop at a time budget.

    python3 examples/recover_checkpoint.py OLD.hearedge runs/kws12-0.2.pt     # if the fp32 file is gone
    python3 examples/finetune_default_model.py BUILD_DIR --init runs/kws12-0.2.pt --out runs/kws12-0.3 \\
        --epochs 4 --max-minutes 60
"""

from __future__ import annotations

import argparse
import json
import logging
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from hear_edge.training.finetune import finetune
    from hear_edge.training.toolkit import read_labelled_folders

    config = args.config or str(Path(args.init).with_suffix(".config.json"))
    train = read_labelled_folders(args.build / "train", LABELS)
    val = read_labelled_folders(args.build / "val", LABELS)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = finetune(None, args.out / "model.pt", init=args.init, config=config, train_data=train, val_data=val,
                      freeze_acoustic=args.freeze_acoustic, epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.lr, seed=args.seed, max_minutes=args.max_minutes, spec_augment=True,
                      speed_range=(0.8, 1.25), frequency_warp=0.12, device="cpu")
    report = {"train_clips": len(train.clips), "val_clips": len(val.clips), "init": str(args.init),
              "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "freeze_acoustic": args.freeze_acoustic, "best_epoch": result.best_epoch,
              "best_val_accuracy": result.best_val_accuracy, "history": result.history,
              "minutes": (time.perf_counter() - started) / 60}
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
