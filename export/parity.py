"""The parity gate: reference model and exported graphs on the same audio, figures and verdicts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hear_edge.bundle import gates
from hear_edge.bundle.gates import cosine, verdict
from hear_edge.errors import DataFolderError, HearEdgeError, ParityError
from hear_edge.reference.model import reference_outputs
from hear_edge.run.inference import InferenceEngine
from hear_edge.signal.audio import AUDIO_SUFFIXES, load_input
from hear_edge.signal.frontend import compute_features

logger = logging.getLogger("hear_edge")



@dataclass
class ParityClip:
    name: str
    waveform: np.ndarray  # (channels, samples) float32 at 16 kHz
    real: bool


def synthetic_clips() -> list[ParityClip]:
    """Tones, a chirp and noise bursts at the lengths that exercise every window path."""
    return [ParityClip(name, wave[None], real=False) for name, wave in gates.synthetic_clips().items()]


def real_clips(directory: str | Path, max_samples: int, limit: int = 32) -> list[ParityClip]:
    """Up to `limit` audio files under `directory` (sorted, recursive), resampled, cut at `max_samples`
    (one segment, `hear_edge.signal.segments.segment_samples`: 30 s for the official Task Model)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataFolderError(f"calibration folder {directory} does not exist.")
    clips = []
    for path in sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        try:
            waveform = load_input(path)[:, :max_samples]
        except HearEdgeError as error:
            logger.warning("skipping %s: %s", path, error)
            continue
        if waveform.shape[1] < 1600:
            continue
        clips.append(ParityClip(str(path.relative_to(directory)), waveform, real=True))
        if len(clips) == limit:
            break
    if not clips:
        raise DataFolderError(f"calibration folder {directory} has no readable audio of 0.1 s or more.")
    return clips


def measure_variant(engine: InferenceEngine, clips: list[ParityClip], references) -> dict:
    logit_diffs, cosines, agree, agree_real, disagreements = [], [], [], [], []
    for clip, (ref_logits, ref_acoustic) in zip(clips, references):
        outputs = engine.run(*compute_features(clip.waveform))
        logit_diffs.append(float(np.abs(outputs.logits - ref_logits).max()))
        cosines.append(cosine(outputs.acoustic, ref_acoustic))
        same = int(np.argmax(outputs.logits) == np.argmax(ref_logits))
        agree.append(same)
        if clip.real:
            agree_real.append(same)
        if not same:
            top_two = np.sort(ref_logits)[-2:]
            # how close the reference's own top two were: a flip on a near-tie says little
            disagreements.append({"clip": clip.name, "reference_top1_margin": float(top_two[1] - top_two[0])})
    on_real = bool(agree_real)
    figures = {
        "max_abs_logit_diff": max(logit_diffs),
        "acoustic_cosine_min": min(cosines),
        "top1_agreement": float(np.mean(agree_real if on_real else agree)),
        "agreement_measured_on": "real audio" if on_real else "synthetic audio",
        "clips": len(clips),
        "real_clips": len(agree_real),
        "disagreements": disagreements,
    }
    figures.update(verdict(figures, engine.precision))  # the thresholds live in hear_edge.bundle.gates
    return figures


def check_parity(model, bundle_dir: Path, manifest, clips: list[ParityClip], force: bool):
    """Figures for every exported (format, precision), and the reference outputs of the synthetic
    clips (kept in the manifest so a device without torch can check itself); ParityError on a
    miss unless `force`."""
    references = [reference_outputs(model, clip.waveform) for clip in clips]
    stored = {clip.name: {"logits": [float(x) for x in logits],
                          "acoustic_mean": [float(x) for x in acoustic.mean(axis=0)]}
              for clip, (logits, acoustic) in zip(clips, references) if not clip.real}
    report, failed = {}, []
    for fmt, precision in manifest.variants():
        engine = InferenceEngine(bundle_dir, manifest, fmt, precision, num_threads=1)
        figures = measure_variant(engine, clips, references)
        report[f"{fmt}/{precision}"] = figures
        logger.info("parity %s/%s: max |logit diff| %.2e, acoustic cosine min %.6f, top-1 agreement %.3f (%s)%s",
                    fmt, precision, figures["max_abs_logit_diff"], figures["acoustic_cosine_min"],
                    figures["top1_agreement"], figures["agreement_measured_on"],
                    "" if figures["passed"] else "  FAILED")
        failed += [f"{fmt} {precision} graphs: {failure}" for failure in figures["failures"]]
    if failed and not force:
        raise ParityError("export missed its parity gate: " + "; ".join(failed) +
                          ". Pass force=True (--force) to write the bundle anyway, marked as failed.")
    return report, stored
