"""Make what tests/test_tflite_runtime.py needs, in a venv with hear-edge[export] (torch, ai-edge-litert):

    python tests/tflite_fixture.py DIR

writes, all measured on ai-edge-litert:
- DIR/tiny.hearedge: the tiny golden checkpoint as fp32 and int8 .tflite graphs (the export's recipe);
- DIR/tiny-per-channel.hearedge: its int8 graphs with every weight per channel (ai-edge-quantizer's
  plain dynamic_wi8_afp32), which tflite-runtime 2.14 computes wrong and its self-test must refuse;
- DIR/ai_edge_litert.npz: the fp32 and int8 logits of each tiny golden case;
- DIR/default_bundle.json: the shipped bundle's top-1 on tests/data/kws_heldout and examples/clips.
The test then runs where only tflite-runtime is installed, with HEAR_EDGE_TFLITE_FIXTURE=DIR.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REAL_AUDIO, REPO_ROOT, TINY_CASES, TINY_GOLDEN, TINY_LABELS  # noqa: E402

HELDOUT = REPO_ROOT / "tests" / "data" / "kws_heldout"
CLIPS = REPO_ROOT / "examples" / "clips"


def labelled_clips(folder: Path, labels: list[str]) -> list[tuple[str, int]]:
    """(path relative to the repository, label index) of each clip of a kws folder, in sorted order."""
    from hear_edge.signal.audio import AUDIO_SUFFIXES

    return [(str(p.relative_to(REPO_ROOT)), labels.index(p.parent.name))
            for p in sorted(folder.glob("*/*")) if p.suffix.lower() in AUDIO_SUFFIXES and p.parent.name in labels]


def top1(model, paths) -> list[int]:
    return [model.classify(REPO_ROOT / path).top.index for path in paths]


def per_channel_copy(bundle: Path, out: Path) -> Path:
    """`bundle`'s tflite int8 graphs quantised with every weight per channel (ai-edge-quantizer's plain
    dynamic_wi8_afp32, the recipe before issue 21), with their probes recorded on ai-edge-litert."""
    import shutil
    import tempfile

    from ai_edge_quantizer import quantizer, recipe

    from hear_edge.bundle.manifest import read_manifest, sha256_file
    from hear_edge.bundle.selftest import with_probe

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    manifest = read_manifest(out)
    manifest.graphs = [spec for spec in manifest.graphs if spec.precision == "int8"]
    for spec in manifest.graphs:
        fp32 = out / spec.file.replace(".int8.", ".fp32.")
        with tempfile.TemporaryDirectory() as scratch:
            quantizer.Quantizer(str(fp32), recipe.dynamic_wi8_afp32()).quantize().save(scratch, "q", overwrite=True)
            shutil.move(str(Path(scratch) / "q.tflite"), out / spec.file)
        spec.sha256, spec.bytes = sha256_file(out / spec.file), (out / spec.file).stat().st_size
        with_probe(out, spec, manifest.window_frames, manifest.max_task_frames)
    for path in out.glob("*.fp32.tflite"):
        path.unlink()
    manifest.parity = {}  # measured on other graphs
    manifest.write(out)
    return out


def main(out: str) -> None:
    from hear_edge import HearEdge
    from hear_edge.export import export_bundle
    from hear_edge.run.classifier import default_bundle_path
    from hear_edge.runtimes.base import runtime_package

    if runtime_package("litert") != "ai_edge_litert":
        raise SystemExit("the reference logits need ai-edge-litert: run this where hear-edge[export] is installed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = out / "tiny.hearedge"
    # Not forced: the int8 graphs pass their gate, so precision="auto" takes them.
    export_bundle(TINY_GOLDEN / "state_dict.pt", bundle, labels=TINY_LABELS, formats=("tflite",),
                  calibration=REAL_AUDIO, overwrite=True)
    per_channel = per_channel_copy(bundle, out / "tiny-per-channel.hearedge")
    logits = {}
    for precision in ("fp32", "int8"):
        model = HearEdge.load(bundle, backend="litert", precision=precision)
        for case in TINY_CASES:
            logits[f"{precision}/{case}"] = model.classify(np.load(TINY_GOLDEN / f"{case}.npz")["wav"].T, 16000).logits
    np.savez(out / "ai_edge_litert.npz", **logits)

    model = HearEdge.load(default_bundle_path(), backend="litert", precision="int8")
    heldout = labelled_clips(HELDOUT, model.labels)
    clips = sorted(str(p.relative_to(REPO_ROOT)) for p in CLIPS.glob("*.wav"))
    predicted = top1(model, [path for path, _ in heldout])
    reference = {"runtime": model.engine.task_graph.runtime,
                 "kws_heldout": {"clips": [path for path, _ in heldout], "targets": [t for _, t in heldout],
                                 "top1": predicted,
                                 "accuracy": float(np.mean(np.equal(predicted, [t for _, t in heldout])))},
                 "clips": dict(zip(clips, top1(model, clips)))}
    (out / "default_bundle.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {bundle}, {per_channel}, ai_edge_litert.npz and default_bundle.json (kws_heldout "
          f"{100 * reference['kws_heldout']['accuracy']:.1f} % on {reference['runtime']}) in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
