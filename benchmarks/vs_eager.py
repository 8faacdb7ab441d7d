"""hear-edge against PyTorch eager on the same weights: clips, keyword streams and long-context streams.

Everything runs in one process on one thread, round robin (each round times every contender on
every input in turn, so drift in the machine's speed hits all alike; the streams' rounds follow the
clips'), in CPU time
(time.process_time). Ratios are medians over rounds of eager / hear-edge. PyTorch eager runs
the reference model (`hear_edge.reference.model`) exactly as `classify` is defined: official preprocessing,
one clip per call. A stream figure is the compute of the whole stream (every chunk through
`accept_waveform`) over the compute of one offline `classify` of the same audio, and per result against
eager classifying the very windows the stream's results cover (its first results' shorter ones too), one
call each, timed in the same rounds.

    python3 benchmarks/vs_eager.py CHECKPOINT --config CONFIG --bundle B.hearedge [--rounds 7] [--calls-per-turn 1]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _report import emit_report  # noqa: E402  (beside this script)


def _cpu_seconds(fn) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


def _speed_up(row: dict[str, list[float]], contender: str) -> float:
    """Median over rounds of eager's time / the contender's time in the same round."""
    return float(np.median(np.array(row["pytorch eager"]) / np.array(row[contender])))


def _medians_ms(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Each input's and contender's median over rounds, in ms."""
    return {name: {k: 1000 * float(np.median(v)) for k, v in row.items()} for name, row in times.items()}


