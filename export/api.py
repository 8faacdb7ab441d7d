"""export_bundle: checkpoint in, verified `NAME.hearedge/` bundle out."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hear_edge.bundle.manifest import (FORMATS, PRECISIONS, Manifest, default_background_labels, sha256_file,
                                       stream_settings)
from hear_edge.bundle.selftest import with_probe
from hear_edge.errors import ConfigError, InvalidArgumentError, LabelError
from hear_edge.host import host_cpu, package_versions
from hear_edge.reference.model import load_checkpoint
from hear_edge.signal.frontend import FrontendParams
from hear_edge.signal.segments import segment_samples
from hear_edge.signal.stream_timing import check_smoothing_seconds

from .compat import compat_provenance, export_tflite_compat, parse_compat
from .formats import ONNX_INT8_ATTENTION, ONNX_INT8_RECIPE, ONNX_OPSET, TFLITE_INT8_RECIPE, export_onnx, export_tflite
from .parity import check_parity, real_clips, synthetic_clips

logger = logging.getLogger("hear_edge")


def load_labels(labels) -> list[str]:
    """Labels from a sequence, a text file (one per line) or a JSON file (a list, or {"labels": [...]})."""
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise LabelError(f"labels file {path} does not exist.")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                raise LabelError(f"labels file {path} is not valid JSON: {error}.") from None
            labels = data.get("labels") if isinstance(data, dict) else data
            if not isinstance(labels, list):
                raise LabelError(f"labels file {path}: expected a JSON list of names or {{\"labels\": [...]}}.")
        else:
            labels = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise LabelError(f"labels must be a list of names or a file path, got {type(labels).__name__}.")
    labels = [str(label) for label in labels]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise LabelError(f"labels must be unique; repeated: {duplicates}.")
    if any(not label.strip() for label in labels):
        raise LabelError("labels must not be empty strings.")
    return labels


def _streaming(model, checkpoint, clip_seconds, context_seconds, hop_seconds) -> dict:
    from hear_edge.signal.stream_timing import check_stream_timing

    if clip_seconds is None and isinstance(checkpoint, (str, Path)):
        training = Path(checkpoint).with_suffix(".training.json")
        if training.is_file():
            try:
                clip_seconds = json.loads(training.read_text()).get("clip_seconds")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
                raise ConfigError(f"{training} is not the JSON object finetune writes ({error}); fix or delete "
                                  f"it, or pass clip_seconds (--clip-seconds).") from None
    if clip_seconds is not None and (isinstance(clip_seconds, bool) or not isinstance(clip_seconds, (int, float))
                                     or not 0 < clip_seconds <= 3600):
        raise ConfigError(f"clip_seconds must be the training clip length in seconds (0-3600], got "
                          f"{clip_seconds!r}; pass --clip-seconds or fix the checkpoint's .training.json.")
    hop = FrontendParams().hop_samples
    window_seconds = model.acoustic_model.max_length * 2 * hop / 16000
    settings = stream_settings(clip_seconds, window_seconds)
    if context_seconds is not None:
        settings["context_seconds"] = context_seconds
    if hop_seconds is not None:
        settings["hop_seconds"] = hop_seconds
    check_stream_timing(settings["hop_seconds"], settings["context_seconds"],
                        segment_samples(model.config.task_model.max_length, hop) / 16000)
    return settings


def _detection_settings(labels: list[str], threshold, background_labels, smoothing_seconds=None) -> dict:
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 <= threshold <= 1.0):
        raise ConfigError(f"stream_score_threshold must be a probability in [0, 1] or None, got {threshold!r}.")
    if background_labels is None:
        background_labels = default_background_labels(labels)
    elif isinstance(background_labels, str) or not all(label in labels for label in background_labels):
        raise LabelError(f"background_labels must be a list of the model's labels {labels}, got "
                         f"{background_labels!r}.")
    settings = {"background_labels": list(dict.fromkeys(background_labels))}
    if threshold is not None:
        settings["score_threshold"] = float(threshold)
    if smoothing_seconds is not None:
        try:
            check_smoothing_seconds(smoothing_seconds, "stream_smoothing_seconds")
        except InvalidArgumentError as error:
            raise ConfigError(str(error)) from None
        settings["smoothing_seconds"] = float(smoothing_seconds)
    return settings


def _check_compat(tflite_compat, formats, precisions) -> str:
    """The checked tflite_compat version; refused without TFLite fp32 graphs to write."""
    version = parse_compat(tflite_compat)
    if "tflite" not in formats or "fp32" not in precisions:
        raise ConfigError(f"tflite_compat={tflite_compat!r} writes fp32 TFLite graphs, but formats={formats} and "
                          f"precisions={precisions}; include 'tflite' and 'fp32', or leave tflite_compat out.")
    return version


def export_bundle(checkpoint, out, config=None, labels=None, formats=FORMATS, precisions=PRECISIONS,
                  calibration=None, name: str | None = None, version: str = "1", description: str = "",
                  force: bool = False, overwrite: bool = False, clip_seconds: float | None = None,
                  stream_context_seconds: float | None = None, stream_hop_seconds: float | None = None,
                  stream_score_threshold: float | None = None, background_labels=None,
                  tflite_compat: str | None = None, stream_smoothing_seconds: float | None = None) -> Manifest:
    """Export a HEAR checkpoint into a self-describing, parity-checked bundle.

    Args:
        checkpoint: a checkpoint path (full `HEAR.state_dict()`), as `load_checkpoint` takes.
        out: the bundle folder to write, conventionally `NAME.hearedge`.
        config: an official config.json path or dict, or None to infer sizes from the tensors.
        labels: one name per class, as a list or a text/JSON file; the count must match the head.
        formats: any of "onnx", "tflite".
        precisions: any of "fp32", "int8".
        calibration: a folder of real audio for the parity gate (int8 top-1 agreement is measured
            on it); synthetic clips are always added.
        name, version, description: recorded in the manifest (name defaults to the folder's stem).
        force: write a bundle that misses its parity gate, marked as failed in the manifest.
        overwrite: replace an existing `out`.
        clip_seconds: the clip length the head was trained on; None reads it from the
            checkpoint's `.training.json` (fine-tuning writes it), else it stays unknown.
        stream_context_seconds, stream_hop_seconds: the stream a user gets by default; None
            derives them from `clip_seconds` (`hear_edge.bundle.manifest.stream_settings`).
        stream_score_threshold: the detection threshold streams take by default (choose it on a
            validation stream: `examples/evaluate_stream.py`); None records none.
        stream_smoothing_seconds: the score smoothing stream detections take by default, chosen
            with the threshold; None records none (each result alone).
        background_labels: labels that are never detections; None takes
            `hear_edge.bundle.manifest.default_background_labels` (`_unknown_`, `_silence_`, ...).
        tflite_compat: None, or the oldest tflite-runtime the TFLite graphs must run on, as "2.N"
            (N >= 5: "2.5" for Chaquopy, "2.8" for python-for-android): fp32 graphs without the
            GELU operator, one single-signature file per bucket (`hear_edge.export.compat`). The
            TFLite graphs are then fp32 only; int8 applies to the ONNX graphs.

    Returns:
        The manifest written to `out/manifest.json`, with the parity figures measured.

    Raises:
        LabelError: labels missing or not matching the head (raised before any export work).
        ConfigError: a checkpoint whose spectrogram_n_fft is not the frontend's 1024 (before any work);
            a bad tflite_compat, or one asked with no fp32 graphs to write.
        ParityError: an exported graph differs from the reference beyond its gate (unless force).
    """
    formats, precisions = tuple(formats), tuple(precisions)
    bad = [f for f in formats if f not in FORMATS] + [p for p in precisions if p not in PRECISIONS]
    if bad or not formats or not precisions:
        raise InvalidArgumentError(f"formats must be some of {FORMATS} and precisions some of {PRECISIONS}; "
                            f"got formats={formats}, precisions={precisions}.")
    if tflite_compat is not None:
        tflite_compat = _check_compat(tflite_compat, formats, precisions)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InvalidArgumentError(f"{out} already exists; choose another path or pass overwrite=True (--overwrite).")
    model = load_checkpoint(checkpoint, config)
    frontend = FrontendParams()
    n_fft = model.config.acoustic_model.spectrogram_n_fft
    if n_fft != frontend.n_fft:
        # The graphs would be sized for n_fft // 2 + 1 bins, but the runtime's frontend (and the
        # manifest, hear_edge.bundle.manifest_check.SUPPORTED_FRONTEND) computes n_fft = 1024 only.
        raise ConfigError(f"the checkpoint's acoustic_model.spectrogram_n_fft is {n_fft}; hear-edge exports only "
                          f"models with the standard frontend's n_fft = {frontend.n_fft} (its runtime frontend "
                          f"computes {frontend.n_fft // 2 + 1} spectrum bins). Train or fine-tune with "
                          f"spectrogram_n_fft = {frontend.n_fft}.")
    num_classes = model.config.classification_decoder.num_classes
    if labels is None:
        raise LabelError(f"labels are required: give {num_classes} names, one per class of the head.")
    labels = load_labels(labels)
    if len(labels) != num_classes:
        raise LabelError(f"{len(labels)} labels given but the checkpoint's head has {num_classes} classes; "
                         f"give exactly one label per class, in the head's order.")
    streaming = _streaming(model, checkpoint, clip_seconds, stream_context_seconds, stream_hop_seconds)
    streaming.update(_detection_settings(labels, stream_score_threshold, background_labels, stream_smoothing_seconds))
    longest = segment_samples(model.config.task_model.max_length, frontend.hop_samples)
    clips = synthetic_clips() + (real_clips(calibration, longest, limit=64) if calibration is not None else [])

    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        graphs = []
        if "onnx" in formats:
            graphs += export_onnx(model, staging, precisions)
        if "tflite" in formats:
            graphs += (export_tflite_compat(model, staging, tflite_compat) if tflite_compat
                       else export_tflite(model, staging, precisions))
        hear_config = model.config
        graphs = [with_probe(staging, spec, hear_config.acoustic_model.max_length, hear_config.task_model.max_length)
                  for spec in graphs]
        manifest = Manifest(
            model_name=name or out.name.removesuffix(".hearedge"),
            model_version=str(version),
            description=description,
            labels=labels,
            frontend=frontend,
            window_frames=hear_config.acoustic_model.max_length,
            overlap_frames=hear_config.acoustic_model.overlap,
            acoustic_hidden_size=hear_config.acoustic_model.hidden_size,
            task_hidden_size=hear_config.task_model.hidden_size,
            max_task_frames=hear_config.task_model.max_length,
            graphs=graphs,
            streaming=streaming,
            provenance={
                "checkpoint_sha256": sha256_file(checkpoint) if isinstance(checkpoint, (str, Path)) else None,
                "config": hear_config.to_dict(),
                "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "versions": package_versions(("hear-edge", "torch", "onnx", "onnxruntime", "litert-torch",
                                              "ai-edge-litert", "ai-edge-quantizer", "numpy")),
                "onnx_opset": ONNX_OPSET,
                "int8": {"onnx": "quantize_dynamic " + json.dumps(ONNX_INT8_RECIPE) + ", dynamic uint8 "
                                 "activations; Conv1d kept float; Spectrogram Mixture's matmul split into one per input "
                                 "(each input on its own scale); "
                                 "Acoustic Model attention products as integer matmuls "
                                 + json.dumps(list(ONNX_INT8_ATTENTION)) + " (queries dynamic uint8, keys dynamic "
                                 "symmetric 7-bit int8, position tables 7-bit int8, probabilities uint8 at "
                                 "1/255); float weights of 16384+ elements stored fp16, cast to fp32 at load",
                         "tflite": "ai-edge-quantizer dynamic int8 weights, float activations quantised at "
                                   "run time; (operation, weight granularity), later overriding earlier: "
                                   + json.dumps(TFLITE_INT8_RECIPE),
                         # The int8 gate's figures hold on the host they were measured on; kernels
                         # differ by CPU feature (VNNI or not, sdot on ARM).
                         "gated_on_host": host_cpu()},
            },
        )
        if tflite_compat:
            manifest.provenance["tflite_compat"] = compat_provenance(tflite_compat)
        manifest.write(staging)
        results, reference_outputs = check_parity(model, staging, manifest, clips, force)
        manifest.parity = {"clips": [{"name": c.name, "seconds": c.waveform.shape[1] / 16000, "real": c.real}
                                     for c in clips],
                           "reference": "hear_edge.reference.model (PyTorch fp32 eager, official preprocessing)",
                           "results": results,
                           "reference_outputs": reference_outputs}
        manifest.parity["passed"] = all(r["passed"] for r in manifest.parity["results"].values())
        manifest.write(staging)
        if out.exists():
            shutil.rmtree(out)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp made it private; a bundle is read by whoever runs it
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("bundle %s written in %.0f s", out, time.perf_counter() - started)
    return manifest
