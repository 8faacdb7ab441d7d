"""LiteRT's engines against onnxruntime: peak memory in fresh processes, and latency side by side.

    python benchmarks/litert_memory.py [--out benchmarks/litert-memory-x86-2core.json] [--rounds 15]

Memory: a fresh process per figure (started through a bare interpreter, so its ru_maxrss is its own)
loads the default bundle (int8) and classifies either one 1 s clip, or clips of 1, 2, ..., 30 s in
turn ("imports only": hear_edge and the runtime imported, no model). Engines: "compiled"
(ai-edge-litert's CompiledModel with XNNPACK's weight cache: what hear-edge picks on x86-64 and where
an aarch64 CPU has LSE atomics), "interpreter" (the Interpreter, each signature from a file cut to
it: what it picks on a Cortex-A53/A72) and "whole-file" (the Interpreter on the whole file: what
every host ran before). Latency: the three loaded in one process, clips classified round robin, CPU
time per call; each one's ratio to the whole-file Interpreter per clip length (median).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys
backend, engine, lengths = sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3].split(",") if s]
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


def peak(backend: str, engine: str, lengths: str) -> dict:
    out = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, sys.executable, "-c", CHILD, backend, engine, lengths],
                         capture_output=True, text=True, timeout=900)
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


def main() -> None:
    from hear_edge.tools.bench import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "litert-memory-x86-2core.json")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    report = {"what": __doc__.split("\n\n")[1].strip(), "machine": machine_info(), "peak_rss_mib": {},
              "latency": latency(args.rounds)}
    for sequence, lengths in SEQUENCES.items():
        for backend, engine in ROWS:
            result = peak(backend, engine, lengths)
            report["peak_rss_mib"].setdefault(sequence, {})[f"{backend} {engine}"] = result["peak_rss_mib"]
            print(f"{sequence:24s} {backend:6s} {engine:11s} ({result['engine']}): {result['peak_rss_mib']:.1f} MiB",
                  flush=True)
    for seconds, row in report["latency"].items():
        print(f"{seconds:>4s} s clip, CPU ms: whole-file {row['whole-file_cpu_ms_median']:.1f}, compiled "
              f"{row['compiled_cpu_ms_median']:.1f} (x{row['ratio_compiled_over_whole_file_median']:.3f}), interpreter "
              f"{row['interpreter_cpu_ms_median']:.1f} (x{row['ratio_interpreter_over_whole_file_median']:.3f})")
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
