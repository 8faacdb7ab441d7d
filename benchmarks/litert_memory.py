"""LiteRT's engines against onnxruntime: peak memory in fresh processes, and latency side by side.

    python benchmarks/litert_memory.py [--out benchmarks/litert-memory-x86-2core.json] [--rounds 15] [--runs 5]
        [--against /path/to/another/checkout]

Memory: `--runs` fresh processes per figure (started through a bare interpreter, so its ru_maxrss is
its own; min, median and max) load the default bundle (int8) and classify either one 1 s clip, or
clips of 1, 2, ..., 30 s in turn ("imports only": hear_edge and the runtime imported, no model). Engines: "compiled"
(ai-edge-litert's CompiledModel with XNNPACK's weight cache: what hear-edge picks on x86-64 and where
an aarch64 CPU has LSE atomics), "interpreter" (the Interpreter, each signature from a file cut to
it: what it picks on a Cortex-A53/A72) and "whole-file" (the Interpreter on the whole file: what
every host ran before). Latency: the three loaded in one process, clips classified round robin, CPU
time per call; each one's ratio to the whole-file Interpreter per clip length (median).
`--against`: this checkout's default engine against another checkout's `runtimes/litert.py` (e.g. the
main branch's), both on the CompiledModel: round robin in one process (CPU ms per clip of 1, 10 and
30 s, and per pass over clips of 1-30 s, which reopens each long bucket), and fresh processes of
each in turn (the same figures; glibc's malloc settings are per process), with the memory rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Puts another checkout's runtimes/litert.py in place of this one's (open_graph imports it by name).
AGAINST = r"""
def use_litert_of(checkout):
    import importlib.util, sys
    import hear_edge.runtimes.base  # this checkout's backends, discovered first
    spec = importlib.util.spec_from_file_location("hear_edge.runtimes.litert", f"{checkout}/runtimes/litert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["hear_edge.runtimes.litert"] = module
    return module
"""
CHILD = AGAINST + r"""
import json, resource, sys
backend, engine, lengths = sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3].split(",") if s]
if len(sys.argv) > 4:
    use_litert_of(sys.argv[4])
if engine in ("interpreter", "whole-file"):
    import hear_edge.runtimes.litert as litert
    litert.weight_cache_safe = lambda: False
    if engine == "whole-file":  # the Interpreter on the whole file: what every host ran before
        litert._tflite_cut.available = lambda: False
