"""Variable-length acoustic windows: exact against the static masked window, old bundles still run."""

import json
import shutil

import numpy as np
import pytest

from conftest import REPO_ROOT, TINY_CASES, TINY_GOLDEN
from hear_edge import HearEdge
from hear_edge.bundle.manifest import read_manifest
from hear_edge.run.inference import InferenceEngine
from hear_edge.signal.frontend import compute_features

OLD_BUNDLE = REPO_ROOT / "tests" / "data" / "tiny-golden-schema1.hearedge"  # a static 300-frame window
EXACT = 1e-5
LENGTHS = [2, 3, 39, 50, 51, 100, 149, 150, 151, 250, 299, 300]


@pytest.fixture(scope="module")
def static_window():
    """The reference model's own masked window, padded to 300 frames as the static graph ran it."""
    torch = pytest.importorskip("torch")
    from hear_edge.reference.model import load_checkpoint

    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")

    def run(log_mel: np.ndarray, valid: int) -> np.ndarray:
        padded = np.zeros((1, 128, 600), np.float32)
        padded[0, :, :2 * valid] = log_mel[:, :2 * valid]
        with torch.no_grad():
            out = model.acoustic_model.encode_window(torch.from_numpy(padded), torch.tensor([valid]))
        return out[0, :valid].numpy()

    return run


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_variable_window_equals_the_static_masked_window(tiny_bundle, static_window, fmt):
    engine = InferenceEngine(tiny_bundle, read_manifest(tiny_bundle), fmt, "fp32")
    rng = np.random.default_rng(7)
    golden = compute_features(np.load(TINY_GOLDEN / "clip_10s.npz")["wav"])[0]
    for valid in LENGTHS:
        for log_mel in (rng.standard_normal((128, 600)).astype(np.float32), golden[:, 100:700]):
            got = engine.encode_window(log_mel, 0, valid)
            assert got.shape == (valid, 32)
            np.testing.assert_allclose(got, static_window(log_mel, valid), atol=EXACT, rtol=0)


def test_onnx_window_has_a_free_frame_axis_and_tflite_one_signature_per_bucket(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    onnx_window = manifest.graph("acoustic_window", "onnx", "fp32")
    assert onnx_window.input_names == ["log_mel"] and onnx_window.frame_buckets is None
    assert isinstance(onnx_window.inputs[0].shape[2], str)
    tflite_window = manifest.graph("acoustic_window", "tflite", "fp32")
    assert tflite_window.input_names == ["log_mel", "valid_frames"]
    assert tflite_window.frame_buckets == [50, 100, 150, 200, 250, 300]
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(tiny_bundle / tflite_window.file)).get_signature_list()
    assert sorted(signatures) == sorted(f"window_{b}" for b in tflite_window.frame_buckets)


