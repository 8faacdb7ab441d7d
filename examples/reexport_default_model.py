"""Re-export the default bundle with this hear-edge's export (recipes, graphs, manifest), same model.

The fp32 checkpoint of the default model is not committed: its weights are read back from the
shipped bundle's int8 ONNX graphs (`examples/recover_checkpoint.py`), then exported again as ONNX
int8 and TFLite int8 with the bundle's name, version, description, labels, stream settings
(clip length, context, hop, recommended threshold and smoothing, background labels) and model card, gated on the
same 52 real recordings (tests/data/real, tests/data/real_voice) and 6 synthetic clips.

    python3 examples/reexport_default_model.py            # replaces hear_edge/assets/hear-kws12-demo.hearedge
    python3 examples/reexport_default_model.py --checkpoint kws12-0.4.pt   # from the fp32 checkpoint itself

Re-quantising the recovered weights gives the same ONNX int8 files (the int8 values are read back
exactly), but not the same TFLite ones (their recipe quantises per tensor what ONNX did per channel:
twice rounded). With `--checkpoint`, the fp32 file the bundle was exported from (its sha256 must be
the manifest's `provenance.checkpoint_sha256`), nothing is recovered and every graph comes from the
true weights. The script says which files changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO / "hear_edge" / "assets" / "hear-kws12-demo.hearedge"
CALIBRATION = ("real", "real_voice")  # under tests/data: the clips the shipped bundle was gated on


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="the bundle to re-export (default: "
                                                                             "the shipped one)")
    parser.add_argument("--out", type=Path, help="where to write (default: replace --bundle)")
    parser.add_argument("--work", type=Path, help="keep the recovered checkpoint here (default: a temporary folder)")
    parser.add_argument("--checkpoint", type=Path, help="the fp32 checkpoint the bundle was exported from, instead "
                                                        "of weights recovered from its int8 graphs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.path.insert(0, str(REPO / "examples"))

    from recover_checkpoint import recover
    import torch

    from hear_edge.bundle.manifest import read_manifest, sha256_file
    from hear_edge.export import export_bundle
    from hear_edge.reference.config import HearConfig

    started = time.perf_counter()
    source = args.bundle.resolve()
    out = (args.out or source).resolve()
    old = read_manifest(source)
    with tempfile.TemporaryDirectory() as scratch:
        if args.checkpoint is not None:
            expected = old.provenance.get("checkpoint_sha256")
            if sha256_file(args.checkpoint) != expected:
                parser.error(f"{args.checkpoint} is not the checkpoint {source.name} was exported from (its sha256 "
                             f"differs from the manifest's {expected}); leave --checkpoint out to recover the weights "
                             f"from the bundle's int8 graphs.")
            checkpoint, config = args.checkpoint, HearConfig.from_dict(old.provenance["config"])
        else:
            state, config = recover(source)
            work = args.work or Path(scratch)  # only the recovered checkpoint needs a folder
            work.mkdir(parents=True, exist_ok=True)
            checkpoint = work / f"{old.model_name}-{old.model_version}.pt"
            torch.save(state, checkpoint)
        calibration = Path(scratch) / "calibration"
        for name in CALIBRATION:
            shutil.copytree(REPO / "tests" / "data" / name, calibration / name)
        streaming = old.streaming
        staged = out.with_name(f".{out.name}.reexport")
        export_bundle(checkpoint, staged, config=config.to_dict(), labels=old.labels,
                      formats=("onnx", "tflite"), precisions=("int8",), calibration=calibration,
                      name=old.model_name, version=old.model_version, description=old.description,
                      overwrite=True, clip_seconds=streaming.get("clip_seconds"),
                      stream_context_seconds=streaming.get("context_seconds"),
                      stream_hop_seconds=streaming.get("hop_seconds"),
                      stream_score_threshold=streaming.get("score_threshold"),
                      stream_smoothing_seconds=streaming.get("smoothing_seconds"),
                      background_labels=streaming.get("background_labels"))
    card = source / "MODEL_CARD.md"
    if card.is_file():
        shutil.copy2(card, staged / card.name)
    new = read_manifest(staged)
    for spec in new.graphs:
        before = old.graph(spec.role, spec.format, spec.precision)
        same = before is not None and before.sha256 == spec.sha256
        print(f"{spec.file}: {spec.bytes:,} bytes, {'unchanged' if same else 'changed'}")
    print(json.dumps({variant: {k: r[k] for k in ("top1_agreement", "acoustic_cosine_min", "max_abs_logit_diff",
                                                   "passed")} for variant, r in new.parity["results"].items()},
                     indent=1))
    if out.exists():
        shutil.rmtree(out)
    staged.rename(out)
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({total / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
