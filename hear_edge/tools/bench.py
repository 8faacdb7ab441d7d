"""`hear-edge bench`: latency, real-time factor, streaming, memory, size and parity, side by side.

Every row runs in its own child process (so its peak memory is its own and the PyTorch row
cannot pollute the runtime rows). A row's speed is reported only if its outputs match the
reference: the PyTorch model run live in the same benchmark when a checkpoint is given, else
the reference outputs the exporter stored in the bundle.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hear_edge.bundle.gates import cosine, verdict
from hear_edge.bundle.gates import PARITY_SECONDS, synthetic_clip, synthetic_clips
from hear_edge.bundle.manifest import read_manifest
from hear_edge.errors import HearEdgeError
from hear_edge.reference.macs import model_flops
from hear_edge.runtimes.base import BACKEND_FORMAT, BACKEND_MODULES, FORMAT_BACKENDS, backend_installed

logger = logging.getLogger("hear_edge")

SCHEMA_VERSION = 3  # 2: streams per kind (keyword, long_context), speed-ups vs PyTorch, host int8 flags;
# 3: peak_rss_1s_mb, one 1 s clip in a fresh process
# (context, hop) in seconds: a keyword spotter's stream and a scene classifier's.
STREAMS = {"keyword": (1.0, 0.25), "long_context": (6.0, 1.0)}

_CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
args = json.loads(sys.argv[1])
from hear_edge.tools.bench import _child_main
result = _child_main(args, started)
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("BENCH-RESULT " + json.dumps(result))
"""


