"""Fine-tuning cost per clip: fp32 vs bf16 autocast, with and without the teacher loss, side by side.

Each round runs one training step (forward, loss, backward, AdamW) of every variant in turn, on the
full-size HEAR model (official sizes, 12 classes) and the same batch of 1 s clips, so drift in a
shared machine's speed hits every variant alike. The teacher's frames are cached before the rounds
(Whisper tiny.en with the `teacher` extra, else a stand-in of the same width): a step only reads them.
The teacher pass itself (hash, log-mel, encoder, float16 write; once per clip, before training) is timed apart.

    python3 benchmarks/train_step.py [--batch 32] [--rounds 4] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # read by OpenMP when torch loads: set it first (the CLI's default is PASSIVE)
    _wait = sys.argv[sys.argv.index("--wait-policy") + 1] if "--wait-policy" in sys.argv else "PASSIVE"
    os.environ["OMP_WAIT_POLICY"] = _wait.upper()

import numpy as np
import torch
import torch.nn.functional as F

from hear_edge.host import host_cpu, cpu_model_and_flags
from hear_edge.reference.config import HearConfig
from hear_edge.reference.model import HEAR
from hear_edge.training.finetune import _TeacherRegulariser
from hear_edge.training.toolkit import LabelledAudio, autocast, batch_logits


class _StandIn:
    teacher_id, width = "bench-stand-in", 384

    def encode(self, clips):
        return [np.zeros(((len(c) // 160 + 1) // 2, 384), np.float32) + 0.1 for c in clips]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wait-policy", default="passive", choices=["passive", "active"],
                        help="OMP_WAIT_POLICY of torch's threads (default passive, as hear-edge finetune sets it)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(args.batch)]
    data = LabelledAudio([str(i) for i in range(12)], clips, [i % 12 for i in range(args.batch)],
                         [f"{i}.wav" for i in range(args.batch)])
    # The teacher's pass runs in its own process, as `hear-edge teacher-frames` does: its runtime
    # in this one would change how torch's threads wait.
    teacher = _StandIn()
    cache = Path(tempfile.mkdtemp(prefix="hear-edge-bench-"))
    variants = {}
    for precision in ("fp32", "bf16"):
        for with_teacher in (False, True):
            torch.manual_seed(0)
            config = HearConfig()
            config.classification_decoder.num_classes = 12
            model = HEAR(config).train()
            params = list(model.parameters())
            regulariser = None
            if with_teacher:
                regulariser = _TeacherRegulariser(model, teacher, -1, "cosine", data, cache, False, "cpu")
                params += list(regulariser.projection.parameters())
            optimizer = torch.optim.AdamW(params, lr=1e-4)
            name = f"{precision}{' + teacher' if with_teacher else ''}"
            variants[name] = (model, regulariser, optimizer, precision, [], [])
    tensors = [torch.from_numpy(c) for c in clips]
    targets = torch.tensor(data.targets)
    for round_index in range(args.rounds + 1):
        for name, (model, regulariser, optimizer, precision, cpu_ms, wall_ms) in variants.items():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            with autocast(torch.device("cpu"), precision):
                loss = F.cross_entropy(batch_logits(model, tensors).float(), targets)
                if regulariser is not None:
                    loss = loss + regulariser.loss(range(len(clips)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if round_index:  # the first round warms up
                cpu_ms.append(1000 * (time.process_time() - cpu0) / len(clips))
                wall_ms.append(1000 * (time.perf_counter() - wall0) / len(clips))
    model_name, _ = cpu_model_and_flags()
    results = {name: {"cpu_ms_per_clip": round(float(np.median(v[4])), 2),
                      "wall_ms_per_clip": round(float(np.median(v[5])), 2)} for name, v in variants.items()}
    base = results["fp32"]["wall_ms_per_clip"]
    print(f"host: {model_name}, {platform.machine()}, flags {host_cpu()['flags'] + [f for f in ('amx_bf16', 'avx512_bf16') if f in cpu_model_and_flags()[1]]}, {args.threads} threads, "
          f"batch {args.batch} x 1 s, median of {args.rounds} round-robin rounds, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY')}")
    print("| variant | wall ms/clip/step | CPU ms/clip/step | wall vs fp32 |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['wall_ms_per_clip']} | {r['cpu_ms_per_clip']} | {r['wall_ms_per_clip'] / base:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "host": {"model": model_name, "machine": platform.machine(), "flags": host_cpu()["flags"],
                     "bf16": [f for f in ("amx_bf16", "avx512_bf16") if f in cpu_model_and_flags()[1]]},
            "threads": args.threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "batch": args.batch,
            "rounds": args.rounds, "variants": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