if not lengths:  # imports only: hear_edge and the runtime the engine runs on, no model
    import importlib
    import hear_edge.run.classifier
    importlib.import_module({"onnx": "onnxruntime", "compiled": "ai_edge_litert.compiled_model"}.get(
        backend if backend == "onnx" else engine, "ai_edge_litert.interpreter"))
    print("RESULT " + json.dumps({"engine": engine, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(0)
from hear_edge import HearEdge
from hear_edge.bundle.gates import synthetic_clip
model = HearEdge.load(backend=backend, precision="int8")
for seconds in lengths:
    model.classify(synthetic_clip(seconds, seed=100), 16000)
print("RESULT " + json.dumps({"engine": getattr(model.engine.window_graph, "engine", "onnxruntime"),
                              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
ROWS = [("onnx", "default"), ("litert", "compiled"), ("litert", "interpreter"), ("litert", "whole-file")]
SEQUENCES = {"imports only": "", "one 1 s clip": "1", "1-30 s in one process": ",".join(str(s) for s in range(1, 31))}


def peak(backend: str, engine: str, lengths: str, against: str | None = None) -> dict:
    out = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, sys.executable, "-c", CHILD, backend, engine, lengths,
                          *([against] if against else [])], capture_output=True, text=True, timeout=900)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(line[len("RESULT "):])


def latency(rounds: int) -> dict:
    import hear_edge.runtimes.litert as litert
    from hear_edge import HearEdge
    from hear_edge.bundle.gates import synthetic_clip

    models = {"compiled": HearEdge.load(backend="litert", precision="int8")}
    assert models["compiled"].engine.window_graph.engine == "CompiledModel", "this host runs the Interpreter"
    safe, cuts = litert.weight_cache_safe, litert._tflite_cut.available
    litert.weight_cache_safe = lambda: False
    models["interpreter"] = HearEdge.load(backend="litert", precision="int8")
    litert._tflite_cut.available = lambda: False
    models["whole-file"] = HearEdge.load(backend="litert", precision="int8")
    litert.weight_cache_safe, litert._tflite_cut.available = safe, cuts
    figures = {}
    for seconds in (1.0, 6.0, 10.0, 30.0):
        wave = synthetic_clip(seconds, seed=100)
        times = {name: [] for name in models}
        for name, model in models.items():  # warm-up: first run of each bucket
            model.classify(wave, 16000)
        for _ in range(rounds if seconds <= 10 else max(5, rounds // 3)):
            for name, model in models.items():
                started = time.process_time()
                model.classify(wave, 16000)
                times[name].append(time.process_time() - started)
        base = np.array(times["whole-file"])
        figures[f"{seconds:g}"] = {**{f"{name}_cpu_ms_median": 1000 * float(np.median(t)) for name, t in times.items()},
                                   **{f"ratio_{name}_over_whole_file_median": float(np.median(np.array(t) / base))
                                      for name, t in times.items() if name != "whole-file"},
                                   "rounds": len(base)}
    return figures


TIMED = AGAINST + r"""
import json, sys, time
import numpy as np
from hear_edge import HearEdge
from hear_edge.bundle.gates import synthetic_clip

def load(checkout):
    import hear_edge.runtimes.litert as this
    module = use_litert_of(checkout) if checkout else this
    model = HearEdge.load(backend="litert", precision="int8")
    sys.modules["hear_edge.runtimes.litert"] = this
    assert model.engine.window_graph.engine == "CompiledModel", "this host runs the Interpreter"
    return model

def timed(models, rounds):
    # CPU ms per clip (median), models round robin: 1, 10 and 30 s clips, and passes over clips of 1-30 s.
    waves = {seconds: synthetic_clip(seconds, seed=100) for seconds in range(1, 31)}
    figures = {name: {} for name in models}
    for seconds in (1, 10, 30, "1-30"):
        lengths = list(range(1, 31)) if seconds == "1-30" else [seconds]
        times = {name: [] for name in models}
        for round_ in range(1 + (rounds if seconds in (1, 10) else max(3, rounds // 3))):
            for name, model in models.items():
                started = time.process_time()
                for length in lengths:
                    model.classify(waves[length], 16000)
                if round_:  # the first round warms each bucket up
                    times[name].append(1000 * (time.process_time() - started))
        for name, t in times.items():
            figures[name][str(seconds)] = t
    return figures

checkout, rounds = sys.argv[1], int(sys.argv[2])
if sys.argv[3] == "both":
    models = {"this": load(None), "against": load(sys.argv[1])}
else:
    models = {sys.argv[3]: load(None if sys.argv[3] == "this" else sys.argv[1])}
print("RESULT " + json.dumps(timed(models, rounds)))
"""


def _timed(against: str, rounds: int, which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", TIMED, against, str(rounds), which], capture_output=True, text=True,
                         timeout=1800)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(line[len("RESULT "):])


def against_checkout(against: str, rounds: int, process_rounds: int) -> dict:
    """This checkout's LiteRT against `against`'s: CPU ms, round robin in one process and in fresh processes."""
    one = _timed(against, rounds, "both")
    report = {"one process, round robin": {
        seconds: {"this_cpu_ms_median": float(np.median(one["this"][seconds])),
                  "against_cpu_ms_median": float(np.median(one["against"][seconds])),
                  "ratio_this_over_against_median": float(np.median(np.array(one["this"][seconds]) /
                                                                    np.array(one["against"][seconds]))),
                  "rounds": len(one["this"][seconds])} for seconds in one["this"]}}
    medians = {"this": [], "against": []}  # per fresh process: {seconds: median CPU ms}
    for _ in range(process_rounds):
        for which in ("against", "this"):
            figures = _timed(against, rounds, which)[which]
            medians[which].append({seconds: float(np.median(t)) for seconds, t in figures.items()})
    report["fresh processes in turn"] = {
        seconds: {"this_cpu_ms_medians": [m[seconds] for m in medians["this"]],
                  "against_cpu_ms_medians": [m[seconds] for m in medians["against"]],
                  "ratio_this_over_against_median": float(np.median([t[seconds] / a[seconds] for t, a in
                                                                     zip(medians["this"], medians["against"])]))}
        for seconds in medians["this"][0]}
    return report


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": float(np.median(values)), "max": max(values), "runs": values}


def main() -> None:
    from hear_edge.tools.bench import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "litert-memory-x86-2core.json")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per memory figure")
    parser.add_argument("--against", help="another checkout, whose runtimes/litert.py to compare with")
    parser.add_argument("--process-rounds", type=int, default=5, help="--against: fresh processes of each")
    args = parser.parse_args()
    report = {"what": __doc__.split("\n\n")[1].strip(), "machine": machine_info(), "load_average": os.getloadavg(),
              "peak_rss_mib": {}, "latency": latency(args.rounds)}
    if args.against:
        report["against"] = {"checkout": args.against,
                             "latency": against_checkout(args.against, args.rounds, args.process_rounds)}
    rows = ROWS + ([("litert", "compiled", args.against)] if args.against else [])
    for sequence, lengths in SEQUENCES.items():
        for backend, engine, *other in rows:
            results = [peak(backend, engine, lengths, *other) for _ in range(args.runs)]
            figures = _spread([result["peak_rss_mib"] for result in results])
            name = f"{backend} {engine}" + (" (against)" if other else "")
            report["peak_rss_mib"].setdefault(sequence, {})[name] = figures
            print(f"{sequence:24s} {name:28s} ({results[0]['engine']}): {figures['min']:.1f} / "
                  f"{figures['median']:.1f} / {figures['max']:.1f} MiB", flush=True)
    report["load_average_after"] = os.getloadavg()
    for seconds, row in report.get("against", {}).get("latency", {}).get("one process, round robin", {}).items():
        print(f"{seconds:>4s} s, CPU ms: this {row['this_cpu_ms_median']:.1f}, against {row['against_cpu_ms_median']:.1f} "
              f"(x{row['ratio_this_over_against_median']:.3f}, one process)")
    for seconds, row in report.get("against", {}).get("latency", {}).get("fresh processes in turn", {}).items():
        print(f"{seconds:>4s} s: this/against x{row['ratio_this_over_against_median']:.3f} (fresh processes)")
    for seconds, row in report["latency"].items():
        print(f"{seconds:>4s} s clip, CPU ms: whole-file {row['whole-file_cpu_ms_median']:.1f}, compiled "
              f"{row['compiled_cpu_ms_median']:.1f} (x{row['ratio_compiled_over_whole_file_median']:.3f}), interpreter "
              f"{row['interpreter_cpu_ms_median']:.1f} (x{row['ratio_interpreter_over_whole_file_median']:.3f})")
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
