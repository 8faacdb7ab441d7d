"""The parity gates (hear_edge.bundle.gates): one set of thresholds and one verdict for the export and the bench."""

import numpy as np
import pytest

from hear_edge.bundle import gates
from hear_edge.tools.bench import _parity


def _figures(diff=0.0, cos=1.0, agree=1.0):
    return {"max_abs_logit_diff": diff, "acoustic_cosine_min": cos, "top1_agreement": agree}


def test_fp32_is_judged_by_the_logit_bound_only():
    assert gates.verdict(_figures(diff=gates.FP32_MAX_ABS_LOGIT_DIFF, cos=0.0, agree=0.0), "fp32")["passed"]
    missed = gates.verdict(_figures(diff=2 * gates.FP32_MAX_ABS_LOGIT_DIFF), "fp32")
    assert not missed["passed"] and missed["failures"][0].startswith("max_abs_logit_diff = 0.002, gate <= 0.001")
    assert missed["gates"] == {"max_abs_logit_diff": "<= 0.001"}


@pytest.mark.parametrize("cos, agree, passed", [(0.99, 0.99, True), (0.989, 1.0, False), (1.0, 0.98, False)])
def test_int8_is_judged_by_cosine_and_agreement(cos, agree, passed):
    judged = gates.verdict(_figures(diff=5.0, cos=cos, agree=agree), "int8")
    assert judged["passed"] is passed and len(judged["failures"]) == (0 if passed else 1)


def test_cosine():
    assert gates.cosine([1, 0], [0, 2]) == 0.0
    assert gates.cosine(np.ones((3, 4)), 2 * np.ones(12)) == pytest.approx(1.0)
    assert gates.cosine([1, 1], [-1, -1]) == pytest.approx(-1.0)


def _outputs(logits, mean):
    return {"clip": {"logits": logits, "acoustic_mean": mean}}


def test_the_bench_uses_the_gates_thresholds(monkeypatch):
    reference = _outputs([1.0, 0.0], [1.0, 2.0])
    row = _outputs([1.0005, 0.0], [1.0, 2.0])
    assert _parity(row, reference, "fp32")["passed"]
    monkeypatch.setattr(gates, "FP32_MAX_ABS_LOGIT_DIFF", 1e-4)
    tightened = _parity(row, reference, "fp32")
    assert not tightened["passed"] and "gate <= 0.0001" in tightened["failures"][0]
    # int8: a mean frame vector that turned (cosine 0.976) fails the cosine gate the export uses.
    assert _parity(_outputs([1.0, 0.0], [1.0, 2.0]), reference, "int8")["passed"]
    turned = _outputs([1.0, 0.0], [1.0, 4.0])
    assert not _parity(turned, reference, "int8")["passed"]
    flipped = _outputs([0.0, 1.0], [1.0, 2.0])
    assert not _parity(flipped, reference, "int8")["passed"]
