"""Keyword detection on a long stream: recall and false alarms per minute, per score threshold.

    python3 examples/evaluate_stream.py STREAM.flac [STREAM2.flac ...] [--bundle B] [--backend onnx]
        [--precision int8] [--smoothing 0,0.25,0.5] [--max-false-alarms-per-minute 1.0] [--write-threshold]
        [--json out.json]

STREAM.flac comes with STREAM.json (its words: start_s, end_s, label), as
`examples/kws/kws.py stream` writes them. The stream runs once with the bundle's context and hop
and no threshold; every threshold of the sweep is then replayed from those results with the
runtime's own detection rule (`hear_edge.run.streaming.replay_detections`), with the bundle's score
smoothing or `--smoothing`.

Scoring: a detection (label L over window [s, e)) is a hit when the window overlaps an
undetected word labelled L; anything else is a false alarm, a second detection of a word
included. Several streams are scored together (hits over all their keywords, false alarms over
all their minutes). For each smoothing, the chosen threshold is the lowest whose false alarms per
minute stay within the limit, so the one with the highest recall there; of the smoothings, the
shortest whose recall is within `--recall-slack` of the best (a longer one delays detections).
Choose them on validation streams (`--write-threshold` records both in the bundle's manifest,
`streaming.score_threshold` and `streaming.smoothing_seconds`), then report held-out streams at
the bundle's settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hear_edge import HearEdge
from hear_edge.host import cpu_model_and_flags
from hear_edge.run.streaming import replay_detections
from hear_edge.signal.audio import audio_blocks

# Finer near 1: a model sure of its words scores them 0.95-0.999, where false alarms thin out.
THRESHOLDS = [i / 100 for i in range(30, 90)] + [i / 1000 for i in range(900, 1000)]


def stream_results(model: HearEdge, path: Path, context_s: float | None, hop_s: float | None):
    """(every result of the stream over `path`, with every score; the stream)"""
    stream = model.create_stream(hop_seconds=hop_s, context_seconds=context_s, max_results=None,
                                 score_threshold=None)
    blocks, rate = audio_blocks(path, block_frames=16000)
    results = []
    for block in blocks:
        results += stream.accept_waveform(block, rate)
    return results + stream.flush(), stream


def score(detections, events: list[dict], minutes: float, background: set[str]) -> dict:
    """Hits, misses and false alarms of (result, category) detections against the stream's words."""
    keywords = [e for e in events if e["label"] not in background]
    found = [False] * len(keywords)
    false_alarms = []
    for result, category in detections:
        hit = None
        for i, word in enumerate(keywords):
            if word["label"] != category.label or found[i]:
                continue
            if min(result.end_s, word["end_s"]) > max(result.start_s, word["start_s"]):  # the window hears it
                hit = i
                break
        if hit is None:
            heard = [e["word"] for e in events if min(result.end_s, e["end_s"]) > max(result.start_s, e["start_s"])]
            false_alarms.append({"at_s": round(result.end_s, 2), "label": category.label,
                                 "score": round(category.score, 3), "words_in_window": heard})
        else:
            found[hit] = True
    per_label = {}
    for word, ok in zip(keywords, found):
        tally = per_label.setdefault(word["label"], [0, 0])
        tally[0] += ok
        tally[1] += 1
    return {"recall": sum(found) / max(1, len(keywords)), "detected": sum(found), "keywords": len(keywords),
            "false_alarms": len(false_alarms), "false_alarms_per_minute": len(false_alarms) / minutes,
            "recall_per_label": {k: round(v[0] / v[1], 3) for k, v in sorted(per_label.items())},
            "false_alarm_list": false_alarms}


