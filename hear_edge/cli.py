"""The `hear-edge` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from hear_edge.errors import HearEdgeError, InvalidArgumentError

EPILOG = ("exit status: 0 success; 1 some files failed (the others are done), a parity or regression "
          "failure; 2 an error (bad arguments, bundle, audio or a missing package); 130 interrupted.")
# Packages only some commands need, and the extra that brings each in.
_EXTRA_OF = {"torch": "export", "onnx": "export", "onnxscript": "export", "litert_torch": "export",
             "ai_edge_quantizer": "export", "tqdm": "export", "sounddevice": "mic"}


# Flag values checked by the parser (exit 2, "argument --flag: ..."), before any model is loaded.
def _flag_value(parse, accepts, expected: str, out_of_range: str):
    """An argparse `type=`: `parse` the text (else "must be `expected`"), then `accepts` the value
    (else "must be `out_of_range`"); NaN fails every range."""
    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {out_of_range}, got {text.strip()}")
        return value
    return check


_positive_int = _flag_value(int, lambda v: v >= 1, "a whole number >= 1", "a whole number >= 1")
_probability = _flag_value(float, lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]",
                           "a probability in [0, 1], e.g. 0.5")
_positive_float = _flag_value(float, lambda v: 0.0 < v < float("inf"), "a number", "a number above 0")
_non_negative_float = _flag_value(float, lambda v: 0.0 <= v < float("inf"), "a number", "a number >= 0")


def _golden(args: argparse.Namespace) -> int:
    from hear_edge.reference.golden import FEATURE_BOUND, FRONTEND_FED_LOGIT_BOUND, LOGIT_BOUND, check_golden

    results = check_golden(args.golden_dir, use_config=not args.no_config)
    print(f"| case | logits (<= {LOGIT_BOUND:g}) | log-mel (<= {FEATURE_BOUND:g}) | power spectrum "
          f"(<= {FEATURE_BOUND:g}) | frontend-fed logits (<= {FRONTEND_FED_LOGIT_BOUND:g}) | |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.case} | {r.logits:.2e} | {r.log_mel:.2e} | {r.power_spectrum:.2e} | "
              f"{r.frontend_fed_logits:.2e} | {'ok' if r.passed else 'FAILED'} |")
    failed = [r.case for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} cases within bounds")
    return 1 if failed else 0


def _export(args: argparse.Namespace) -> int:
    from hear_edge.export import export_bundle

    manifest = export_bundle(args.checkpoint, args.output, config=args.config, labels=args.labels,
                             formats=args.format or ("onnx", "tflite"),
                             precisions=args.precision or ("fp32", "int8"),
                             calibration=args.calibration, name=args.name, version=args.model_version,
                             description=args.description,
                             force=args.force, overwrite=args.overwrite, clip_seconds=args.clip_seconds,
                             stream_context_seconds=args.stream_context, stream_hop_seconds=args.stream_hop,
                             stream_score_threshold=args.stream_threshold,
                             stream_smoothing_seconds=args.stream_smoothing,
                             background_labels=args.background_label, tflite_compat=args.tflite_compat)
    print(parity_table(manifest))
    print(f"wrote {args.output}" + ("" if manifest.parity["passed"] else " (FAILED its parity gate: --force)"))
    return 0


def parity_table(manifest) -> str:
    lines = ["| graphs | max abs logit diff vs PyTorch | acoustic cosine (min) | top-1 agreement | gate |",
             "|---|---|---|---|---|"]
    for variant, r in manifest.parity.get("results", {}).items():
        gates = ", ".join(f"{k} {v}" for k, v in r["gates"].items())
        lines.append(f"| {variant} | {r['max_abs_logit_diff']:.2e} | {r['acoustic_cosine_min']:.6f} | "
                     f"{r['top1_agreement']:.3f} ({r['agreement_measured_on']}) | "
                     f"{'passed' if r['passed'] else 'FAILED'}: {gates} |")
    return "\n".join(lines)


def _load_model(args):
    from hear_edge.run.classifier import HearEdge

    return HearEdge.load(args.bundle, backend=args.backend, precision=args.precision, num_threads=args.threads,
                         self_test=not args.no_self_test)


def _categories_text(result) -> str:
    return ", ".join(f"{c.label} {c.score:.3f}" for c in result.categories)


def _classify(args: argparse.Namespace) -> int:
    from hear_edge.tools.batch import expand_inputs, result_record, run_batch, stderr_progress

    if args.scheduler and not args.output:
        args.parser.error("--scheduler needs --output (a .jsonl or .csv results file)")
    if args.jobs != 1 and not args.output:
        args.parser.error("--jobs needs --output (a .jsonl or .csv results file)")
    files = expand_inputs(args.files)
    if args.output and args.scheduler:
        from hear_edge.tools.cluster import run_on_cluster

        done, skipped, failures, _ = run_on_cluster(files, args.output, args.scheduler, bundle=args.bundle,
                                                    backend=args.backend, precision=args.precision,
                                                    threads=args.threads, top_k=args.top_k,
                                                    on_progress=stderr_progress)
    elif args.output:
        done, skipped, failures = run_batch(files, args.output, bundle=args.bundle, backend=args.backend,
                                            precision=args.precision, threads=args.threads, top_k=args.top_k,
                                            jobs=args.jobs, on_progress=stderr_progress)
    if args.output:
        for path, error in failures:
            print(f"hear-edge: error: {path}: {error}", file=sys.stderr)
        print(f"{args.output}: {done} classified, {skipped} already there"
              + (f", {len(failures)} failed (rerun to retry them)" if failures else ""), file=sys.stderr)
        if failures:
            print(f"hear-edge: {len(failures)} of {len(files)} files failed", file=sys.stderr)
        return 1 if failures else 0
    model = _load_model(args)
    failed = 0
    for path in files:
        try:
            result = model.classify(path, max_results=args.top_k)
        except HearEdgeError as error:  # one bad file does not stop the others
            print(f"hear-edge: error: {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({**result_record(path, result),
                              "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()}}))
        else:
            print(f"{path}: {_categories_text(result)}")
            for segment in result.segments:
                print(f"  {segment.start_s:7.2f}-{segment.end_s:7.2f} s: {_categories_text(segment)}")
    if failed and len(files) > 1:  # one file: its error line is the whole story
        print(f"hear-edge: {failed} of {len(files)} files failed", file=sys.stderr)
    return 1 if failed else 0


def _stream(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from hear_edge.run.results import _ResultFilter
    from hear_edge.signal.frontend import SAMPLE_RATE_HZ
    from hear_edge.signal.stream_timing import check_smoothing_seconds, check_stream_timing

    if args.list_devices:
        return _list_devices()
    if args.mic and args.file:
        args.parser.error("give an audio FILE or --mic, not both")
    if not args.mic and not args.file:
        args.parser.error("give an audio FILE to stream, or --mic to listen to the microphone")
    if args.device is not None and not args.mic:
        args.parser.error("--device needs --mic")
    if args.realtime and args.mic:
        args.parser.error("--realtime paces a FILE; the microphone is real time already")
    microphone = None
    if args.mic:  # before the model loads: a missing microphone is the first thing to say
        from hear_edge.signal.microphone import Microphone

        microphone = Microphone(args.device)
    model = _load_model(args)
    defaults = model.manifest.stream_defaults
    hop = defaults["hop_seconds"] if args.hop is None else args.hop
    context = defaults["context_seconds"] if args.context is None else args.context
    try:
        check_stream_timing(hop, context, model.segment_samples / SAMPLE_RATE_HZ,
                            names=("--hop" if args.hop is not None else "the bundle's stream hop",
                                   "--context" if args.context is not None else "the bundle's stream context"))
        if args.smoothing is not None:
            check_smoothing_seconds(args.smoothing, "--smoothing")
    except InvalidArgumentError as error:
        args.parser.error(str(error).rstrip("."))
    # --threshold, else the bundle's recommended one, decides what a detection is, with or without --all.
    stream = model.create_stream(hop_seconds=hop, context_seconds=context, max_results=args.top_k,
                                 score_threshold="auto" if args.threshold is None else args.threshold,
                                 smoothing_seconds="auto" if args.smoothing is None else args.smoothing)
    every_score = _ResultFilter(model.labels, args.top_k, None, None, None)  # what --all shows of each result
    chosen = stream.score_threshold
    rule = (f"best label not {', '.join(model.manifest.background_labels) or 'a background label'}"
            + (f", score >= {chosen:g}" if chosen is not None else "")
            + (f", scores averaged over {stream.smoothing_seconds:g} s of results" if stream.smoothing_samples else ""))
    if not args.all:
        logging.getLogger("hear_edge").info("printing detections (%s); --all prints every result", rule)
    counts = {"results": 0, "detections": 0}

    def show(results):
        for r in results:
            counts["results"] += 1
            counts["detections"] += r.detection is not None
            if not args.all and r.detection is None:
                continue
            if args.all:
                r = dataclasses.replace(r, categories=every_score(r.scores, r.logits))
            if args.json:
                print(json.dumps(r.to_dict()), flush=True)
            elif args.all:
                mark = f"  <- detection: {r.detection.label}" if r.detection is not None else ""
                print(f"{r.start_s:7.2f}-{r.end_s:7.2f} s: {_categories_text(r)}{mark}", flush=True)
            else:
                print(f"{r.start_s:7.2f}-{r.end_s:7.2f} s: {r.detection.label} {r.detection.score:.3f}", flush=True)

    def summary(samples: int, rate: int) -> None:
        detections = counts["detections"]
        print(f"stream: {samples / rate:.2f} s of audio, {counts['results']} results, {detections} "
              f"detection{'' if detections == 1 else 's'} ({rule})", file=sys.stderr)

    sent = 0
    if microphone is not None:
        with microphone:
            rate = microphone.rate_hz
            print(f"listening to {microphone.name} at {rate} Hz; Ctrl-C to stop", file=sys.stderr)
            try:
                while True:
                    block = microphone.read()
                    sent += len(block)
                    show(stream.accept_waveform(block, rate))
            except KeyboardInterrupt:
                pass
        if sent:
            show(stream.flush())
        summary(sent, rate)
        return 0
    from hear_edge.errors import InvalidAudioError
    from hear_edge.signal.audio import audio_blocks

    blocks, rate = audio_blocks(args.file, block_frames=4096)
    started = time.perf_counter()
    for block in blocks:
        if args.realtime:
            time.sleep(max(0.0, sent / rate - (time.perf_counter() - started)))
        show(stream.accept_waveform(block, rate))
        sent += len(block)
    if not sent:
        raise InvalidAudioError(f"{args.file} holds no audio samples; pass a file with sound in it.")
    show(stream.flush())  # raises AudioTooShortError for a file too short for any result
    summary(sent, rate)
    return 0


def _list_devices() -> int:
    from hear_edge.errors import AudioDeviceError
    from hear_edge.signal.microphone import input_devices

    devices = input_devices()
    if not devices:
        raise AudioDeviceError("PortAudio finds no input device: plug in (or enable) a microphone.")
    for d in devices:
        print(f"{d['index']:3d}  {d['name']} ({d['max_input_channels']} in, {d['default_samplerate']:g} Hz)"
              + ("  [default]" if d["default"] else ""))
    return 0


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    model = _load_model(args)
    embeddings = model.embed(args.file)
    if args.output:
        with open(args.output, "wb") as handle:  # a file object: np.savez would add .npz to a bare name
            np.savez(handle, scene=embeddings.scene, frames=embeddings.frames,
                     frame_times_s=embeddings.frame_times_s)
        print(f"wrote {args.output}")
    print(f"scene embedding: {embeddings.scene.shape[0]} values; frame embeddings: "
          f"{embeddings.frames.shape[0]} x {embeddings.frames.shape[1]} (50 per second)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from hear_edge.bundle.manifest import read_manifest
    from hear_edge.run.classifier import default_bundle_path

    bundle = Path(args.bundle) if args.bundle else default_bundle_path()
    manifest = read_manifest(bundle)
    if args.json:
        print(json.dumps({"bundle": str(bundle), **manifest.to_dict(),
                          "parity_gate_passed": bool(manifest.parity.get("passed")),
                          "segment_seconds": manifest.segment_samples / manifest.sample_rate_hz}, indent=2))
        return 0
    print(f"{manifest.model_name} version {manifest.model_version} ({bundle})")
    if manifest.description:
        print(manifest.description)
    print(f"labels ({len(manifest.labels)}): {', '.join(manifest.labels)}")
    print(f"input: {manifest.sample_rate_hz} Hz; windows of {manifest.window_frames} frames "
          f"({manifest.window_frames / 50:g} s), overlap {manifest.overlap_frames}; "
          f"classify cuts clips over {manifest.segment_samples / manifest.sample_rate_hz:g} s into segments of "
          f"that length (the Task Model's {manifest.max_task_frames} frames)")
    stream, trained = manifest.stream_defaults, manifest.streaming.get("clip_seconds")
    print(f"stream defaults: context {stream['context_seconds']:g} s, hop {stream['hop_seconds']:g} s"
          + (f" (head trained on {trained:g} s clips)" if trained else ""))
    threshold = manifest.stream_score_threshold
    smoothing = manifest.stream_smoothing_seconds
    print(f"stream detections: best label not in {manifest.background_labels}, "
          + (f"score >= {threshold:g} (recommended)" if threshold is not None else "no recommended threshold")
          + (f", scores averaged over {smoothing:g} s of results" if smoothing else ""))
    print("| graph | format | precision | size MB | sha256 |")
    print("|---|---|---|---|---|")
    for g in manifest.graphs:
        print(f"| {g.role} | {g.format} | {g.precision} | {g.total_bytes / 1e6:.1f} | {g.sha256[:12]} |")
    print(parity_table(manifest))
    print(f"parity gate: {'passed' if manifest.parity.get('passed') else 'FAILED'}")
    return 0


def _passive_openmp() -> None:
    """Training threads that sleep while they wait: on a shared 2-core host, torch's OpenMP threads
    spinning at their barriers made a bf16 step 4-10x slower (benchmarks/train_step.py). Read when
    torch loads, so only before it is imported; an OMP_WAIT_POLICY the user set wins."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _finetune(args: argparse.Namespace) -> int:
    _passive_openmp()
    from hear_edge.training.finetune import finetune

    result = finetune(args.data_dir, args.output, init=args.init, config=args.config,
                      freeze_acoustic=args.freeze_acoustic, epochs=args.epochs, seed=args.seed,
                      batch_size=args.batch_size, learning_rate=args.lr, device=args.device,
                      spec_augment=args.spec_augment, speed_range=tuple(args.speed_range) if args.speed_range else None,
                      frequency_warp=args.frequency_warp, teacher=args.teacher, teacher_weight=args.teacher_weight,
                      teacher_layer=args.teacher_layer, teacher_loss=args.teacher_loss,
                      teacher_cache=args.teacher_cache, precision=args.precision,
                      checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                      resume=args.resume, max_steps=args.max_steps, balance_labels=args.balance_labels)
    for h in result.history:
        teacher = f", teacher loss {h['teacher_loss']:.4f}" if "teacher_loss" in h else ""
        print(f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}{teacher}, "
              f"validation accuracy {h['val_accuracy']:.4f}")
    if not result.finished:
        print(f"stopped after {result.steps} steps; continue with the same command and --resume"
              if result.run_state else f"stopped after {result.steps} steps")
    print(f"best epoch {result.best_epoch} ({result.best_val_accuracy:.4f}) -> {result.checkpoint}")
    print(f"export it with: hear-edge export {result.checkpoint} -o {Path(result.checkpoint).with_suffix('.hearedge')}"
          f" --config {result.config_file} --labels {result.labels_file}")
    return 0