# One clip's peak in a fresh process (a keyword spotter's footprint), apart from the row's own child,
# whose peak covers every length. Started through a bare interpreter: Linux carries ru_maxrss across
# exec, so a child forked from the bench itself would start at the bench's own peak.
_ONE_CLIP = r"""
import json, resource, sys
args = json.loads(sys.argv[1])
from hear_edge.run.classifier import HearEdge
from hear_edge.bundle.gates import synthetic_clip
model = HearEdge.load(args["bundle"], backend=args["backend"], precision=args["precision"], num_threads=args["threads"])
model.classify(synthetic_clip(args["seconds"], seed=100), 16000)
print("BENCH-RESULT " + json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
ONE_CLIP_SECONDS = 1.0


def one_clip_peak_rss_mb(bundle, backend: str, precision: str, threads: int = 1,
                         seconds: float = ONE_CLIP_SECONDS) -> float:
    """Peak RSS (MiB) of a fresh process that loads `bundle` and classifies one clip of `seconds`."""
    args = {"bundle": str(bundle), "backend": backend, "precision": precision, "threads": threads,
            "seconds": seconds}
    out = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, sys.executable, "-c", _ONE_CLIP, json.dumps(args)],
                         capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            return float(line[len("BENCH-RESULT "):])
    raise HearEdgeError(f"one-clip memory of {backend} {precision} failed:\n{out.stderr[-3000:]}")


def gemm_gflops(seconds: float = 1.0) -> float:
    """Single-thread fp32 GEMM rate of this CPU, in a child with every BLAS pinned to one thread."""
    code = ("import numpy as np, time\n"
            "a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32); b = a.T.copy()\n"
            "best = 1e9\nend = time.perf_counter() + %f\n"
            "while time.perf_counter() < end:\n"
            "    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
            "print(2 * 1024 ** 3 / best / 1e9)\n" % seconds)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return float(out.stdout.strip())


def _percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def _child_main(args: dict, started: float) -> dict:
    """One row, in its own process: cold start, latencies, streaming, parity outputs."""
    lengths, repeats = args["lengths"], args["repeats"]
    if args["kind"] == "pytorch":
        import torch

        from hear_edge.reference.model import FRONTEND, load_checkpoint, reference_outputs
        from hear_edge.signal.segments import segment_samples, split_segments

        torch.set_num_threads(args["threads"])
        model = load_checkpoint(args["checkpoint"], args.get("config"))
        cold = time.perf_counter() - started

        # Segmented as classify segments (one planner, read from the model's Task Model length).
        length = segment_samples(model.config.task_model.max_length, FRONTEND.hop_samples)

        def run(wave):
            outputs = []
            for _, segment in split_segments([wave], length, 2 * FRONTEND.hop_samples):
                outputs.append(reference_outputs(model, segment, acoustic=False)[0])  # float64 from the planner
            return np.mean(outputs, axis=0), {}

        def acoustic_mean(wave):
            return reference_outputs(model, wave)[1].mean(axis=0)
    else:
        from hear_edge.run.classifier import HearEdge

        model = HearEdge.load(args["bundle"], backend=args["backend"], precision=args["precision"],
                              num_threads=args["threads"])
        cold = time.perf_counter() - started

        def run(wave):
            result = model.classify(wave, 16000, max_results=None)
            return result.logits, result.timings_ms

        def acoustic_mean(wave):
            return model.embed(wave, 16000).frames.mean(axis=0)

    latency = {}
    for seconds in lengths:
        wave = synthetic_clip(seconds, seed=100)
        run(wave)  # warm-up, excluded
        times, stages = [], []
        for _ in range(repeats if seconds <= 10 else max(3, repeats // 3)):
            t = time.perf_counter()
            _, timings = run(wave)
            times.append(time.perf_counter() - t)
            stages.append(timings)
        for timings in stages:  # what classify spends beyond its stages: segmenting, results, Python
            if "total_ms" in timings:
                timings["python_ms"] = timings["total_ms"] - sum(v for k, v in timings.items() if k != "total_ms")
        latency[f"{seconds:g}"] = {
            "median_s": float(np.median(times)), "p95_s": _percentile(times, 95), "runs": len(times),
            "rtf": float(np.median(times)) / seconds,
            "stages_ms": {k: float(np.median([s[k] for s in stages])) for k in stages[0]} if stages[0] else {},
        }
        if args.get("profile_ops") and args["kind"] != "pytorch" and args["backend"] == "onnx":
            latency[f"{seconds:g}"]["ops_ms"] = op_profile(model, wave)
    streaming = None
    if args["kind"] != "pytorch":
        streaming = {name: _stream_figures(model, run, context, hop, args["stream_seconds"])
                     for name, (context, hop) in STREAMS.items()}
    parity = {}
    for name, wave in synthetic_clips().items():
        seconds = float(name.removeprefix("synthetic_").removesuffix("s"))
        if seconds in args["parity_seconds"]:
            logits, _ = run(wave)
            parity[name] = {"logits": [float(x) for x in logits],
                            "acoustic_mean": [float(x) for x in acoustic_mean(wave)]}
    return {"cold_start_s": cold, "latency": latency, "streaming": streaming, "outputs": parity}


def _stream_figures(model, run, context_s: float, hop_s: float, seconds: float) -> dict:
    """A stream over `seconds` of audio in 100 ms chunks, against offline classify of the same audio
    (CPU time; a result is ready when its hop's last sample arrives, so the delay is that call's compute)."""
    wave = synthetic_clip(seconds, seed=101)
    started = time.process_time()
    run(wave)
    offline = time.process_time() - started
    stream = model.create_stream(hop_seconds=hop_s, context_seconds=context_s)
    results, ready_times = 0, []
    started = time.process_time()
    for start in range(0, len(wave), 1600):
        t = time.perf_counter()
        ready = stream.accept_waveform(wave[start:start + 1600], 16000)
        if ready:
            results += len(ready)
            ready_times.append(time.perf_counter() - t)
    compute = time.process_time() - started
    return {"context_s": context_s, "hop_s": hop_s, "audio_s": seconds, "results": results,
            "compute_s": compute, "compute_per_result_s": compute / max(results, 1),
            "compute_vs_offline_classify": compute / max(offline, 1e-9),
            "delay_after_hop_p95_s": _percentile(ready_times, 95)}


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


def op_profile(model, wave: np.ndarray, calls: int = 5) -> dict:
    """onnxruntime's own per-node kernel times for one classify of `wave` (16 kHz mono) on an ONNX
    `HearEdge`, per graph: each node's median over `calls` timed calls, summed by op type (ms).
    Separate profiled sessions of the same graph files run the inputs classify gives them. The
    profiler's clock is wall time: on a shared machine read the figures as shares."""
    from hear_edge.signal.windows import plan_windows

    engine = model.engine
    mono = wave.astype(np.float64)
    log_mel, log_power = model.frontend.features_from_log(*model.frontend.log_features(mono - mono.mean()))
    acoustic = engine.acoustic(log_mel)
    frames = log_mel.shape[1] // 2
    plan = plan_windows(frames, engine.window_frames, engine.manifest.overlap_frames)
    result = {}
    scratch = tempfile.mkdtemp(prefix="hear-edge-profile-")
    for role, graph in (("acoustic_window", engine.window_graph), ("task", engine.task_graph)):
        prefix = os.path.join(scratch, role)
        session = _profiled_session(str(graph.path), prefix)
        if role == "acoustic_window":
            feeds = [{"log_mel": np.ascontiguousarray(log_mel[None, :, 2 * s:2 * (s + v)])} for s, v in plan]
        else:
            from hear_edge.run.inference import spectrum_pairs

            feeds = [{"acoustic": np.ascontiguousarray(acoustic[None], dtype=np.float32),
                      "spectrum_pairs": spectrum_pairs(log_power, acoustic.shape[0])[None]}]
        for feed in feeds:  # warm-up calls, dropped below
            session.run(None, feed)
        for _ in range(calls):
            for feed in feeds:
                session.run(None, feed)
        path = session.end_profiling()
        with open(path) as handle:
            events = json.load(handle)
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
        os.remove(path)
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def _run_child(args: dict, timeout: int = 1800) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True,
                         timeout=timeout, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            return json.loads(line[len("BENCH-RESULT "):])
    raise HearEdgeError(f"benchmark row {args.get('name')} failed:\n{out.stderr[-3000:]}")


