"""Acoustic Model window (or task graph) latency of several bundles, side by side (round robin, one thread).

Made for trimmed-vs-untrimmed and recipe comparisons: every round runs one 300-frame window (or
`--frames`) through each bundle's graph in turn, so drift in the machine's speed hits every bundle
alike, and the ratios are to the first bundle. Times are process CPU time.

    python3 benchmarks/acoustic_ab.py untrimmed.hearedge trimmed.hearedge [--rounds 40] [--json out.json]
    python3 benchmarks/acoustic_ab.py old.hearedge new.hearedge --graph task --frames 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from hear_edge.bundle.manifest import read_manifest
from hear_edge.run.inference import InferenceEngine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--variant", action="append", help="FORMAT/PRECISION, e.g. onnx/fp32 (default: all shared)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, help="window length in acoustic frames (default: the bundle's 300)")
    parser.add_argument("--graph", choices=["acoustic", "task"], default="acoustic",
                        help="the acoustic window graph (default) or the task graph (its inputs packed as classify does)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    manifests = [read_manifest(b) for b in args.bundles]
    shared = set.intersection(*({f"{f}/{p}" for f, p in m.variants()} for m in manifests))
    variants = [v for v in (args.variant or sorted(shared)) if v in shared]
    rng = np.random.default_rng(0)
    sessions = {}
    for bundle, manifest in zip(args.bundles, manifests):
        frames = args.frames or manifest.window_frames
        log_mel = rng.standard_normal((manifest.frontend.num_mel_bins, 2 * frames)).astype(np.float32)
        acoustic = rng.standard_normal((frames, manifest.acoustic_hidden_size)).astype(np.float32)
        log_power = rng.standard_normal((manifest.frontend.n_fft // 2 + 1, 2 * frames)).astype(np.float32)
        for variant in variants:
            fmt, precision = variant.split("/")
            # The engine feeds each graph as it takes a length: free (exact frames) or a padded bucket.
            engine = InferenceEngine(bundle, manifest, fmt, precision, args.threads)
            call = (partial(engine.task, acoustic, log_power) if args.graph == "task"
                    else partial(engine.encode_window, log_mel, 0, frames))
            call()  # warm-up
            sessions[(bundle, variant)] = (call, [])
    for _ in range(args.rounds):
        for call, times in sessions.values():
            started = time.process_time()
            call()
            times.append(time.process_time() - started)
    report = {"graph": args.graph, "frames": args.frames, "rounds": args.rounds, "threads": args.threads,
              "timer": "process CPU time", "rows": []}
    for (bundle, variant), (_, times) in sessions.items():
        base = np.median(sessions[(args.bundles[0], variant)][1])
        report["rows"].append({"bundle": Path(bundle).name, "variant": variant,
                               "median_ms": 1000 * float(np.median(times)),
                               "p90_ms": 1000 * float(np.percentile(times, 90)),
                               "speedup_vs_first": float(base / np.median(times))})
    print(f"| bundle | graph | {args.graph} median ms | p90 ms | speed-up vs first |")
    print("|---|---|---|---|---|")
    for row in report["rows"]:
        print(f"| {row['bundle']} | {row['variant']} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | "
              f"{row['speedup_vs_first']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
