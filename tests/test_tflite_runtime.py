"""tflite-runtime as the LiteRT backend: fp32 within 1e-4 of ai-edge-litert, int8 refused, auto takes fp32.

These run where tflite_runtime imports and ai_edge_litert is not installed, on a bundle made
beforehand by `python tests/tflite_fixture.py DIR` (torch and ai-edge-litert), given as
HEAR_EDGE_TFLITE_FIXTURE=DIR. .ci/run does both; everywhere else the module is skipped. Where
HEAR_EDGE_TFLITE_FIXTURE is set, an environment that cannot run them fails instead of skipping.
"""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CASES, TINY_GOLDEN

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

from hear_edge import HearEdge  # noqa: E402
from hear_edge.bundle import read_manifest  # noqa: E402
from hear_edge.errors import BackendUnavailableError  # noqa: E402
from hear_edge.runtimes.base import runtime_package, supports_int8  # noqa: E402

BUNDLE = Path(FIXTURE) / "tiny.hearedge"


def test_the_litert_backend_runs_on_tflite_runtime_here():
    assert runtime_package("litert") == "tflite_runtime"
    assert not supports_int8("litert")


def test_fp32_graphs_on_tflite_runtime_are_within_1e4_of_ai_edge_litert():
    reference = np.load(Path(FIXTURE) / "ai_edge_litert.npz")
    model = HearEdge.load(BUNDLE, backend="litert", precision="fp32")
    for case in TINY_CASES:
        golden = np.load(TINY_GOLDEN / f"{case}.npz")
        logits = model.classify(golden["wav"].T, 16000).logits
        assert np.abs(logits - reference[case]).max() <= 1e-4, case
        assert np.abs(logits - golden["logits"]).max() <= 1e-3, case  # and the official model's


def test_int8_graphs_are_refused_on_tflite_runtime():
    assert ("tflite", "int8") in read_manifest(BUNDLE).variants()  # they are there, and still refused
    with pytest.raises(BackendUnavailableError, match=r"int8 graphs are refused on tflite_runtime: "
                                                      r"tflite-runtime's int8 fully-connected kernels"):
        HearEdge.load(BUNDLE, backend="litert", precision="int8")


def test_auto_precision_takes_fp32_on_tflite_runtime():
    assert read_manifest(BUNDLE).parity["results"]["tflite/int8"]["passed"]  # ai-edge-litert would take int8
    model = HearEdge.load(BUNDLE)
    assert (model.backend, model.precision) == ("litert", "fp32")