def _parity(outputs: dict, reference: dict, precision: str) -> dict:
    """The export gate's verdict (hear_edge.bundle.gates) on this row's outputs of the parity clips.

    The logit figures are the gate's own (every clip's logits against the reference's). The
    cosine is weaker than the gate's: the bundle stores only each clip's *mean* acoustic frame
    vector (`export.parity.check_parity`), so it is the cosine of the mean frame vectors, not of every
    frame; top-1 agreement is over the synthetic clips only (the gate prefers real audio).
    """
    names = sorted(set(outputs) & set(reference))
    if not names:
        return {"passed": False, "reason": "no reference outputs to compare with"}
    diff = max(float(np.abs(np.subtract(outputs[n]["logits"], reference[n]["logits"])).max()) for n in names)
    agree = float(np.mean([np.argmax(outputs[n]["logits"]) == np.argmax(reference[n]["logits"]) for n in names]))
    cosine_min = min(cosine(outputs[n]["acoustic_mean"], reference[n]["acoustic_mean"]) for n in names)
    judged = verdict({"max_abs_logit_diff": diff, "acoustic_cosine_min": cosine_min, "top1_agreement": agree},
                     precision)
    return {"clips": names, "max_abs_logit_diff": diff, "top1_agreement": agree, "embedding_cosine_min": cosine_min,
            "cosine_of": "mean acoustic frame vector per clip", **judged}


def parity_seconds(lengths) -> list[float]:
    """The parity clips a bench compares: the export's (`gates.PARITY_SECONDS`, whose reference
    outputs the bundle stores) of the lengths it times."""
    return [s for s in PARITY_SECONDS if s in lengths]


def machine_info() -> dict:
    from hear_edge.host import cpu_model_and_flags, host_cpu, package_versions

    info = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "cores": os.cpu_count(), "host": host_cpu()}
    model, flags = cpu_model_and_flags()
    if model:
        info["cpu"] = model
    if flags:
        info["cpu_flags"] = " ".join(f for f in flags if f.startswith(
            ("avx", "fma", "sse4", "neon", "asimd", "sve", "i8mm", "dotprod", "vnni", "amx")))
    runtimes = dict.fromkeys(module.distribution for module in BACKEND_MODULES)  # onnxruntime, ai-edge-litert, ...
    info.update(package_versions(("numpy", *runtimes, "torch", "hear-edge")))
    return info