def main(argv=None) -> int:
    from hear_edge.runtimes.base import BACKEND_FORMAT

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--config")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--precision", action="append", choices=["fp32", "int8"],
                        help="repeat for several (default: every ONNX precision in the bundle)")
    parser.add_argument("--backend", default="onnx", choices=list(BACKEND_FORMAT))
    parser.add_argument("--also", action="append", default=[], metavar="BACKEND:PRECISION:BUNDLE",
                        help="another contender in the same rounds, labelled 'BACKEND PRECISION (BUNDLE's name)': "
                             "a baseline bundle, or a LiteRT one (repeat for several); a ':no-arena' tail "
                             "opens its onnxruntime sessions without the shared arena (HEAR_EDGE_ORT_ARENA=0)")
    parser.add_argument("--clips", type=float, nargs="+", default=[1.0, 2.0, 3.0, 10.0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls-per-turn", type=int, default=1,
                        help="clips: calls in a row per contender in each round (default 1). The first call "
                             "follows another contender (its caches cold) and gives the main figures; with N > 1 "
                             "the median of calls 2..N (its own weights in cache, as repeated calls see) gives "
                             "the report's 'warm' figures")
    parser.add_argument("--stream-seconds", type=float, default=60.0,
                        help="audio per stream measurement (default 60; 0: clips only)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.calls_per_turn < 1:
        parser.error(f"--calls-per-turn must be at least 1, got {args.calls_per_turn}")

    import torch

    from hear_edge import HearEdge
    from hear_edge.bundle.gates import synthetic_clip
    from hear_edge.reference.model import load_checkpoint
    from hear_edge.tools.bench import machine_info

    torch.set_num_threads(1)
    eager = load_checkpoint(args.checkpoint, args.config)
    fmt = BACKEND_FORMAT[args.backend]
    precisions = args.precision or [p for f, p in HearEdge.load(args.bundle, backend=args.backend)
                                    .manifest.variants() if f == fmt]
    models = {p: HearEdge.load(args.bundle, backend=args.backend, precision=p, num_threads=1) for p in precisions}
    for spec in args.also:
        backend, precision, bundle = spec.split(":", 2)
        arena = not bundle.endswith(":no-arena")  # onnxruntime sessions without the shared arena
        bundle = bundle.removesuffix(":no-arena")
        label = f"{backend} {precision} ({os.path.basename(os.path.normpath(bundle))}{'' if arena else ', no arena'})"
        os.environ["HEAR_EDGE_ORT_ARENA"] = "1" if arena else "0"
        models[label] = HearEdge.load(bundle, backend=backend, precision=precision, num_threads=1)
        os.environ.pop("HEAR_EDGE_ORT_ARENA")

    def eager_classify(wave: np.ndarray):
        tensor = torch.from_numpy(wave.astype(np.float32))[None, None]
        with torch.no_grad():
            return eager(tensor, torch.tensor([wave.shape[0]]))

    streams = {"keyword stream (1 s / 0.25 s)": (1.0, 0.25), "long-context stream (6 s / 1 s)": (6.0, 1.0)}
    if args.stream_seconds <= 0:
        streams = {}
    # Every stream's context length is a clip too (the tables' 6 s row).
    lengths = sorted(set(args.clips) | {context for context, _ in streams.values()})
    clips = {f"{s:g} s clip": synthetic_clip(s, seed=100) for s in lengths}
    stream_audio = synthetic_clip(max(args.stream_seconds, 1.0), seed=101)

    def run_stream(model, context, hop):
        stream = model.create_stream(hop_seconds=hop, context_seconds=context)
        results = 0
        for start in range(0, len(stream_audio), 1600):  # 100 ms chunks, as a microphone delivers
            results += len(stream.accept_waveform(stream_audio[start:start + 1600], 16000))
        return results

    for model in models.values():  # warm-up, excluded
        for wave in clips.values():
            model.classify(wave, 16000)
        eager_classify(wave)

    times: dict[str, dict[str, list[float]]] = {}
    warm_times: dict[str, dict[str, list[float]]] = {}  # calls 2..N of a turn (--calls-per-turn)

    def turn(name, contender, fn):
        calls = [_cpu_seconds(fn) for _ in range(args.calls_per_turn)]
        times.setdefault(name, {}).setdefault(contender, []).append(calls[0])
        if len(calls) > 1:
            warm_times.setdefault(name, {}).setdefault(contender, []).append(float(np.median(calls[1:])))

    results_per_stream = {}
    for _ in range(args.rounds):
        for name, wave in clips.items():
            turn(name, "pytorch eager", lambda: eager_classify(wave))
            for precision, model in models.items():
                turn(name, precision, lambda: model.classify(wave, 16000))
        print(".", end="", flush=True, file=sys.stderr)
    # The streams in rounds of their own, after the clips': a minute of streams before an eager call
    # left it cold (a 1 s clip 33-38 ms, 25-29 ms alone), where every other first call follows a clip.
    # Eager's stream is one classify per result window, in the same rounds: timed in the clips' rounds
    # instead, its 1 s clip met the streams minutes later, and the host's drift in between (up to 15 %
    # within a minute on a shared 2-core host) entered the per-result ratio.
    stream_windows = {name: [stream_audio[max(0, end - round(context * 16000)):end]
                             for end in range(round(hop * 16000), len(stream_audio) + 1, round(hop * 16000))]
                      for name, (context, hop) in streams.items()}

    def eager_stream(windows):
        for wave in windows:
            eager_classify(wave)

    for _ in range(args.rounds if streams else 0):
        for name, (context, hop) in streams.items():
            row = times.setdefault(name, {})
            row.setdefault("pytorch eager, one classify per result window", []).append(
                _cpu_seconds(lambda: eager_stream(stream_windows[name])))
            for precision, model in models.items():
                row.setdefault(f"{precision} offline classify of the stream's audio", []).append(
                    _cpu_seconds(lambda: model.classify(stream_audio, 16000)))
                count = []
                row.setdefault(f"{precision} stream", []).append(
                    _cpu_seconds(lambda: count.append(run_stream(model, context, hop))))
                if count[0] != len(stream_windows[name]):
                    raise RuntimeError(f"{name}: {count[0]} results from the stream, {len(stream_windows[name])} "
                                       f"windows for eager")
                results_per_stream[name] = count[0]
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)

    report = {"machine": machine_info(), "bundle": args.bundle, "also": args.also, "backend": args.backend,
              "rounds": args.rounds, "calls_per_turn": args.calls_per_turn,
              "threads": 1, "timer": "process CPU time", "stream_seconds": args.stream_seconds,
              "medians_ms": _medians_ms(times),
              "ratios": {}}
    if warm_times:
        report["warm_medians_ms"] = _medians_ms(warm_times)
        report["warm_ratios"] = {n: {f"{p} speed-up vs eager": _speed_up(row, p) for p in models}
                                 for n, row in warm_times.items()}
    for name, row in times.items():
        ratios = report["ratios"].setdefault(name, {})
        for precision in models:
            if name in clips:
                ratios[f"{precision} speed-up vs eager"] = _speed_up(row, precision)
            else:
                stream, offline = np.array(row[f"{precision} stream"]), np.array(
                    row[f"{precision} offline classify of the stream's audio"])
                ratios[f"{precision} stream compute / offline classify"] = float(np.median(stream / offline))
                # Both sides computed the same results in the same round: a ratio of totals is one per result.
                ratios[f"{precision} speed-up per result vs eager"] = float(np.median(
                    np.array(row["pytorch eager, one classify per result window"]) / stream))
                ratios["results"] = results_per_stream[name]
    return emit_report(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
