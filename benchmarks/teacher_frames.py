"""What the teacher's frames look like on real speech, which decides the teacher loss's form.

Whisper tiny.en's encoder frames (the `teacher` extra) of the repository's natural and real-voice
clips: what the encoder costs (log-mel and int8 encoder, one clip at a time), how much each frame's norm varies, how their variance spreads over the 384 dimensions, and
what a constant prediction (the mean frame) already scores under each loss.

    python3 benchmarks/teacher_frames.py [--json benchmarks/teacher-frames.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hear_edge.host import cpu_model_and_flags, host_cpu
from hear_edge.signal.audio import load_input
from hear_edge.training.teacher import load_teacher

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    files = sorted(p for folder in ("kws_heldout_natural", "real_voice") for p in (DATA / folder).rglob("*")
                   if p.suffix in (".wav", ".flac"))
    teacher = load_teacher("whisper-tiny.en")
    clips = [load_input(f).mean(axis=0).astype(np.float32) for f in files]
    teacher.encode(clips[:1])  # loads the model
    cpu0, wall0 = time.process_time(), time.perf_counter()
    encoded = teacher.encode(clips)
    seconds = sum(len(c) for c in clips) / 16000
    cost = {"cpu_ms_per_audio_second": round(1000 * (time.process_time() - cpu0) / seconds, 2),
            "wall_ms_per_audio_second": round(1000 * (time.perf_counter() - wall0) / seconds, 2)}
    frames = np.concatenate(encoded)
    mean, variance = frames.mean(0), frames.var(0)
    norms = np.linalg.norm(frames, axis=1)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(frames), 5000), rng.integers(0, len(frames), 5000)
    ranked = np.sort(variance)[::-1]
    stats = {
        "teacher": teacher.teacher_id, "clips": len(files), "frames": int(len(frames)),
        "host": {"model": cpu_model_and_flags()[0], "flags": host_cpu()["flags"]}, "encode": cost,
        "frame_norm_p5_p50_p95": [round(float(v), 2) for v in np.percentile(norms, [5, 50, 95])],
        "variance_share_top_1_3_10_dims": [round(float(ranked[:k].sum() / ranked.sum()), 3) for k in (1, 3, 10)],
        "cosine_random_frame_pairs": round(float(_cosine(frames[i], frames[j]).mean()), 3),
        "cosine_loss_of_the_mean_frame": round(float((1 - _cosine(np.broadcast_to(mean, frames.shape), frames)).mean()), 3),
        "mse_loss_of_the_mean_frame": round(float(variance.sum() / np.sqrt(frames.shape[1])), 2),
    }
    for key, value in stats.items():
        print(f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