def run_bench(bundle, checkpoint=None, config=None, backends=None, precisions=None, threads=None,
              quick: bool = False, profile_ops: bool = False) -> dict:
    """Measure every backend x precision x threads row of a bundle, plus PyTorch eager on the same weights;
    with `profile_ops`, each ONNX row's latencies carry onnxruntime's per-op profile (`op_profile`)."""
    from hear_edge.run.classifier import default_bundle_path

    bundle = Path(bundle) if bundle else default_bundle_path()
    manifest = read_manifest(bundle)
    threads = threads or sorted({1, os.cpu_count() or 1})
    lengths = (1.0, 10.0) if quick else (1.0, 2.0, 3.0, 6.0, 10.0, 30.0, 60.0)
    repeats = 3 if quick else 10
    common = {"lengths": lengths, "repeats": repeats, "stream_seconds": 10.0 if quick else 60.0,
              "profile_ops": profile_ops,
              "parity_seconds": parity_seconds(lengths)}
    rows_to_run = []
    for fmt, precision in manifest.variants():
        for backend in FORMAT_BACKENDS[fmt]:
            if (backends and backend not in backends) or (precisions and precision not in precisions):
                continue
            if not backend_installed(backend):
                logger.warning("skipping %s rows: its package is not installed", backend)
                continue
            for n in threads:
                rows_to_run.append({**common, "kind": "runtime", "bundle": str(bundle), "backend": backend,
                                    "precision": precision, "threads": n, "name": f"{backend} {precision} x{n}"})
    if checkpoint:
        for n in threads:
            rows_to_run.append({**common, "kind": "pytorch", "checkpoint": str(checkpoint),
                                "config": str(config) if config else None, "threads": n,
                                "precision": "fp32", "name": f"pytorch-eager fp32 x{n}"})
    report = {"schema_version": SCHEMA_VERSION, "bundle": str(bundle), "model": manifest.model_name,
              "quick": quick, "machine": machine_info(), "rows": []}
    started = time.perf_counter()
    report["machine"]["gemm_fp32_1thread_gflops"] = gemm_gflops(0.5 if quick else 2.0)
    results = []
    for args in rows_to_run:
        logger.info("bench: %s", args["name"])
        result = _run_child(args)
        if args["kind"] == "runtime":
            result["peak_rss_1s_mb"] = one_clip_peak_rss_mb(args["bundle"], args["backend"], args["precision"],
                                                            args["threads"])
        results.append((args, result))
    live = next((r["outputs"] for a, r in results if a["kind"] == "pytorch"), None)
    reference = live or manifest.parity.get("reference_outputs", {})
    sizes = {(g.format, g.precision): 0 for g in manifest.graphs}
    for g in manifest.graphs:
        sizes[(g.format, g.precision)] += g.total_bytes
    gemm = report["machine"]["gemm_fp32_1thread_gflops"]
    for args, result in results:
        row = {"name": args["name"], "kind": args["kind"], "backend": args.get("backend", "pytorch"),
               "precision": args["precision"], "threads": args["threads"], "cold_start_s": result["cold_start_s"],
               "peak_rss_mb": result["peak_rss_mb"], "peak_rss_1s_mb": result.get("peak_rss_1s_mb"),
               "streaming": result["streaming"]}
        if args["kind"] == "runtime":
            fmt = BACKEND_FORMAT[args["backend"]]
            row["bundle_mb"] = sizes.get((fmt, args["precision"]), 0) / 1e6
        row["parity"] = _parity(result["outputs"], reference, args["precision"])
        row["parity"]["reference"] = "pytorch, this run" if live else "stored in the bundle at export"
        if row["parity"]["passed"]:
            row["latency"] = result["latency"]
            for seconds, figures in row["latency"].items():
                figures["gflops"] = model_flops(manifest, float(seconds)) / figures["median_s"] / 1e9
                figures["fraction_of_gemm"] = figures["gflops"] / gemm / args["threads"]
        else:
            row["latency"] = None  # no speed for outputs that do not match the reference
            row["streaming"] = None
        report["rows"].append(row)
    _add_speedups(report)
    report["flops_10s_clip"] = model_flops(manifest, 10.0)
    report["seconds"] = time.perf_counter() - started
    return report


def _add_speedups(report: dict) -> None:
    """Each runtime row's speed-up over the PyTorch row of the same threads: per clip length, and
    per stream result against eager classify of one context. Rows run one after another: for
    ratios that hold under drift, see benchmarks/vs_eager.py (round robin in one process)."""
    eager = {r["threads"]: r for r in report["rows"] if r["kind"] == "pytorch" and r["latency"]}
    for row in report["rows"]:
        reference = eager.get(row["threads"])
        if row["kind"] == "pytorch" or not reference or not row["latency"]:
            continue
        row["speedup_vs_pytorch"] = {s: reference["latency"][s]["median_s"] / f["median_s"]
                                     for s, f in row["latency"].items() if s in reference["latency"]}
        for figures in (row["streaming"] or {}).values():
            context = f"{figures['context_s']:g}"
            if context in reference["latency"]:
                figures["speedup_per_result_vs_pytorch_classify"] = (
                    reference["latency"][context]["median_s"] / figures["compute_per_result_s"])


