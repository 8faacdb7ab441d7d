"""This checkout's classify against another checkout's frontend and spectrum pairing, in one process.

For runtime changes that leave the graphs alone (the frontend, the task graph's input packing): both
sides run this checkout's engine on the same bundle's graphs; the "before" side swaps in the other
checkout's `LogMelFrontend` (hear_edge/signal/frontend.py) and `spectrum_pairs` (hear_edge/run/inference.py).
One thread, round robin, CPU time; ratios are medians over rounds of before / after. Each clip's logits
must agree bit for bit, else it says so and exits 1.

    python3 benchmarks/classify_ab.py BUNDLE --against /path/to/other/checkout [--seconds 1 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _report import emit_report  # noqa: E402  (beside this script)


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _function(path: Path, name: str):
    """One top-level function of a file, compiled alone with numpy (its module's imports need not load)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    scope = {"np": np}
    exec(compile(ast.Module([node], []), str(path), "exec"), scope)
    return scope[name]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--against", required=True, type=Path, help="the other checkout (its root folder)")
    parser.add_argument("--precision", action="append", choices=["fp32", "int8"])
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import hear_edge.run.inference as inference
    from hear_edge import HearEdge
    from hear_edge.bundle.gates import synthetic_clip
    from hear_edge.tools.bench import machine_info

    other_frontend = _module(args.against / "hear_edge" / "signal" / "frontend.py", "_before_frontend")
    other_pairs = _function(args.against / "hear_edge" / "run" / "inference.py", "spectrum_pairs")
    this_pairs = inference.spectrum_pairs
    precisions = args.precision or ["fp32", "int8"]
    after = {p: HearEdge.load(args.bundle, backend="onnx", precision=p, num_threads=1) for p in precisions}
    before = {p: HearEdge.load(args.bundle, backend="onnx", precision=p, num_threads=1) for p in precisions}
    for model in before.values():
        model.frontend = other_frontend.LogMelFrontend(other_frontend.FrontendParams(**model.manifest.frontend.to_dict()))

    def run(model, wave, pairs):
        inference.spectrum_pairs = pairs
        try:
            return model.classify(wave, 16000, max_results=None)
        finally:
            inference.spectrum_pairs = this_pairs

    clips = {f"{s:g} s clip": synthetic_clip(s, seed=100) for s in args.seconds}
    identical = {}
    for name, wave in clips.items():  # warm-up, and the outputs compared
        for p in precisions:
            a, b = run(before[p], wave, other_pairs), run(after[p], wave, this_pairs)
            identical[f"{name} {p}"] = bool(np.array_equal(a.logits, b.logits))
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, wave in clips.items():
            for p in precisions:
                for side, model, pairs in (("before", before[p], other_pairs), ("after", after[p], this_pairs)):
                    started = time.process_time()
                    run(model, wave, pairs)
                    times.setdefault(f"{name} {p} {side}", []).append(time.process_time() - started)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    report = {"machine": machine_info(), "bundle": args.bundle, "against": str(args.against), "rounds": args.rounds,
              "threads": 1, "timer": "process CPU time", "logits_identical": identical,
              "medians_ms": {k: 1000 * float(np.median(v)) for k, v in times.items()},
              "before_over_after": {f"{name} {p}": float(np.median(np.array(times[f"{name} {p} before"])
                                                                   / np.array(times[f"{name} {p} after"])))
                                    for name in clips for p in precisions}}
    emit_report(report, args.json)
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
