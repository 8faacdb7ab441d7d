"""The compat export for old TFLite runtimes (`export_bundle(tflite_compat="2.5")`, hear_edge.export.compat).

The tiny golden checkpoint is exported once with tflite_compat (about 90 s: 16 bucket files); where
HEAR_EDGE_COMPAT_FIXTURE=DIR is set, into DIR, and reused from there. Its graphs are checked here on
ai-edge-litert through hear-edge, and on old tflite-runtime releases through tests/compat_harness.py
run by the Pythons listed in HEAR_EDGE_OLD_TFLITE (os.pathsep-separated interpreters, each with numpy
and one tflite-runtime; .ci/run makes them): logits within 1e-4 of onnxruntime fp32 on the same
features. Without HEAR_EDGE_OLD_TFLITE those tests skip, saying so; a listed interpreter that cannot
run the harness fails.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")

from conftest import TINY_CASES, TINY_GOLDEN, TINY_LABELS  # noqa: E402
from hear_edge import HearEdge  # noqa: E402
from hear_edge.bundle.manifest import read_manifest  # noqa: E402
from hear_edge.errors import BundleError, ConfigError  # noqa: E402
from hear_edge.export import export_bundle  # noqa: E402
from hear_edge.export.compat import (COMPAT_OPS, ErfGelu, check_compat_ops, erfc_nonnegative, graph_ops, parse_compat)  # noqa: E402
from hear_edge.run.inference import InferenceEngine, spectrum_pairs  # noqa: E402
from hear_edge.signal.frontend import compute_features  # noqa: E402

HERE = Path(__file__).resolve().parent
ONNX_REFERENCE = HERE / "data" / "tiny-golden.hearedge"  # the same checkpoint's fp32 ONNX graphs
OLD_PYTHONS = [p for p in os.environ.get("HEAR_EDGE_OLD_TFLITE", "").split(os.pathsep) if p]
# Frames of the harness's cases: one window each (through both graphs) hits every window bucket
# and the task buckets up to 350; longer ones (acoustic from onnxruntime) hit the other task buckets.
WINDOW_CASE_FRAMES = (37, 100, 140, 190, 250, 300)
TASK_CASE_FRAMES = (420, 700, 900, 1180, 1500)


@pytest.fixture(scope="module")
def compat_bundle(tmp_path_factory):
    folder = Path(os.environ.get("HEAR_EDGE_COMPAT_FIXTURE") or tmp_path_factory.mktemp("compat"))
    bundle = folder / "tiny-compat.hearedge"
    if not (bundle / "manifest.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        export_bundle(TINY_GOLDEN / "state_dict.pt", bundle, labels=TINY_LABELS, formats=("tflite",),
                      precisions=("fp32",), tflite_compat="2.5", overwrite=True)
    return bundle


def test_erfc_fit_is_within_1_2e7_relative():
    z = torch.linspace(0, 9, 900_001, dtype=torch.float64)
    assert ((erfc_nonnegative(z) - torch.erfc(z)) / torch.erfc(z)).abs().max().item() < 1.2e-7


def test_erf_gelu_is_the_exact_gelu_to_fp32_precision():
    x = torch.linspace(-12, 12, 2_400_001, dtype=torch.float32)
    exact = 0.5 * x.double() * torch.erfc(-x.double() / math.sqrt(2))
    ours = (ErfGelu()(x).double() - exact).abs()
    torch_own = (torch.nn.functional.gelu(x).double() - exact).abs().max().item()  # 1.2e-6: fp32 rounding
    assert ours.max().item() < 4e-7 and ours.max().item() < torch_own
    negative = x < -1  # the tail keeps its relative precision: no 1 + erf cancellation
    assert (ours[negative] / exact[negative].abs()).max().item() < 1e-4
    tanh_form = (torch.nn.functional.gelu(x, approximate="tanh").double() - exact).abs().max().item()
    assert ours.max().item() < tanh_form / 100


def test_tflite_compat_takes_versions_from_2_5():
    assert parse_compat("2.5") == "2.5" and parse_compat("2.08") == "2.8"
    for bad in ("2.4", "3.0", 2.5, "2.x"):
        with pytest.raises(ConfigError, match=r"tflite_compat must be the oldest tflite-runtime"):
            parse_compat(bad)


def test_tflite_compat_needs_tflite_fp32(tmp_path):
    with pytest.raises(ConfigError, match=r"writes fp32 TFLite graphs, but formats=\('onnx',\)"):
        export_bundle(TINY_GOLDEN / "state_dict.pt", tmp_path / "x.hearedge", labels=TINY_LABELS,
                      formats=("onnx",), tflite_compat="2.5")


def test_cli_export_passes_tflite_compat_on(tmp_path, capsys):
    from hear_edge.cli import main

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(TINY_LABELS) + "\n")
    status = main(["export", str(TINY_GOLDEN / "state_dict.pt"), "-o", str(tmp_path / "x.hearedge"), "--labels",
                   str(labels), "--tflite-compat", "2.4"])
    assert status == 2 and "tflite_compat must be the oldest tflite-runtime" in capsys.readouterr().err


@pytest.mark.slow
def test_compat_files_have_one_signature_and_only_2_5_operators(compat_bundle):
    from ai_edge_litert.interpreter import Interpreter

    manifest = read_manifest(compat_bundle)
    assert manifest.variants() == [("tflite", "fp32")]
    assert manifest.provenance["tflite_compat"]["runtime"] == "tflite-runtime >= 2.5"
    for spec in manifest.graphs:
        assert [entry["file"] for entry in spec.bucket_files] == \
            [f"{spec.role}.fp32.b{frames}.tflite" for frames in spec.frame_buckets]
        for entry in spec.bucket_files:
            path = compat_bundle / entry["file"]
            assert len(Interpreter(model_path=str(path)).get_signature_list()) == 1
            ops = dict(graph_ops(path))
            assert "GELU" not in ops and all(version <= COMPAT_OPS[op] for op, version in ops.items())
    assert {"ABS", "EXP", "SELECT"} <= {op for op, _ in graph_ops(compat_bundle / "task.fp32.b50.tflite")}


def test_a_graph_with_an_operator_2_5_lacks_is_refused(tmp_path):
    import litert_torch

    path = tmp_path / "gelu.tflite"
    litert_torch.convert(torch.nn.GELU().eval(), (torch.randn(1, 4),)).export(str(path))
    with pytest.raises(ConfigError, match=r"gelu.tflite uses GELU v\d, outside the operators known to run on "
                                          r"tflite-runtime 2.5"):
        check_compat_ops(path)


@pytest.mark.slow
def test_compat_bundle_on_ai_edge_litert_is_within_1e4_of_onnxruntime(compat_bundle):
    compat = HearEdge.load(compat_bundle, backend="litert", precision="fp32")
    reference = HearEdge.load(ONNX_REFERENCE, backend="onnx", precision="fp32")
    engine = InferenceEngine(compat_bundle, read_manifest(compat_bundle), "tflite", "fp32")
    engine.run(*compute_features(np.zeros(16000, np.float32) + 0.01 * np.sin(np.arange(16000)), 16000))
    # A bucket's file opens when a clip first needs it: a 1 s clip loads one of each graph's files.
    assert sorted(engine.window_graph._sessions) == ["window_50"] and sorted(engine.task_graph._sessions) == ["task_50"]
    for case in TINY_CASES:
        wav = np.load(TINY_GOLDEN / f"{case}.npz")["wav"].T
        assert np.abs(compat.classify(wav, 16000).logits - reference.classify(wav, 16000).logits).max() <= 1e-4, case


@pytest.mark.slow
def test_bucket_files_are_hashed_and_described(compat_bundle, tmp_path):
    copy = tmp_path / "copy.hearedge"
    shutil.copytree(compat_bundle, copy)
    with open(copy / "task.fp32.b500.tflite", "r+b") as handle:
        handle.seek(-8, os.SEEK_END)
        handle.write(b"\x00" * 8)
    with pytest.raises(BundleError, match=r"task.fp32.b500.tflite fails its hash"):
        read_manifest(copy)
    data = json.loads((compat_bundle / "manifest.json").read_text())
    data["graphs"][1]["bucket_files"] = data["graphs"][1]["bucket_files"][:-1]
    from hear_edge.bundle.manifest_check import validate_manifest
    with pytest.raises(BundleError, match=r"graphs\[1\].bucket_files must be a list of 10 files, one per frame"):
        validate_manifest(data)


def _harness_inputs(tmp_path: Path) -> tuple[Path, dict]:
    """Features of real speech cut to each case's length, and onnxruntime fp32's logits on them."""
    engine = InferenceEngine(ONNX_REFERENCE, read_manifest(ONNX_REFERENCE), "onnx", "fp32")
    wavs = [np.load(TINY_GOLDEN / f"{case}.npz")["wav"] for case in TINY_CASES]
    mono = np.concatenate([w.mean(axis=0) for w in wavs] * 2).astype(np.float32)  # (channels, samples) each
    log_mel, log_power = compute_features(mono[:16000 * 30], 16000)
    inputs, expected = {}, {}
    for frames in WINDOW_CASE_FRAMES + TASK_CASE_FRAMES:
        case = f"frames_{frames}"
        acoustic = engine.acoustic(log_mel[:, :2 * frames])
        logits, _ = engine.task(acoustic, log_power[:, :2 * frames])
        inputs[f"{case}.pairs"] = spectrum_pairs(log_power, frames)
        if frames in WINDOW_CASE_FRAMES:
            inputs[f"{case}.log_mel"] = log_mel[:, :2 * frames]
        else:
            inputs[f"{case}.acoustic"] = acoustic
        expected[case] = logits
    path = tmp_path / "inputs.npz"
    np.savez(path, **inputs)
    return path, expected


@pytest.mark.slow
@pytest.mark.parametrize("python", OLD_PYTHONS or [None], ids=lambda p: Path(p).parent.parent.name if p else "none")
def test_compat_graphs_on_old_tflite_runtime_are_within_1e4_of_onnxruntime(compat_bundle, tmp_path, python):
    if python is None:
        pytest.skip("HEAR_EDGE_OLD_TFLITE lists no interpreter with an old tflite-runtime (.ci/run makes them)")
    inputs, expected = _harness_inputs(tmp_path)
    outputs = tmp_path / "outputs.npz"
    done = subprocess.run([python, str(HERE / "compat_harness.py"), str(compat_bundle), str(inputs), str(outputs)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = np.load(outputs)
    print(done.stdout.strip())
    for case, logits in expected.items():
        assert np.abs(results[f"{case}.logits"] - logits).max() <= 1e-4, (str(results["tflite_runtime_version"]), case)
