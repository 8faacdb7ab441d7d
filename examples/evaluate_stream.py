"""Keyword detection on a long stream: recall and false alarms per minute, per score threshold.

    python3 examples/evaluate_stream.py STREAM.flac [--bundle B] [--backend onnx] [--precision int8]
        [--smoothing SECONDS] [--max-false-alarms-per-minute 1.0] [--write-threshold] [--json out.json]

STREAM.flac comes with STREAM.json (its words: start_s, end_s, label), as
`examples/kws/kws.py stream` writes them. The stream runs once with the bundle's context and hop
and no threshold; every threshold of the sweep is then replayed from those results with the
runtime's own detection rule (`hear_edge.run.streaming.replay_detections`), with the bundle's score
smoothing or `--smoothing`.

Scoring: a detection (label L over window [s, e)) is a hit when the window overlaps an
undetected word labelled L; anything else is a false alarm, a second detection of a word
included. The chosen threshold is the lowest whose false alarms per minute stay within the
limit, so the one with the highest recall there. Choose it on a validation stream
(`--write-threshold` records it and the smoothing in the bundle's manifest, `streaming.score_threshold`
and `streaming.smoothing_seconds`), then report a held-out stream at the bundle's settings.
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stream", type=Path, help="the stream (.flac/.wav) with its words in the same name .json")
    parser.add_argument("--bundle", help="bundle folder (default: the shipped model)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--context", type=float, help="seconds per result (default: the bundle's)")
    parser.add_argument("--hop", type=float, help="seconds between results (default: the bundle's)")
    parser.add_argument("--smoothing", type=float, help="seconds of results whose mean scores detections read "
                                                        "(default: the bundle's; 0: each result alone)")
    parser.add_argument("--max-false-alarms-per-minute", type=float, default=1.0)
    parser.add_argument("--write-threshold", action="store_true",
                        help="record the chosen threshold in the bundle's manifest (streaming.score_threshold)")
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args(argv)

    words = json.loads(args.stream.with_suffix(".json").read_text())
    model = HearEdge.load(args.bundle, backend=args.backend, precision=args.precision)
    results, stream = stream_results(model, args.stream, args.context, args.hop)
    minutes = words["seconds"] / 60
    background = set(model.manifest.background_labels)
    smoothing = model.manifest.stream_smoothing_seconds if args.smoothing is None else args.smoothing

    def at(threshold):
        found = replay_detections(results, model.labels, model.manifest.background_labels, threshold, smoothing)
        return {"threshold": threshold, **score(found, words["events"], minutes, background)}

    sweep = [at(t) for t in THRESHOLDS]
    within = [row for row in sweep if row["false_alarms_per_minute"] <= args.max_false_alarms_per_minute]
    chosen = within[0] if within else None
    recorded = model.manifest.stream_score_threshold
    report = {
        "stream": str(args.stream), "minutes": round(minutes, 2), "keywords": sweep[0]["keywords"],
        "stream_settings": {k: words.get(k) for k in ("split", "seed", "engines", "clips_dir")},
        "bundle": str(model.bundle_dir), "model_version": model.manifest.model_version,
        "backend": model.backend, "precision": model.precision,
        "context_seconds": stream.context_seconds, "hop_seconds": stream.hop_seconds, "smoothing_seconds": smoothing,
        "host": cpu_model_and_flags(),
        "max_false_alarms_per_minute": args.max_false_alarms_per_minute,
        "chosen": chosen,
        "at_bundle_threshold": at(recorded) if recorded is not None else None,
        "sweep": [{k: v for k, v in row.items() if k not in ("false_alarm_list", "recall_per_label")}
                  for row in sweep],
    }
    print(f"{args.stream}: {minutes:.1f} min, {report['keywords']} keywords; {model.backend} {model.precision}, "
          f"context {report['context_seconds']:g} s, hop {report['hop_seconds']:g} s, smoothing {smoothing:g} s")
    for row in [r for r in sweep if r["threshold"] in (0.3, 0.5, 0.7, 0.9, 0.95, 0.97, 0.98, 0.99, 0.999)]:
        print(f"  threshold {row['threshold']:.3f}: recall {row['recall']:.1%}, "
              f"{row['false_alarms_per_minute']:.2f} false alarms / min")
    if chosen:
        print(f"chosen (lowest with <= {args.max_false_alarms_per_minute:g} false alarms / min): threshold "
              f"{chosen['threshold']:.3f}, recall {chosen['recall']:.1%}, {chosen['false_alarms_per_minute']:.2f} / min")
    else:
        print(f"no threshold keeps false alarms within {args.max_false_alarms_per_minute:g} / min")
    if report["at_bundle_threshold"]:
        row = report["at_bundle_threshold"]
        print(f"at the bundle's threshold {recorded:.3f}: recall {row['recall']:.1%}, "
              f"{row['false_alarms_per_minute']:.2f} false alarms / min")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_threshold:
        if chosen is None:
            print("not writing a threshold: none meets the limit", file=sys.stderr)
            return 1
        model.manifest.streaming["score_threshold"] = chosen["threshold"]
        model.manifest.streaming["smoothing_seconds"] = smoothing
        model.manifest.streaming["background_labels"] = model.manifest.background_labels
        model.manifest.write(model.bundle_dir)
        print(f"wrote streaming.score_threshold = {chosen['threshold']} and smoothing_seconds = {smoothing:g} into "
              f"{model.bundle_dir}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