def _teacher_frames(args: argparse.Namespace) -> int:
    from hear_edge.training.teacher import TeacherCache, cache_teacher_frames, load_teacher
    from hear_edge.training.toolkit import read_labelled_folders

    root = Path(args.data_dir)
    folders = [root / "train", root / "val"] if (root / "train").is_dir() and (root / "val").is_dir() else [root]
    clips = [clip for folder in folders for clip in read_labelled_folders(folder).clips]
    cache = TeacherCache(args.cache)
    teacher = load_teacher(args.teacher)
    before = sum(1 for _ in cache.folder.rglob("*.npy")) if cache.folder.is_dir() else 0
    keys = cache_teacher_frames(clips, teacher, cache, progress=True)
    after = sum(1 for _ in cache.folder.rglob("*.npy"))
    print(f"{len(keys)} clips: {after - before} encoded, {len(set(keys)) - (after - before)} already cached -> {cache.folder}")
    return 0


def _trim(args: argparse.Namespace) -> int:
    _passive_openmp()
    from hear_edge.training.trim import trim

    result = trim(args.checkpoint, args.data, args.output, target_sparsity=args.target_sparsity,
                  config=args.config, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size,
                  mask_learning_rate=args.mask_lr, sparsity_weight=args.sparsity_weight, patience=args.patience,
                  device=args.device, sparsity_measure=args.sparsity_measure)
    for h in result.history:
        print(f"epoch {h['epoch']}: task loss {h['train_loss']:.4f}, validation accuracy {h['val_accuracy']:.4f}, "
              f"sparsity {h['sparsity']:.3f}")
    (params_before, params_after), (macs_before, macs_after) = result.acoustic_parameters, result.acoustic_macs_10s
    print(f"kept heads per layer {result.kept_heads}, FFN channels per layer {result.kept_channels}")
    print(f"Acoustic Model: {params_before / 1e6:.2f}M -> {params_after / 1e6:.2f}M parameters, "
          f"{macs_before / 1e9:.2f} -> {macs_after / 1e9:.2f} GMAC per 10 s clip; best epoch {result.best_epoch} "
          f"({result.best_val_accuracy:.4f}) -> {result.checkpoint}")
    print(f"export it with: hear-edge export {result.checkpoint} -o {Path(result.checkpoint).with_suffix('.hearedge')}"
          f" --config {result.config_file} --labels {result.labels_file}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from hear_edge.tools.bench import compare, markdown_table, plot, run_bench

    report = run_bench(args.bundle, checkpoint=args.checkpoint, config=args.config, backends=args.backend,
                       precisions=args.precision, threads=args.threads, quick=args.quick,
                       profile_ops=args.profile_ops)
    if not report["rows"]:
        from hear_edge.bundle.manifest import read_manifest
        from hear_edge.errors import BackendUnavailableError
        from hear_edge.run.classifier import default_bundle_path
        from hear_edge.runtimes.base import FORMAT_BACKENDS, backend_problem

        bundle = Path(args.bundle) if args.bundle else default_bundle_path()
        present = sorted({name for f, _ in read_manifest(bundle).variants() for name in FORMAT_BACKENDS[f]})
        why = [f"{name}: {backend_problem(name)}" for name in present if backend_problem(name)]
        asked = "".join(f", asked for {value}" for value in (args.backend, args.precision) if value)
        raise BackendUnavailableError(
            f"nothing to bench: no backend runs a graph of {bundle} here (it has graphs for {present}{asked}). "
            + ("; ".join(why) if why else "Pick a --backend and --precision the bundle has (hear-edge info)."))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(report)
    (out / "bench.md").write_text(table + "\n")
    plots = plot(report, out)
    print(table)
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}" + "".join(f", {p}" for p in plots))
    status = 0
    failed = [r["name"] for r in report["rows"] if not r["parity"]["passed"]]
    if failed:
        print(f"parity FAILED (no speed reported) for: {', '.join(failed)}", file=sys.stderr)
        status = 1
    if args.compare:
        regressions = compare(report, json.loads(Path(args.compare).read_text()), args.threshold)
        for line in regressions:
            print(f"regression: {line}", file=sys.stderr)
        status = status or (1 if regressions else 0)
    return status


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    import inspect

    from hear_edge.run.classifier import DEFAULT_MAX_RESULTS, HearEdge
    from hear_edge.runtimes.base import BACKENDS

    # The defaults are the library's (HearEdge.load's signature, DEFAULT_MAX_RESULTS), not retyped here.
    load = {name: p.default for name, p in inspect.signature(HearEdge.load).parameters.items()}
    runtimes = ", ".join(f"{name} ({' or '.join(m.distribution for m in found)})" for name, found in BACKENDS.items())
    parser.add_argument("--bundle", help="bundle folder (default: the bundle shipped with hear-edge)")
    parser.add_argument("--backend", default=load["backend"], choices=["auto", *BACKENDS],
                        help=f"{runtimes}, or auto: the first installed one the bundle has graphs for "
                             f"(default {load['backend']})")
    parser.add_argument("--precision", default=load["precision"], choices=["auto", "fp32", "int8"],
                        help=f"auto: int8 where it passed its parity gate, else fp32 (default {load['precision']})")
    parser.add_argument("--threads", type=_positive_int, default=load["num_threads"],
                        help=f"backend threads (default {load['num_threads']})")
    parser.add_argument("--no-self-test", action="store_true",
                        help="skip the self-test at load (each graph run once on the probe input its bundle "
                             "records, refused when this runtime computes it wrong)")
    parser.add_argument("--top-k", type=_positive_int, default=DEFAULT_MAX_RESULTS,
                        help=f"categories to show (default {DEFAULT_MAX_RESULTS})")


