"""Where a classify call's time goes: per stage and, inside onnxruntime, per op type.

One process, one thread, CPU time (time.process_time), round robin over precisions and clip
lengths so machine drift hits all alike. Stages: the frontend's FFT/mel/log pass
(`log_features`), its per-clip normalisation (`features_from_log`), the acoustic window graph(s)
with the overlap-add (`engine.acoustic`), the task graph with its input packing (`engine.task`),
and what `classify` spends beyond those (resampling check, segmenting, result building: "python").
The per-op figures come from onnxruntime's own profiler, on separate profiled sessions of the same
graphs fed the same inputs, summed by op type per call (its timer is wall time: on a shared machine
read them as shares, not as absolute figures).

    python3 benchmarks/profile_stages.py BUNDLE [--seconds 1 3 10] [--rounds 9] [--json out.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from collections import defaultdict

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _cpu_ms(fn):
    started = time.process_time()
    value = fn()
    return 1000 * (time.process_time() - started), value


def stage_times(model, wave: np.ndarray) -> dict[str, float]:
    """CPU ms of each stage of one classify of `wave` (16 kHz mono), and of the whole call."""
    frontend, engine = model.frontend, model.engine
    mono = wave.astype(np.float64)
    out = {}
    out["frontend_fft_mel_log_ms"], logs = _cpu_ms(lambda: frontend.log_features(mono - mono.mean()))
    out["frontend_normalize_ms"], (log_mel, log_power) = _cpu_ms(lambda: frontend.features_from_log(*logs))
    out["acoustic_graph_ms"], acoustic = _cpu_ms(lambda: engine.acoustic(log_mel))
    out["task_graph_ms"], _ = _cpu_ms(lambda: engine.task(acoustic, log_power))
    out["classify_total_ms"], _ = _cpu_ms(lambda: model.classify(wave, 16000))
    out["python_overhead_ms"] = out["classify_total_ms"] - sum(
        v for k, v in out.items() if k not in ("classify_total_ms",))
    return out


def _profiled_session(path: str, prefix: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def op_profile(model, wave: np.ndarray, calls: int, scratch: str) -> dict:
    """onnxruntime's per-node kernel times, summed by op type, per classify-equivalent call (ms)."""
    from hear_edge.windows import plan_windows

    engine = model.engine
    mono = wave.astype(np.float64)
    log_mel, log_power = model.frontend.features_from_log(*model.frontend.log_features(mono - mono.mean()))
    acoustic = engine.acoustic(log_mel)
    frames = log_mel.shape[1] // 2
    plan = plan_windows(frames, engine.window_frames, engine.manifest.overlap_frames)
    result = {}
    for role, graph in (("acoustic_window", engine.window_graph), ("task", engine.task_graph)):
        prefix = os.path.join(scratch, f"{role}-{len(wave)}-{engine.precision}")
        session = _profiled_session(str(graph.path), prefix)
        if role == "acoustic_window":
            feeds = [{"log_mel": np.ascontiguousarray(log_mel[None, :, 2 * s:2 * (s + v)])} for s, v in plan]
        else:
            from hear_edge.inference import spectrum_pairs

            feeds = [{"acoustic": np.ascontiguousarray(acoustic[None], dtype=np.float32),
                      "spectrum_pairs": spectrum_pairs(log_power, acoustic.shape[0])[None]}]
        for feed in feeds:  # warm-up calls, dropped below
            session.run(None, feed)
        for _ in range(calls):
            for feed in feeds:
                session.run(None, feed)
        path = session.end_profiling()
        events = json.load(open(path))
        # Each node's median over the timed calls (a preempted call on a shared machine is an outlier),
        # summed by op type: ms per classify-equivalent call.
        by_node: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
        nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        first_timed = runs[len(feeds)]["ts"] if len(runs) > len(feeds) else 0
        timed_runs = runs[len(feeds):]
        for e in nodes:
            if e["ts"] >= first_timed:
                window = next((k for k, r in enumerate(timed_runs) if r["ts"] <= e["ts"] <= r["ts"] + r["dur"]), 0)
                by_node[(e["args"]["op_name"], e["name"], window % len(feeds))].append(e["dur"])
        per_call: dict[str, float] = defaultdict(float)
        for (op, _, _), durations in by_node.items():
            per_call[op] += float(np.median(durations)) / 1000
        run_ms = float(np.median([sum(r["dur"] for r in timed_runs[k:k + len(feeds)])
                                  for k in range(0, len(timed_runs), len(feeds))])) / 1000
        kernels_ms = sum(per_call.values())
        result[role] = {
            "windows_per_call": len(feeds),
            "run_ms_per_call": run_ms,
            "kernels_ms_per_call": kernels_ms,
            "outside_kernels_ms_per_call": run_ms - kernels_ms,
            "by_op_type_ms": {op: round(ms, 4) for op, ms in sorted(per_call.items(), key=lambda kv: -kv[1])},
            "nodes_per_window": len(by_node) // len(feeds),
        }
        for leftover in glob.glob(prefix + "*"):
            os.remove(leftover)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--precision", action="append", choices=["fp32", "int8"])
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--profile-calls", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    from hear_edge import HearEdge
    from hear_edge.bench import machine_info
    from hear_edge.signals import synthetic_clip

    precisions = args.precision or ["fp32", "int8"]
    models = {p: HearEdge.load(args.bundle, backend="onnx", precision=p, num_threads=1) for p in precisions}
    clips = {f"{s:g}": synthetic_clip(s, seed=100) for s in args.seconds}
    for model in models.values():
        for wave in clips.values():
            stage_times(model, wave)
    samples: dict = {}
    for _ in range(args.rounds):
        for seconds, wave in clips.items():
            for precision, model in models.items():
                for key, value in stage_times(model, wave).items():
                    samples.setdefault(seconds, {}).setdefault(precision, {}).setdefault(key, []).append(value)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    report = {"machine": machine_info(), "bundle": args.bundle, "threads": 1, "rounds": args.rounds,
              "timer": "stages: process CPU time, median over rounds; ops: onnxruntime profiler (wall)",
              "stages_ms": {s: {p: {k: float(np.median(v)) for k, v in row.items()} for p, row in per.items()}
                            for s, per in samples.items()},
              "ops": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for seconds, wave in clips.items():
            for precision, model in models.items():
                report["ops"].setdefault(seconds, {})[precision] = op_profile(model, wave, args.profile_calls,
                                                                              scratch)
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
