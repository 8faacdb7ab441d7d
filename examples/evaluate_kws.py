"""Accuracy of a keyword bundle on labelled folders, per backend and precision (and PyTorch).

    python3 examples/evaluate_kws.py BUNDLE DATA_DIR [--checkpoint model.pt --config model.config.json]
        [--per-class 50] [--json out.json]

DATA_DIR holds one folder per label (as `examples/kws/kws.py build` writes them). Clips are
taken in sorted order, `--per-class` of each, so the subset is fixed. When the build's
`metadata.csv` sits beside DATA_DIR, the report also gives the accuracy per TTS engine
and per voice (`per_voice_accuracy`): a held-out figure is only as broad as the voices behind it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from hear_edge import HearEdge
from hear_edge.bundle.manifest import read_manifest
from hear_edge.runtimes.base import format_backend
from hear_edge.signal.audio import AUDIO_SUFFIXES, load_input


def load_clips(data_dir: Path, labels: list[str], per_class: int | None):
    clips, targets, names = [], [], []
    for index, label in enumerate(labels):
        folder = data_dir / label
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)[:per_class]
        for path in files:
            clips.append(load_input(path)[0])
            targets.append(index)
            names.append(path.relative_to(data_dir).as_posix())
    return clips, np.array(targets), names


def voice_of_clip(data_dir: Path) -> dict[str, tuple[str, str]]:
    """'<label>/<file>' -> (engine, speaker), from the metadata.csv that `kws.py build` writes beside
    its split folders; empty when there is none."""
    metadata = data_dir.parent / "metadata.csv"
    if not metadata.is_file():
        return {}
    with open(metadata, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {row["path"].split("/", 1)[1]: (row["engine"] or "none", row["speaker"] or "none")
            for row in rows if row["path"].split("/", 1)[0] == data_dir.name}


def per_voice_accuracy(names: list[str], correct: np.ndarray, voices: dict) -> dict:
    """Accuracy and clip count per engine and per speaker (silence clips have the voice 'none')."""
    tallies: dict[str, list[int]] = {}
    for name, ok in zip(names, correct):
        if name not in voices:
            continue
        engine, speaker = voices[name]
        for key in (f"engine {engine}", f"speaker {speaker}"):
            tally = tallies.setdefault(key, [0, 0])
            tally[0] += int(ok)
            tally[1] += 1
    return {key: {"accuracy": hits / count, "clips": count} for key, (hits, count) in sorted(tallies.items())}


def evaluate(bundle, data_dir, checkpoint=None, config=None, per_class: int | None = 50) -> dict:
    manifest = read_manifest(bundle)
    clips, targets, names = load_clips(Path(data_dir), manifest.labels, per_class)
    predictions = {}
    for fmt, precision in manifest.variants():
        model = HearEdge.load(bundle, backend=format_backend(fmt), precision=precision)
        predictions[f"{fmt} {precision}"] = np.array(
            [model.classify(c, 16000, max_results=1).top.index for c in clips])
    if checkpoint:
        import torch

        from hear_edge.reference.model import load_checkpoint

        reference = load_checkpoint(checkpoint, config)
        with torch.no_grad():
            predictions["pytorch fp32"] = np.array(
                [int(reference(torch.from_numpy(c)[None, None], torch.tensor([len(c)])).argmax()) for c in clips])
    report = {"clips": len(clips), "per_class": per_class,
              "accuracy": {k: float((v == targets).mean()) for k, v in predictions.items()}}
    for name, values in predictions.items():
        if name.endswith("int8"):
            fp32 = predictions.get(name.replace("int8", "fp32"))
            if fp32 is None:  # a bundle that ships int8 only: agreement with the PyTorch fp32 model
                fp32 = predictions.get("pytorch fp32")
            if fp32 is not None:
                report.setdefault("int8_top1_agreement_with_fp32", {})[name] = float((values == fp32).mean())
    first = next(iter(predictions.values()))
    report["per_class_accuracy"] = {label: float((first[targets == i] == i).mean())
                                    for i, label in enumerate(manifest.labels) if (targets == i).any()}
    voices = voice_of_clip(Path(data_dir))
    if voices:
        report["per_voice_accuracy"] = per_voice_accuracy(names, first == targets, voices)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("data_dir")
    parser.add_argument("--checkpoint")
    parser.add_argument("--config")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    report = evaluate(args.bundle, args.data_dir, args.checkpoint, args.config, args.per_class)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
