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
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _report import emit_report  # noqa: E402  (beside this script)


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
    from hear_edge.bundle.gates import synthetic_clip
    from hear_edge.tools.bench import machine_info, op_profile

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
    for seconds, wave in clips.items():
        for precision, model in models.items():
            report["ops"].setdefault(seconds, {})[precision] = op_profile(model, wave, args.profile_calls)
    return emit_report(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