def markdown_table(report: dict) -> str:
    lengths = sorted({float(s) for r in report["rows"] if r["latency"] for s in r["latency"]})
    head = ["row", "parity"] + [f"{s:g} s RTF" for s in lengths] + [
        "10 s median ms", "10 s GFLOP/s (of GEMM)", "keyword stream ms/result (x offline)",
        "6 s stream ms/result", "cold start s", "peak RSS MB, all lengths", "peak RSS MB, one 1 s clip", "bundle MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        p = r["parity"]
        parity = ("ok" if p["passed"] else "FAILED") + (
            f" ({p['max_abs_logit_diff']:.1e})" if "max_abs_logit_diff" in p else "")
        if r["latency"]:
            lat = r["latency"]
            cells = [f"{lat[f'{s:g}']['rtf']:.4f}" if f"{s:g}" in lat else "" for s in lengths]
            ten = lat.get("10")
            cells += [f"{1000 * ten['median_s']:.0f}" if ten else "",
                      f"{ten['gflops']:.1f} ({100 * ten['fraction_of_gemm']:.0f} %)" if ten else ""]
        else:
            cells = ["refused"] * len(lengths) + ["refused", "refused"]
        stream = r["streaming"] or {}
        keyword, long_context = stream.get("keyword"), stream.get("long_context")
        cells += [f"{1000 * keyword['compute_per_result_s']:.1f} ({keyword['compute_vs_offline_classify']:.1f}x)"
                  if keyword else "-",
                  f"{1000 * long_context['compute_per_result_s']:.0f}" if long_context else "-",
                  f"{r['cold_start_s']:.2f}", f"{r['peak_rss_mb']:.0f}",
                  f"{r['peak_rss_1s_mb']:.0f}" if r.get("peak_rss_1s_mb") else "-",
                  f"{r['bundle_mb']:.1f}" if "bundle_mb" in r else "-"]
        lines.append("| " + " | ".join([r["name"], parity] + cells) + " |")
    m = report["machine"]
    lines.append("")
    lines.append(f"Machine: {m.get('cpu', m['machine'])}, {m['cores']} cores, int8-relevant flags "
                 f"{' '.join(m['host']['flags']) if m.get('host') else '?'} (all: {m.get('cpu_flags', '?')}); "
                 f"single-thread fp32 GEMM {m['gemm_fp32_1thread_gflops']:.1f} GFLOP/s; "
                 f"model {report['flops_10s_clip'] / 1e9:.1f} GFLOP per 10 s clip.")
    return "\n".join(lines)


def plot(report: dict, out_dir: Path) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    rows = [r for r in report["rows"] if r["latency"]]
    paths = []
    figure, axis = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
    names = [r["name"] for r in rows]
    values = [1000 * r["latency"]["10"]["median_s"] if "10" in r["latency"] else 0 for r in rows]
    axis.barh(names, values, color="#4477aa")
    axis.set_xlabel("classify latency, 10 s clip, median (ms)")
    axis.invert_yaxis()
    figure.tight_layout()
    paths.append(out_dir / "latency.png")
    figure.savefig(paths[-1], dpi=100)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        seconds = sorted(float(s) for s in r["latency"])
        axis.plot(seconds, [r["latency"][f"{s:g}"]["rtf"] for s in seconds], marker="o", label=r["name"])
    axis.set_xlabel("clip length (s)")
    axis.set_ylabel("real-time factor (lower is faster)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    paths.append(out_dir / "rtf.png")
    figure.savefig(paths[-1], dpi=100)
    plt.close("all")
    return paths


def compare(report: dict, old: dict, threshold: float = 0.10) -> list[str]:
    """Rows whose 10 s (or 1 s) median latency grew by more than `threshold` against an older report."""
    previous = {r["name"]: r for r in old.get("rows", [])}
    regressions = []
    for row in report["rows"]:
        before = previous.get(row["name"])
        if not before or not before.get("latency") or not row.get("latency"):
            continue
        for seconds in ("10", "1"):
            if seconds in row["latency"] and seconds in before["latency"]:
                new, was = row["latency"][seconds]["median_s"], before["latency"][seconds]["median_s"]
                if new > was * (1 + threshold):
                    regressions.append(f"{row['name']}: {seconds} s clip {1000 * was:.0f} -> {1000 * new:.0f} ms "
                                       f"(+{100 * (new / was - 1):.0f} %)")
                break
    return regressions
