"""tflite-runtime as the LiteRT backend: fp32 within 1e-4 of ai-edge-litert; int8 graphs of the export's
recipe computed alike (the shipped bundle within 1 point of ai-edge-litert on kws_heldout, the same top-1
on examples/clips); a per-channel int8 graph, which 2.14 computes wrong, refused by the self-test.

These run where tflite_runtime imports and ai_edge_litert is not installed, on a bundle made
beforehand by `python tests/tflite_fixture.py DIR` (torch and ai-edge-litert), given as
HEAR_EDGE_TFLITE_FIXTURE=DIR. .ci/run does both; everywhere else the module is skipped. Where
HEAR_EDGE_TFLITE_FIXTURE is set, an environment that cannot run them fails instead of skipping.
"""

import importlib.metadata
import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, TINY_CASES, TINY_GOLDEN

FIXTURE = os.environ.get("HEAR_EDGE_TFLITE_FIXTURE")


def _why_not_here() -> str | None:
    if importlib.util.find_spec("ai_edge_litert") is not None:
        return "ai_edge_litert is installed, so the litert backend runs on it rather than on tflite-runtime"
    try:
        import tflite_runtime.interpreter  # noqa: F401
    except ImportError as error:
        return f"tflite-runtime does not import here ({error})"
    return None


_REASON = _why_not_here()
if not FIXTURE:
    pytest.skip("HEAR_EDGE_TFLITE_FIXTURE is not set (.ci/run sets it in a tflite-runtime-only venv)",
                allow_module_level=True)
if _REASON:
    raise RuntimeError(f"HEAR_EDGE_TFLITE_FIXTURE is set but this environment cannot run the tflite-runtime "
                       f"tests: {_REASON}")

from hear_edge import HearEdge, SelfTestError  # noqa: E402
from hear_edge.bundle.manifest import read_manifest  # noqa: E402
from hear_edge.run.classifier import default_bundle_path  # noqa: E402
from hear_edge.runtimes.base import runtime_package  # noqa: E402

BUNDLE = Path(FIXTURE) / "tiny.hearedge"
PER_CHANNEL = Path(FIXTURE) / "tiny-per-channel.hearedge"


def test_the_litert_backend_runs_on_tflite_runtime_here():
    assert runtime_package("litert") == "tflite_runtime"


def test_fp32_graphs_on_tflite_runtime_are_within_1e4_of_ai_edge_litert():
    reference = np.load(Path(FIXTURE) / "ai_edge_litert.npz")
    model = HearEdge.load(BUNDLE, backend="litert", precision="fp32")
    for case in TINY_CASES:
        golden = np.load(TINY_GOLDEN / f"{case}.npz")
        logits = model.classify(golden["wav"].T, 16000).logits
        assert np.abs(logits - reference[f"fp32/{case}"]).max() <= 1e-4, case
        assert np.abs(logits - golden["logits"]).max() <= 1e-3, case  # and the official model's


def test_int8_graphs_pass_their_self_test_and_agree_with_ai_edge_litert():
    reference = np.load(Path(FIXTURE) / "ai_edge_litert.npz")
    model = HearEdge.load(BUNDLE)  # auto: int8, which passed its gate
    assert (model.backend, model.precision) == ("litert", "int8")
    for case in TINY_CASES:
        logits = model.classify(np.load(TINY_GOLDEN / f"{case}.npz")["wav"].T, 16000).logits
        expected = reference[f"int8/{case}"]
        assert np.linalg.norm(logits - expected) <= 0.1 * np.linalg.norm(expected), case


def test_a_per_channel_int8_graph_is_refused_by_the_self_test():
    assert all("ai_edge_litert" in spec.probe["recorded_with"] for spec in read_manifest(PER_CHANNEL).graphs)
    version = re.escape(importlib.metadata.version("tflite-runtime"))
    with pytest.raises(SelfTestError, match=rf"the litert backend on tflite_runtime {version} computes the tflite int8 "
                                            r"acoustic_window graph acoustic_window\.int8\.tflite wrong: .* off by a "
                                            r"relative error of 0\.9\d*, beyond the 0\.1 allowed for int8"):
        HearEdge.load(PER_CHANNEL, backend="litert", precision="int8")
    # Skipped, the graph loads and answers wrong: what the self-test stops.
    reference = np.load(Path(FIXTURE) / "ai_edge_litert.npz")
    model = HearEdge.load(PER_CHANNEL, backend="litert", precision="int8", self_test=False)
    logits = model.classify(np.load(TINY_GOLDEN / "short_1s.npz")["wav"].T, 16000).logits
    expected = reference["int8/short_1s"]
    assert np.linalg.norm(logits - expected) > 0.3 * np.linalg.norm(expected)


def _top1(model, paths):
    return [model.classify(REPO_ROOT / path).top.index for path in paths]


def test_the_shipped_bundle_on_tflite_runtime_matches_ai_edge_litert():
    """Accuracy on kws_heldout within 1 point of ai-edge-litert's, the same top-1 on examples/clips."""
    reference = json.loads((Path(FIXTURE) / "default_bundle.json").read_text())
    model = HearEdge.load(default_bundle_path())
    assert (model.backend, model.precision) == ("litert", "int8")
    heldout = reference["kws_heldout"]
    predicted = _top1(model, heldout["clips"])
    accuracy = float(np.mean(np.equal(predicted, heldout["targets"])))
    assert abs(accuracy - heldout["accuracy"]) <= 0.01, (accuracy, heldout["accuracy"], reference["runtime"])
    assert _top1(model, list(reference["clips"])) == list(reference["clips"].values())
