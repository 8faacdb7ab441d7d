#!/usr/bin/env python3
"""Mix keyword-set sources into one training folder (the data of model 0.4, RECIPE_0.4.md).

    python3 mix_sets.py OUT --source synth=BUILD --source windows=WINDOWS --queen QUEEN_OUT \\
        --queen-keyword-copies 2 --queen-unknown train=2000,val=300 --speed-copies 0.9,1.1 --seed 0

Writes OUT/<split>/<label>/<source>__<file> as symbolic links to the sources' files (nothing is
copied), for the splits train and val:
* each `--source NAME=DIR` is a `kws.py build` or `kws.py windows` folder (DIR/<split>/<label>/);
* `--queen` is a `kws.py queen cut` folder: its confirmed keyword cuts (`cuts/<split>/<kw>/`), each
  linked `--queen-keyword-copies` times in train (they are the scarcest clips: 335 real keywords),
  and a seeded draw of its real-speech `_unknown_` windows (`--queen-unknown` per split).
* `--speed-copies F1,F2,...` (train only): each distinct linked clip is also written, played F times
  as fast (pitch follows; resampled as `kws.py build` perturbs speed, then cropped or zero-padded about
  its centre back to 1 s), as OUT/train/<label>/<source>@<F>__<file>.wav (PCM16), counted as source
  `<source>@<F>`. These are files, not links: the teacher's frames are cached per clip, so speed
  perturbation drawn during training is refused, and written copies bring it back.
The same sources and seed give the same links and copies. OUT/mix.json records the counts per split,
source and label. Test splits are never linked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio import SR, centred, play_at, read_mono, to_pcm16  # noqa: E402

SPLITS = ("train", "val")
AUDIO = (".wav", ".flac")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO) if folder.is_dir() else []


def speed_copy(path: Path, factor: float) -> np.ndarray:
    """The clip at `path` played `factor` times as fast (pitch follows, `play_at` as `mixing.mix_clip`'s
    speed perturbation), cropped or zero-padded about its centre back to its own length."""
    x = read_mono(path)
    return centred(play_at(x, factor), len(x))


def mix(out: Path, sources: dict[str, Path], queen: Path | None, keyword_copies: int,
        queen_unknown: dict[str, int], seed: int, speed_factors: tuple = ()) -> dict:
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: give a new folder (the links are written once)")
    if any(not 0.5 <= f <= 2.0 or f == 1.0 for f in speed_factors):
        raise SystemExit(f"--speed-copies takes playback factors in [0.5, 2] other than 1, e.g. 0.9,1.1; "
                         f"got {list(speed_factors)}")
    counts: dict = {}
    linked: dict = {}  # train: (label, source, path) of each distinct clip, for the speed copies

    def tally(split: str, source: str, label: str) -> None:
        mine = counts.setdefault(split, {}).setdefault(source, {})
        mine[label] = mine.get(label, 0) + 1

    def link(split: str, label: str, source: str, path: Path, copy: int = 0) -> None:
        target = out / split / label
        target.mkdir(parents=True, exist_ok=True)
        name = f"{source}__{path.name}" if copy == 0 else f"{source}{copy}__{path.name}"
        (target / name).symlink_to(path.resolve())
        tally(split, source, label)
        if split == "train":
            linked.setdefault((label, source, path.name), path)

    for split in SPLITS:
        for source, root in sources.items():
            for label_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
                for path in _files(label_dir):
                    link(split, label_dir.name, source, path)
        if queen is None:
            continue
        rng = np.random.default_rng([seed, SPLITS.index(split)])
        for label_dir in sorted(p for p in (queen / "cuts" / split).iterdir() if p.is_dir()):
            files = _files(label_dir)
            if label_dir.name == "_unknown_":
                wanted = min(queen_unknown.get(split, 0), len(files))
                for i in sorted(rng.choice(len(files), wanted, replace=False)):
                    link(split, "_unknown_", "queen", files[i])
            else:
                for copy in range(keyword_copies if split == "train" else 1):
                    for path in files:
                        link(split, label_dir.name, "queen", path, copy)
    for factor in speed_factors:
        for (label, source, name), path in linked.items():
            copy = f"{source}@{factor:g}"
            sf.write(str(out / "train" / label / f"{copy}__{Path(name).stem}.wav"),
                     to_pcm16(speed_copy(path, factor)), SR, subtype="PCM_16", format="WAV")
            tally("train", copy, label)
    summary = {"seed": seed, "sources": {k: str(v) for k, v in sources.items()},
               "queen": str(queen) if queen else None, "queen_keyword_copies": keyword_copies,
               "queen_unknown": queen_unknown, "speed_copies": list(speed_factors), "counts": counts,
               "totals": {s: sum(sum(t.values()) for t in counts.get(s, {}).values()) for s in SPLITS}}
    (out / "mix.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--source", action="append", default=[], help="NAME=DIR: a kws.py build or windows folder")
    ap.add_argument("--queen", type=Path, default=None, help="a kws.py queen cut folder")
    ap.add_argument("--queen-keyword-copies", type=int, default=1)
    ap.add_argument("--queen-unknown", default="train=2000,val=300", help="real _unknown_ windows per split")
    ap.add_argument("--speed-copies", default="", help="train: also write each clip played this many times "
                                                        "as fast, e.g. 0.9,1.1")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sources = {}
    for item in args.source:
        name, _, folder = item.partition("=")
        if not name or not folder:
            ap.error(f"--source takes NAME=DIR, got {item!r}")
        sources[name] = Path(folder)
    unknown = {k: int(v) for k, v in (p.split("=") for p in args.queen_unknown.split(",") if p)}
    factors = tuple(float(f) for f in args.speed_copies.split(",") if f)
    print(json.dumps(mix(args.out, sources, args.queen, args.queen_keyword_copies, unknown, args.seed,
                         factors)["totals"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