def build_parser() -> argparse.ArgumentParser:
    from hear_edge.runtimes.base import BACKENDS
    from . import __version__

    parser = argparse.ArgumentParser(prog="hear-edge", description=__doc__, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--version", action="version", version=f"hear-edge {__version__}",
                        help="print the version and exit")
    # -v after the command too; SUPPRESS keeps a -v given before it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="one of these; `hear-edge COMMAND -h` shows its options")

    def add_command(name, **options):
        command = commands.add_parser(name, parents=[verbose], epilog=EPILOG, **options)
        command.set_defaults(parser=command)  # for errors about the flags (exit 2, usage shown)
        return command

    golden = add_command("golden", help="check the reference model and frontend against a "
                                                "golden set of official outputs (needs torch)")
    golden.add_argument("golden_dir", help="folder with state_dict.pt, config.json, cases.json, *.npz")
    golden.add_argument("--no-config", action="store_true", help="infer every size from the tensors")
    golden.set_defaults(run=_golden)

    export = add_command("export", help="export a checkpoint into a parity-checked bundle "
                                                "(needs hear-edge[export])")
    export.add_argument("checkpoint", help="a full HEAR.state_dict() saved with torch.save")
    export.add_argument("-o", "--output", required=True, help="bundle folder to write, NAME.hearedge")
    export.add_argument("--config", help="official config.json (default: sizes read from the tensors)")
    export.add_argument("--labels", required=True, help="labels file: one per line, or a JSON list")
    export.add_argument("--format", action="append", choices=["onnx", "tflite"],
                        help="repeat for several (default: both)")
    export.add_argument("--precision", action="append", choices=["fp32", "int8"],
                        help="repeat for several (default: both)")
    export.add_argument("--calibration", help="folder of real audio for the parity gate")
    export.add_argument("--name", help="model name for the manifest (default: the folder's stem)")
    export.add_argument("--model-version", default="1", help="model version for the manifest")
    export.add_argument("--description", default="", help="one paragraph for the manifest: what the model is")
    export.add_argument("--clip-seconds", type=_positive_float, help="clip length the head was trained on (default: "
                        "the checkpoint's .training.json, which finetune writes)")
    export.add_argument("--stream-context", type=_positive_float, help="default stream context in seconds (default: "
                        "the clip length, at most one 6 s window)")
    export.add_argument("--stream-hop", type=_positive_float, help="default stream hop in seconds (default: a quarter "
                        "of the context, at most 1 s)")
    export.add_argument("--stream-threshold", type=_probability, help="recommended stream detection threshold, "
                        "chosen on a validation stream (default: none)")
    export.add_argument("--stream-smoothing", type=_non_negative_float, metavar="SECONDS",
                        help="recommended stream score smoothing, chosen with the threshold (default: none)")
    export.add_argument("--background-label", action="append", help="a label streams never report as a "
                        "detection; repeat for several (default: the labels between underscores, e.g. _unknown_)")
    export.add_argument("--force", action="store_true", help="write a bundle that misses its parity gate, "
                                                             "marked as failed")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    export.add_argument("--tflite-compat", metavar="2.N", help="write fp32 TFLite graphs that tflite-runtime 2.N "
                        "and later run (2.5: Chaquopy, 2.8: python-for-android): no GELU operator, one file "
                        "per length bucket")
    export.set_defaults(run=_export, default_verbose=True)

    tune = add_command("finetune", help="train on folders of labelled audio (needs torch)")
    tune.add_argument("data_dir", help="one folder per label (or train/ and val/ folders holding them)")
    tune.add_argument("-o", "--output", required=True, help="checkpoint to write (official HEAR keys)")
    tune.add_argument("--init", help="official checkpoint to start from: full or acoustic-model file")
    tune.add_argument("--config", help="official config.json for the sizes (from scratch)")
    tune.add_argument("--freeze-acoustic", action="store_true", help="train the task model and head only")
    tune.add_argument("--epochs", type=_positive_int, default=10, help="passes over the training set (default 10)")
    tune.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same model (default 0)")
    tune.add_argument("--batch-size", type=_positive_int, default=32, help="clips per training step (default 32)")
    tune.add_argument("--lr", type=_positive_float, help="learning rate (default 1e-4 with --init, else 5e-4)")
    tune.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda")
    tune.add_argument("--spec-augment", action="store_true", help="mask random frequency bands and time spans")
    tune.add_argument("--speed-range", type=float, nargs=2, metavar=("SLOWEST", "FASTEST"),
                      help="play each training clip at a random speed in this range, e.g. 0.8 1.25")
    tune.add_argument("--frequency-warp", type=float, metavar="FRACTION",
                      help="move each training clip's spectrum by a random factor in 1 +- FRACTION, e.g. 0.12")
    tune.add_argument("--balance-labels", action="store_true",
                      help="draw every label equally often each epoch (rare labels' clips repeat)")
    tune.add_argument("--teacher", choices=["whisper-tiny.en"],
                      help="pull a projection of one Acoustic Model layer towards this frozen teacher's frames "
                           '(needs pip install "hear-edge[teacher]")')
    tune.add_argument("--teacher-weight", type=float, default=1.0, help="weight of the teacher loss (default 1)")
    tune.add_argument("--teacher-layer", type=int, default=-1,
                      help="Acoustic Model layer the teacher regularises (default -1, the last)")
    tune.add_argument("--teacher-loss", default="cosine", choices=["cosine", "mse"],
                      help="1 - cosine per frame (default) or CAT's squared error / sqrt(width)")
    tune.add_argument("--teacher-cache", help="folder of the teacher's cached frames (default: teacher-cache/ "
                                              "beside the output)")
    tune.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                      help="auto: bf16 autocast where the CPU has AMX or AVX-512 BF16, else fp32 (default auto)")
    tune.add_argument("--checkpoint-dir", help="folder for the run's state (model, optimizer, schedule, random "
                                               "generators, step), written at each epoch's end; keep it in an "
                                               "ignored folder such as out/")
    tune.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="also write the run's state every STEPS steps")
    tune.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint-dir")
    tune.add_argument("--max-steps", type=int, help="stop after this many steps in all (resume later)")
    tune.set_defaults(run=_finetune, default_verbose=True)

    frames = add_command("teacher-frames", help="cache a teacher's frames of every clip of a data folder, "
                                                 "before finetune --teacher (in its own process)")
    frames.add_argument("data_dir", help="the folder finetune will read")
    frames.add_argument("--teacher", default="whisper-tiny.en", choices=["whisper-tiny.en"],
                        help='the teacher (needs pip install "hear-edge[teacher]")')
    frames.add_argument("--cache", required=True, help="the folder finetune's --teacher-cache will name")
    frames.set_defaults(run=_teacher_frames, default_verbose=True)

    trim = add_command("trim", help="learn which heads and FFN channels a task needs and cut the "
                                            "rest (needs torch)")
    trim.add_argument("checkpoint", help="a full HEAR.state_dict() fine-tuned on the task's labels")
    trim.add_argument("--data", required=True, help="one folder per label (or train/ and val/ folders)")
    trim.add_argument("-o", "--output", required=True, help="trimmed checkpoint to write")
    trim.add_argument("--target-sparsity", type=_probability, default=0.5,
                      help="fraction of heads and FFN channels to remove (default 0.5)")
    trim.add_argument("--config", help="config.json of the checkpoint (default: sizes read from the tensors)")
    trim.add_argument("--epochs", type=_positive_int, default=10, help="most passes over the training set (default 10)")
    trim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    trim.add_argument("--batch-size", type=_positive_int, default=32, help="clips per training step (default 32)")
    trim.add_argument("--mask-lr", type=_positive_float, default=5e-3, help="Adam rate of the mask values (default 5e-3)")
    trim.add_argument("--sparsity-weight", type=_non_negative_float, default=100.0, help="sparsity loss weight (default 100)")
    trim.add_argument("--sparsity-measure", default="gates", choices=["gates", "sigmoid"],
                      help="what the sparsity loss steers: the fraction of gates kept (default) or the "
                           "paper's mean sigmoid")
    trim.add_argument("--patience", type=_positive_int, default=3, help="epochs without improvement before stopping")
    trim.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda")
    trim.set_defaults(run=_trim, default_verbose=True)

    classify = add_command("classify", help="classify audio files")
    classify.add_argument("files", nargs="+", metavar="FILE_OR_DIR",
                          help="audio files (anything soundfile reads) or folders of them; a bad one is reported "
                               "and skipped")
    _add_model_options(classify)
    classify.add_argument("--json", action="store_true", help="one JSON object per file")
    classify.add_argument("-o", "--output", help="append results to this .jsonl or .csv file, skipping the files "
                                                 "already in it (rerun to resume)")
    classify.add_argument("-j", "--jobs", type=_positive_int, default=1,
                          help="worker processes for --output, each loading the model once (default 1)")
    classify.add_argument("--scheduler", metavar="ADDRESS",
                          help="run --output on a Dask cluster, e.g. tcp://host:8786 (needs hear-edge[cluster]); "
                               "the files and --bundle must be at the same paths on its workers")
    classify.set_defaults(run=_classify)

    stream = add_command("stream", help="classify a file (or the microphone) as a stream")
    stream.add_argument("file", nargs="?", metavar="FILE", help="audio file to feed as a stream (or --mic)")
    _add_model_options(stream)
    stream.add_argument("--hop", type=_positive_float, help="seconds between results (default: the bundle's, "
                                                  "see `hear-edge info`)")
    stream.add_argument("--context", type=_positive_float, help="seconds each result covers (default: the bundle's, "
                                                      "the clip length its head was trained on)")
    stream.add_argument("--threshold", type=_probability, help="detection score threshold, 0 to 1 (default: "
                        "the bundle's recommended one, see `hear-edge info`)")
    stream.add_argument("--smoothing", type=_non_negative_float, metavar="SECONDS",
                        help="detections read the mean scores of the results within this span, 0 to 2 s "
                             "(default: the bundle's, see `hear-edge info`; 0: each result alone)")
    stream.add_argument("--all", action="store_true", help="print every result, not only detections (which "
                                                           "the threshold still decides)")
    stream.add_argument("--realtime", action="store_true", help="feed the file at its real-time pace")
    stream.add_argument("--mic", action="store_true", help="listen to the microphone (needs hear-edge[mic] "
                                                           "and PortAudio); Ctrl-C stops")
    stream.add_argument("--device", help="with --mic: the input device, by index or part of its name "
                                         "(default: the system's default input)")
    stream.add_argument("--list-devices", action="store_true", help="list the input devices --device takes, "
                                                                    "and exit")
    stream.add_argument("--json", action="store_true", help="one JSON object per result")
    stream.set_defaults(run=_stream)

    embed = add_command("embed", help="scene and frame embeddings of a file")
    embed.add_argument("file", metavar="FILE", help="audio file to embed")
    _add_model_options(embed)
    embed.add_argument("-o", "--output", help="write scene, frames, frame_times_s to this .npz")
    embed.set_defaults(run=_embed)

    bench = add_command("bench", help="latency, RTF, streaming, memory, size and parity per backend")
    bench.add_argument("--bundle", help="bundle folder (default: the shipped one)")
    bench.add_argument("--checkpoint", help="the bundle's source checkpoint: adds the PyTorch eager rows "
                                            "and checks parity against them live (needs torch)")
    bench.add_argument("--config", help="config.json for --checkpoint")
    bench.add_argument("--backend", action="append", choices=list(BACKENDS), help="default: all installed")
    bench.add_argument("--precision", action="append", choices=["fp32", "int8"], help="default: all in the bundle")
    bench.add_argument("--threads", type=_positive_int, action="append", help="default: 1 and all cores")
    bench.add_argument("--quick", action="store_true", help="1 s and 10 s clips, few repeats (CI)")
    bench.add_argument("--profile-ops", action="store_true",
                       help="add onnxruntime's per-op profile (ms by op type, per graph) to each ONNX row's latencies "
                            "(its profiled sessions count in that row's peak RSS)")
    bench.add_argument("--out", default="bench-results", help="folder for bench.json, bench.md and plots")
    bench.add_argument("--compare", help="an older bench.json: flag rows slower by more than --threshold")
    bench.add_argument("--threshold", type=_non_negative_float, default=0.10, help="regression threshold (default 0.10)")
    bench.set_defaults(run=_bench, default_verbose=True)

    info = add_command("info", help="labels, graphs, sizes and parity figures of a bundle")
    info.add_argument("bundle", nargs="?", help="bundle folder (default: the shipped one)")
    info.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    info.set_defaults(run=_info)
    return parser


