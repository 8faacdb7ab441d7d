#!/usr/bin/env python3
"""The teacher checks the synthetic words (issue 20): a rendering the teacher hears as another word
is dropped from the keyword set.

``check(words_dir)`` runs the teacher (``teacher.py``) on renderings listed in
``words_dir/utterances.csv`` and appends to ``words_dir/teacher_check.csv`` (one row per checked
rendering: what the teacher heard and the verdict); renderings it already lists are not checked again. ``mixing.build`` and the streams then leave out the
renderings whose verdict is ``other``.

Verdicts (``verdict``):
* a keyword rendering: ``heard`` when the teacher's words hold the keyword (or a homophone),
  ``other`` when it hears words but not that one, ``none`` when it hears nothing (kept: the teacher
  is weak on isolated synthetic words, a miss is not evidence of another word);
* another word (``_unknown_`` material): ``other`` only when the teacher hears a keyword in it (the
  confusion that teaches false alarms), else ``heard``/``none``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio import SR  # noqa: E402
from common import KEYWORDS, log, read_csv  # noqa: E402

CHECK_CSV = "teacher_check.csv"
PAD_S = 0.3  # silence around a trimmed rendering, so the teacher hears a word, not a click
HOMOPHONES = {"no": {"know", "noh"}, "right": {"write", "rite", "wright"}, "go": {"goh"},
              "yes": {"yess"}, "off": set(), "on": set(), "up": set(), "down": set(), "left": set(),
              "stop": set()}


def verdict(word: str, heard: str) -> str:
    """'heard', 'other' or 'none' for a rendering of `word` the teacher transcribed as `heard`."""
    from amazon_queen import keywords_in, normalise

    tokens = [normalise(t) for t in heard.split()]
    tokens = [t for t in tokens if t]
    if not tokens:
        return "none"
    if word in KEYWORDS:
        return "heard" if word in tokens or HOMOPHONES.get(word, set()) & set(tokens) else "other"
    return "other" if keywords_in(tokens) else ("heard" if normalise(word) in tokens else "none")


FIELDS = ["path", "word", "engine", "speaker", "heard", "verdict"]


def check(words_dir, teacher, per_engine: int | None = None, seed: int = 0) -> dict:
    """Check the renderings of words_dir (all, or `per_engine` drawn per engine with `seed`, half
    keywords) that words_dir/teacher_check.csv does not list yet, append their rows to it as they
    come (an interrupted run resumes), and return the counts per engine and verdict of the whole
    file. A rendering made again (piper differs run to run) needs the file deleted first."""
    import soundfile as sf

    words_dir = Path(words_dir)
    check_csv = words_dir / CHECK_CSV
    before = read_csv(check_csv) if check_csv.exists() else []
    known = {r["path"] for r in before}
    rows = [r for r in read_csv(words_dir / "utterances.csv") if r["path"] not in known]
    rng = np.random.default_rng([seed, 20])
    chosen = []
    for engine in sorted({r["engine"] for r in rows}):
        mine = [r for r in rows if r["engine"] == engine]
        if per_engine is not None and len(mine) > per_engine:
            kw = [r for r in mine if r["word"] in KEYWORDS]
            other = [r for r in mine if r["word"] not in KEYWORDS]
            n_kw = min(len(kw), per_engine // 2)
            n_other = min(len(other), per_engine - n_kw)
            mine = ([kw[i] for i in sorted(rng.choice(len(kw), n_kw, replace=False))]
                    + [other[i] for i in sorted(rng.choice(len(other), n_other, replace=False))])
        chosen.extend(mine)
    out, t0 = [], time.time()
    pad = np.zeros(int(PAD_S * SR), dtype=np.float32)
    with open(check_csv, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if not before:
            w.writeheader()
        for r in chosen:
            x, sr = sf.read(str(words_dir / r["path"]), dtype="float32")
            heard = teacher.text(np.concatenate([pad, x, pad]))
            out.append(dict(path=r["path"], word=r["word"], engine=r["engine"], speaker=r["speaker"],
                            heard=heard, verdict=verdict(r["word"], heard)))
            w.writerow(out[-1])
            f.flush()
    every = before + out
    summary = {"checked": len(out), "listed": len(every), "seconds": round(time.time() - t0, 1),
               "per_engine": {}}
    for engine in sorted({r["engine"] for r in every}):
        for group, sel in (("keyword", lambda r: r["word"] in KEYWORDS),
                           ("other_word", lambda r: r["word"] not in KEYWORDS)):
            mine = [r for r in every if r["engine"] == engine and sel(r)]
            summary["per_engine"].setdefault(engine, {})[group] = {
                v: sum(r["verdict"] == v for r in mine) for v in ("heard", "other", "none")}
    log(f"[teacher check] {json.dumps(summary)}")
    return summary


def dropped_paths(words_dir) -> set:
    """The renderings of words_dir the teacher heard as another word (empty when never checked)."""
    path = Path(words_dir) / CHECK_CSV
    if not path.exists():
        return set()
    return {r["path"] for r in read_csv(path) if r["verdict"] == "other"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="kws.py teacher-check", description=__doc__.split("\n")[0])
    ap.add_argument("words_dir")
    ap.add_argument("--per-engine", type=int, default=None, help="check a sample of this many per engine")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from teacher import Teacher

    check(args.words_dir, Teacher(), per_engine=args.per_engine, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