def pooled(results_and_words, labels, background_labels, threshold, smoothing_s) -> dict:
    """Hits and false alarms of several streams at one setting, counted together."""
    rows = [score(replay_detections(results, labels, background_labels, threshold, smoothing_s),
                  words["events"], words["seconds"] / 60, set(background_labels))
            for results, words in results_and_words]
    detected, keywords = sum(r["detected"] for r in rows), sum(r["keywords"] for r in rows)
    minutes = sum(words["seconds"] for _, words in results_and_words) / 60
    alarms = sum(r["false_alarms"] for r in rows)
    return {"threshold": threshold, "smoothing_seconds": smoothing_s, "recall": detected / max(1, keywords),
            "detected": detected, "keywords": keywords, "false_alarms": alarms,
            "false_alarms_per_minute": alarms / minutes,
            "per_stream": [{k: r[k] for k in ("recall", "detected", "keywords", "false_alarms_per_minute")}
                           for r in rows]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("streams", type=Path, nargs="+", metavar="stream",
                        help="streams (.flac/.wav), each with its words in the same name .json; several are "
                             "scored together")
    parser.add_argument("--bundle", help="bundle folder (default: the shipped model)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--context", type=float, help="seconds per result (default: the bundle's)")
    parser.add_argument("--hop", type=float, help="seconds between results (default: the bundle's)")
    parser.add_argument("--smoothing", default=None,
                        help="seconds of results whose mean scores detections read, or a comma list to choose "
                             "from (default: the bundle's; 0: each result alone)")
    parser.add_argument("--recall-slack", type=float, default=0.05,
                        help="with several --smoothing values: take the smallest whose recall is within this "
                             "of the best (a longer smoothing delays detections; default 0.05)")
    parser.add_argument("--max-false-alarms-per-minute", type=float, default=1.0)
    parser.add_argument("--write-threshold", action="store_true",
                        help="record the chosen threshold and smoothing in the bundle's manifest "
                             "(streaming.score_threshold, streaming.smoothing_seconds)")
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args(argv)

    model = HearEdge.load(args.bundle, backend=args.backend, precision=args.precision)
    labels, background = model.labels, model.manifest.background_labels
    runs = []
    for path in args.streams:
        results, stream = stream_results(model, path, args.context, args.hop)
        runs.append((results, json.loads(path.with_suffix(".json").read_text())))
    smoothings = ([model.manifest.stream_smoothing_seconds] if args.smoothing is None
                  else [float(v) for v in args.smoothing.split(",")])
    minutes = sum(words["seconds"] for _, words in runs) / 60

    sweeps, chosen_per_smoothing = {}, {}
    for smoothing in smoothings:
        sweeps[smoothing] = [pooled(runs, labels, background, t, smoothing) for t in THRESHOLDS]
        within = [row for row in sweeps[smoothing] if row["false_alarms_per_minute"] <= args.max_false_alarms_per_minute]
        chosen_per_smoothing[smoothing] = within[0] if within else None
    found = [row for row in chosen_per_smoothing.values() if row is not None]
    best_recall = max((row["recall"] for row in found), default=None)
    chosen = next((row for row in found if row["recall"] >= best_recall - args.recall_slack), None)
    recorded = model.manifest.stream_score_threshold
    report = {
        "streams": [str(p) for p in args.streams], "minutes": round(minutes, 2), "keywords": found[0]["keywords"]
        if found else None,
        "stream_settings": [{k: words.get(k) for k in ("split", "seed", "engines", "clips_dir")} for _, words in runs],
        "bundle": str(model.bundle_dir), "model_version": model.manifest.model_version,
        "backend": model.backend, "precision": model.precision,
        "context_seconds": stream.context_seconds, "hop_seconds": stream.hop_seconds,
        "host": cpu_model_and_flags(),
        "max_false_alarms_per_minute": args.max_false_alarms_per_minute, "recall_slack": args.recall_slack,
        "chosen": chosen, "chosen_per_smoothing": {str(k): v for k, v in chosen_per_smoothing.items()},
        "at_bundle_settings": pooled(runs, labels, background, recorded, model.manifest.stream_smoothing_seconds)
        if recorded is not None else None,
        "sweep": {str(k): [{key: v for key, v in row.items() if key != "per_stream"} for row in rows]
                  for k, rows in sweeps.items()},
    }
    print(f"{len(runs)} stream(s), {minutes:.1f} min, {report['keywords']} keywords; {model.backend} "
          f"{model.precision}, context {report['context_seconds']:g} s, hop {report['hop_seconds']:g} s")
    for smoothing, rows in sweeps.items():
        print(f"smoothing {smoothing:g} s:")
        for row in [r for r in rows if r["threshold"] in (0.3, 0.5, 0.7, 0.9, 0.95, 0.97, 0.98, 0.99, 0.999)]:
            print(f"  threshold {row['threshold']:.3f}: recall {row['recall']:.1%}, "
                  f"{row['false_alarms_per_minute']:.2f} false alarms / min")
        row = chosen_per_smoothing[smoothing]
        print(f"  lowest threshold with <= {args.max_false_alarms_per_minute:g} false alarms / min: "
              + (f"{row['threshold']:.3f}, recall {row['recall']:.1%}, {row['false_alarms_per_minute']:.2f} / min"
                 if row else "none"))
    if chosen:
        print(f"chosen: smoothing {chosen['smoothing_seconds']:g} s, threshold {chosen['threshold']:.3f}, recall "
              f"{chosen['recall']:.1%}, {chosen['false_alarms_per_minute']:.2f} false alarms / min")
    else:
        print(f"no threshold keeps false alarms within {args.max_false_alarms_per_minute:g} / min")
    if report["at_bundle_settings"]:
        row = report["at_bundle_settings"]
        print(f"at the bundle's threshold {recorded:.3f} and smoothing {row['smoothing_seconds']:g} s: recall "
              f"{row['recall']:.1%}, {row['false_alarms_per_minute']:.2f} false alarms / min")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_threshold:
        if chosen is None:
            print("not writing a threshold: none meets the limit", file=sys.stderr)
            return 1
        model.manifest.streaming["score_threshold"] = chosen["threshold"]
        model.manifest.streaming["smoothing_seconds"] = chosen["smoothing_seconds"]
        model.manifest.streaming["background_labels"] = background
        model.manifest.write(model.bundle_dir)
        print(f"wrote streaming.score_threshold = {chosen['threshold']} and smoothing_seconds = "
              f"{chosen['smoothing_seconds']:g} into {model.bundle_dir}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
