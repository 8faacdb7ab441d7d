#!/usr/bin/env python3
"""Accuracy of fp32 keyword checkpoints (PyTorch) side by side on labelled folders (RECIPE_0.4.md).

    python3 eval_checkpoints.py --model 0.3=kws12-0.3.pt --model teacher=runs/teacher/model.pt \\
        --config kws12-0.3.config.json --set heldout=tests/data/kws_heldout \\
        --set queen_kw=QUEEN/cuts/test --exclude queen_kw=_unknown_ --json out.json

Each set is a folder of label folders (the default model's 12 labels; a missing label is skipped).
`--exclude SET=LABEL` leaves a label out of a set (e.g. the Queen test cuts split into keyword cuts
and real `_unknown_` speech). Reports the accuracy, hits and clips per model and set, and per label.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]


def load_set(root: Path, excluded: set[str]):
    from hear_edge.signal.audio import AUDIO_SUFFIXES, load_input

    clips, targets = [], []
    for index, label in enumerate(LABELS):
        folder = root / label
        if label in excluded or not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
            clips.append(load_input(path).mean(axis=0).astype("float32"))
            targets.append(index)
    return clips, targets


def predict(model, clips, batch_size: int = 32):
    import torch

    from hear_edge.training.toolkit import batch_logits

    out = []
    with torch.no_grad():
        for start in range(0, len(clips), batch_size):
            batch = [torch.from_numpy(c) for c in clips[start:start + batch_size]]
            out.extend(batch_logits(model, batch).argmax(-1).tolist())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (official keys)")
    ap.add_argument("--config", required=True, help="config.json of the checkpoints")
    ap.add_argument("--set", action="append", required=True, help="NAME=FOLDER of label folders")
    ap.add_argument("--exclude", action="append", default=[], help="SET=LABEL to leave out")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from hear_edge.reference.model import load_checkpoint

    torch.set_num_threads(args.threads)
    excluded: dict[str, set] = {}
    for item in args.exclude:
        name, _, label = item.partition("=")
        excluded.setdefault(name, set()).add(label)
    sets = {}
    for item in args.set:
        name, _, folder = item.partition("=")
        sets[name] = load_set(Path(folder), excluded.get(name, set()))
    report = {"sets": {name: len(c) for name, (c, _) in sets.items()}, "models": {}}
    for item in args.model:
        name, _, checkpoint = item.partition("=")
        started = time.perf_counter()
        model = load_checkpoint(checkpoint, args.config).eval()
        results = {}
        for set_name, (clips, targets) in sets.items():
            predicted = predict(model, clips)
            hits = [p == t for p, t in zip(predicted, targets)]
            per_label = {}
            for t, ok in zip(targets, hits):
                tally = per_label.setdefault(LABELS[t], [0, 0])
                tally[0] += int(ok)
                tally[1] += 1
            results[set_name] = {"accuracy": round(sum(hits) / len(hits), 4), "hits": sum(hits), "clips": len(hits),
                                 "per_label": {k: f"{a}/{b}" for k, (a, b) in per_label.items()}}
        results["seconds"] = round(time.perf_counter() - started, 1)
        report["models"][name] = results
        print(name, {k: (v["accuracy"], f"{v['hits']}/{v['clips']}") for k, v in results.items() if k != "seconds"},
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
