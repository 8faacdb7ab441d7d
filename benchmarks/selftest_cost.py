"""What the self-test at load costs: HearEdge.load and the first 1 s classify, with and without it.

    python3 benchmarks/selftest_cost.py [--bundle B] [--rounds 7] [--json out.json]

Each measurement is a fresh process (load is a once-per-process cost), rows in round robin, CPU time
(the process's user + system) beside wall time; the medians are printed with the host's CPU flags.
On LiteRT the probe's first run packs the shortest buckets' weights (XNNPACK), which the first
classify would do anyway: compare load + first classify, not load alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD = r'''
import json, sys, time
from hear_edge import HearEdge
wall, cpu = time.perf_counter(), time.process_time()
model = HearEdge.load(sys.argv[1] or None, backend=sys.argv[2], precision="int8", self_test=sys.argv[3] == "1")
loaded, loaded_cpu = time.perf_counter(), time.process_time()
model.classify(sys.argv[4])
done, done_cpu = time.perf_counter(), time.process_time()
print(json.dumps({"load_ms": 1000 * (loaded - wall), "load_cpu_ms": 1000 * (loaded_cpu - cpu),
                  "load_and_first_ms": 1000 * (done - wall), "load_and_first_cpu_ms": 1000 * (done_cpu - cpu)}))
'''


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="", help="default: the shipped bundle")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from hear_edge.host import host_cpu
    from hear_edge.runtimes.base import available_backends

    clip = str(REPO / "examples" / "clips" / "yes.wav")
    rows = [(backend, self_test) for backend in available_backends() for self_test in (True, False)]
    samples: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for backend, self_test in rows:
            out = subprocess.run([sys.executable, "-c", CHILD, args.bundle, backend, "1" if self_test else "0", clip],
                                 capture_output=True, text=True, check=True).stdout
            name = f"{backend} {'self-test' if self_test else 'skipped'}"
            for key, value in json.loads(out.strip().splitlines()[-1]).items():
                samples.setdefault(name, {}).setdefault(key, []).append(value)
    report = {"host": host_cpu(), "rounds": args.rounds, "bundle": args.bundle or "shipped",
              "median_ms": {name: {key: round(statistics.median(values), 1) for key, values in figures.items()}
                            for name, figures in samples.items()}}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