def _missing_package(error: ModuleNotFoundError, command: str) -> str | None:
    """What to install for a command whose optional package is missing, or None for another import error."""
    package = (error.name or "").split(".")[0]
    if package not in _EXTRA_OF:
        return None
    extra = _EXTRA_OF[package]
    how = (f"pip install '.[{extra}]' in a hear-edge checkout (or 'hear-edge[{extra}]' from a built wheel)"
           if extra else f"pip install {package}")
    return f"`hear-edge {command}` needs {package}, which is not installed: {how}."


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        verbose = getattr(args, "verbose", False) or getattr(args, "default_verbose", False)
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        logging.getLogger("hear_edge").setLevel(logging.INFO if verbose else logging.WARNING)
        try:
            status = args.run(args)
        except HearEdgeError as error:
            print(f"hear-edge: error: {error}", file=sys.stderr)
            return 2
        except ModuleNotFoundError as error:
            message = _missing_package(error, args.command)
            if message is None:
                raise
            print(f"hear-edge: error: {message}", file=sys.stderr)
            return 2
        except OSError as error:  # e.g. -o into a folder that does not exist
            if isinstance(error, BrokenPipeError):
                raise
            print(f"hear-edge: error: {error}", file=sys.stderr)
            return 2
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly. Point stdout at devnull so the flush at exit
        # does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a tool killed by the closed pipe would return


if __name__ == "__main__":
    sys.exit(main())