def test_int8_graphs_declare_only_the_opsets_they_use(tiny_bundle):
    """onnxruntime 1.17 refuses a declared opset no node uses. Beside plain ONNX, the int8 window graph uses
    one onnxruntime op (its fused MatMulIntegerToFloat, for the attention's products with a table), declared."""
    onnx = pytest.importorskip("onnx")
    for spec in read_manifest(tiny_bundle).graphs:
        if spec.format == "onnx":
            model = onnx.load(str(tiny_bundle / spec.file))
            used = {n.domain or "" for n in model.graph.node}
            declared = {o.domain or "" for o in model.opset_import}
            assert declared - {"ai.onnx"} == used - {"ai.onnx"} | {""}, spec.file
            assert {n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")} \
                <= ({"MatMulIntegerToFloat"} if spec.role == "acoustic_window" and spec.precision == "int8" else set()), \
                spec.file


def test_int8_weights_are_signed_and_the_conv_stays_float(tiny_bundle):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto

    graph = onnx.load(str(tiny_bundle / "acoustic_window.int8.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "Conv" in ops and "ConvInteger" not in ops and "MatMulInteger" in ops
    quantized = [t for t in graph.initializer if t.name.endswith("_quantized")]
    assert quantized and all(t.data_type == TensorProto.INT8 for t in quantized)
    manifest = read_manifest(tiny_bundle)
    assert manifest.provenance["int8"]["gated_on_host"]["machine"]


@pytest.mark.parametrize("case", TINY_CASES)
def test_a_schema_1_bundle_with_a_static_window_still_loads_and_runs(case):
    manifest = read_manifest(OLD_BUNDLE)
    assert manifest.schema_version == 1
    assert manifest.graph("acoustic_window", "onnx", "fp32").inputs[0].shape == [1, 128, 600]
    model = HearEdge.load(OLD_BUNDLE, backend="onnx", precision="fp32")
    golden = np.load(TINY_GOLDEN / f"{case}.npz")
    result = model.classify(golden["wav"].T, 16000, max_results=None)
    np.testing.assert_allclose(result.logits, golden["logits"], atol=1e-3, rtol=0)
    assert model.manifest.stream_defaults == {"context_seconds": 6.0, "hop_seconds": 1.0}


def test_new_and_old_bundles_agree(tiny_bundle):
    new = HearEdge.load(tiny_bundle, backend="onnx", precision="fp32")
    old = HearEdge.load(OLD_BUNDLE, backend="onnx", precision="fp32")
    for case in TINY_CASES:
        wav = np.load(TINY_GOLDEN / f"{case}.npz")["wav"].T
        np.testing.assert_allclose(new.classify(wav, 16000).logits, old.classify(wav, 16000).logits,
                                   atol=EXACT, rtol=0)


def test_stream_defaults_come_from_the_bundle(tiny_bundle, tmp_path):
    copy = tmp_path / "kws.hearedge"
    shutil.copytree(tiny_bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    assert data["streaming"] == {"clip_seconds": None, "context_seconds": 6.0, "hop_seconds": 1.0,
                                 "background_labels": []}  # the tiny labels have no _unknown_-style name
    data["streaming"] = {"clip_seconds": 1.0, "context_seconds": 1.0, "hop_seconds": 0.25}
    (copy / "manifest.json").write_text(json.dumps(data))
    for checksum in copy.glob("manifest.json.*"):  # the edit is deliberate: refresh the checksum if any
        import hashlib

        checksum.write_text(hashlib.sha256((copy / "manifest.json").read_bytes()).hexdigest() + "\n")
    stream = HearEdge.load(copy, backend="onnx").create_stream()
    assert (stream.context_seconds, stream.hop_seconds) == (1.0, 0.25)
    explicit = HearEdge.load(copy, backend="onnx").create_stream(hop_seconds=0.5, context_seconds=2.0)
    assert (explicit.context_seconds, explicit.hop_seconds) == (2.0, 0.5)


def test_the_shipped_model_streams_with_its_training_clip_length():
    model = HearEdge.load()
    assert model.manifest.streaming["clip_seconds"] == 1.0
    stream = model.create_stream()
    assert (stream.context_seconds, stream.hop_seconds) == (1.0, 0.25)


def test_export_reads_the_training_clip_length_that_finetune_writes(tmp_path):
    pytest.importorskip("torch")
    from hear_edge.bundle.manifest import stream_settings

    assert stream_settings(1.0, 6.0) == {"clip_seconds": 1.0, "context_seconds": 1.0, "hop_seconds": 0.25}
    assert stream_settings(10.0, 6.0) == {"clip_seconds": 10.0, "context_seconds": 6.0, "hop_seconds": 1.0}
    assert stream_settings(None, 6.0)["context_seconds"] == 6.0
    from hear_edge.export.api import _streaming
    from hear_edge.reference.model import load_checkpoint

    checkpoint = tmp_path / "tuned.pt"
    shutil.copy(TINY_GOLDEN / "state_dict.pt", checkpoint)
    checkpoint.with_suffix(".training.json").write_text(json.dumps({"clip_seconds": 2.0}))
    model = load_checkpoint(checkpoint)
    assert _streaming(model, checkpoint, None, None, None) == {"clip_seconds": 2.0, "context_seconds": 2.0,
                                                               "hop_seconds": 0.5}
    from hear_edge.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="must not exceed context_seconds"):
        _streaming(model, checkpoint, None, 1.0, 2.0)


def test_a_bad_training_clip_length_is_a_config_error(tmp_path):
    pytest.importorskip("torch")
    from hear_edge.errors import ConfigError
    from hear_edge.export.api import _streaming
    from hear_edge.reference.model import load_checkpoint

    checkpoint = tmp_path / "tuned.pt"
    shutil.copy(TINY_GOLDEN / "state_dict.pt", checkpoint)
    model = load_checkpoint(checkpoint)
    checkpoint.with_suffix(".training.json").write_text("{broken")
    with pytest.raises(ConfigError, match=r"tuned\.training\.json is not the JSON object finetune writes"):
        _streaming(model, checkpoint, None, None, None)
    checkpoint.with_suffix(".training.json").write_text(json.dumps({"clip_seconds": "1"}))
    with pytest.raises(ConfigError, match=r"clip_seconds must be the training clip length in seconds .*got '1'"):
        _streaming(model, checkpoint, None, None, None)


@pytest.mark.parametrize("layout", ["frame-major", "bin-major"])
def test_spectrum_pairs_put_each_frames_two_spectra_side_by_side_bin_by_bin(layout):
    from hear_edge.run.inference import spectrum_pairs

    mel_frames, bins = 101, 513
    by_frame = np.random.default_rng(4).standard_normal((mel_frames, bins)).astype(np.float32)
    log_power = by_frame.T if layout == "frame-major" else np.ascontiguousarray(by_frame.T)
    pairs = spectrum_pairs(log_power, 50)
    assert pairs.shape == (50, 2 * bins) and pairs.dtype == np.float32 and pairs.flags["C_CONTIGUOUS"]
    for frame in (0, 17, 49):
        expected = np.stack([by_frame[2 * frame], by_frame[2 * frame + 1]], axis=1).reshape(-1)  # bin0 t0, bin0 t1, ...
        np.testing.assert_array_equal(pairs[frame], expected)
