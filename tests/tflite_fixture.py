"""Make what tests/test_tflite_runtime.py needs, in a venv with hear-edge[export] (torch, ai-edge-litert):

    python tests/tflite_fixture.py DIR

writes DIR/tiny.hearedge (the tiny golden checkpoint as fp32 and int8 .tflite graphs) and
DIR/ai_edge_litert.npz (ai-edge-litert's fp32 logits for each tiny golden case). The test then runs
where only tflite-runtime is installed, with HEAR_EDGE_TFLITE_FIXTURE=DIR.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REAL_AUDIO, TINY_CASES, TINY_GOLDEN, TINY_LABELS  # noqa: E402


def main(out: str) -> None:
    from hear_edge import HearEdge
    from hear_edge.export import export_bundle
    from hear_edge.runtimes.base import runtime_package

    if runtime_package("litert") != "ai_edge_litert":
        raise SystemExit("the reference logits need ai-edge-litert: run this where hear-edge[export] is installed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = out / "tiny.hearedge"
    # Not forced: the int8 graphs pass their gate, so precision="auto" would take them on ai-edge-litert.
    export_bundle(TINY_GOLDEN / "state_dict.pt", bundle, labels=TINY_LABELS, formats=("tflite",),
                  calibration=REAL_AUDIO, overwrite=True)
    model = HearEdge.load(bundle, backend="litert", precision="fp32")
    logits = {case: model.classify(np.load(TINY_GOLDEN / f"{case}.npz")["wav"].T, 16000).logits
              for case in TINY_CASES}
    np.savez(out / "ai_edge_litert.npz", **logits)
    print(f"wrote {bundle} and {out / 'ai_edge_litert.npz'}")


if __name__ == "__main__":
    main(sys.argv[1])
