import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import REAL_AUDIO, TINY_CASES, TINY_GOLDEN, TINY_LABELS  # noqa: E402
from hear_edge.bundle import gates  # noqa: E402
from hear_edge.bundle.manifest import Manifest, read_manifest  # noqa: E402
from hear_edge.errors import BundleError, ConfigError, LabelError, ParityError  # noqa: E402
from hear_edge.export import export_bundle, load_labels  # noqa: E402
from hear_edge.reference.config import HearConfig  # noqa: E402
from hear_edge.reference.model import HEAR, load_checkpoint  # noqa: E402
from hear_edge.run.inference import InferenceEngine  # noqa: E402
from hear_edge.signal.frontend import compute_features  # noqa: E402

FP32_BOUND = 1e-3
VARIANTS = [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")]


def _engine(bundle, fmt, precision):
    return InferenceEngine(bundle, read_manifest(bundle), fmt, precision)


def test_tiny_bundle_has_every_graph_and_a_complete_manifest(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    assert manifest.variants() == VARIANTS
    assert manifest.labels == TINY_LABELS and manifest.sample_rate_hz == 16000
    assert (manifest.window_frames, manifest.overlap_frames, manifest.max_task_frames) == (300, 50, 1500)
    assert manifest.provenance["checkpoint_sha256"] and manifest.provenance["versions"]["torch"].startswith("2.13.0")
    for spec in manifest.graphs:
        assert spec.sha256 and spec.bytes == (tiny_bundle / spec.file).stat().st_size
        if spec.role == "task":
            assert (spec.frame_buckets is None) == (spec.format == "onnx")
    assert manifest.parity["passed"]
    assert {c["real"] for c in manifest.parity["clips"]} == {True, False}
    assert not list(tiny_bundle.rglob("*.pt")) and not list(tiny_bundle.rglob("*.pkl"))


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("case", TINY_CASES)
def test_golden_logits_through_each_fp32_graph(tiny_bundle, fmt, case):
    golden = np.load(TINY_GOLDEN / f"{case}.npz")
    outputs = _engine(tiny_bundle, fmt, "fp32").run(*compute_features(golden["wav"]))
    assert np.abs(outputs.logits - golden["logits"]).max() <= FP32_BOUND
    assert np.abs(outputs.acoustic - golden["acoustic_hidden"]).max() <= FP32_BOUND


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_int8_gates_hold_on_real_audio(tiny_bundle, fmt):
    figures = read_manifest(tiny_bundle).parity["results"][f"{fmt}/int8"]
    assert figures["agreement_measured_on"] == "real audio" and figures["real_clips"] >= 20
    assert figures["acoustic_cosine_min"] >= 0.99 and figures["top1_agreement"] >= 0.99
    assert figures["passed"]


@pytest.mark.parametrize("fmt,precision", VARIANTS)
def test_every_graph_records_a_probe_that_passes_on_every_installed_backend(tiny_bundle, fmt, precision):
    from hear_edge.bundle.selftest import PROBE_TOLERANCE, self_test
    from hear_edge.runtimes.base import FORMAT_BACKENDS, backend_installed, open_graph

    manifest = read_manifest(tiny_bundle)
    backends = [b for b in FORMAT_BACKENDS[fmt] if backend_installed(b)]
    assert backends, f"no {fmt} backend installed"
    for role in ("acoustic_window", "task"):
        spec = manifest.graph(role, fmt, precision)
        assert spec.probe["tolerance"] == PROBE_TOLERANCE[precision]
        assert spec.probe["signature"] == (f"{'window' if role == 'acoustic_window' else 'task'}_50"
                                           if fmt == "tflite" else None)
        for backend in backends:
            session = open_graph(backend, tiny_bundle / spec.file, spec.input_names, spec.output_names)
            assert self_test(session, spec, backend, session.runtime) <= spec.probe["tolerance"]


def test_the_tflite_int8_recipe_keeps_fully_connected_weights_per_tensor(tiny_bundle):
    """tflite-runtime 2.14 computes hybrid FULLY_CONNECTED with per-channel weights wrong (issue 21)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    for role in ("acoustic_window", "task"):
        model = tfl_flatbuffer_utils.read_model(str(tiny_bundle / f"{role}.int8.tflite"))
        names = [getattr(tfl_flatbuffer_utils.TFL_OP_CODE_TO_NAME.get(code.builtinCode), "value", None)
                 for code in model.operatorCodes]
        scale_counts = set()  # how many scales each quantised FULLY_CONNECTED input has
        for graph in model.subgraphs:
            for op in graph.operators:
                if names[op.opcodeIndex] != "FULLY_CONNECTED":
                    continue
                quantised = [graph.tensors[i].quantization for i in op.inputs if i >= 0]
                scale_counts |= {len(q.scale) for q in quantised if q is not None and q.scale is not None}
        assert scale_counts == {1}, role


def test_onnx_int8_stores_its_large_float_weights_as_fp16(tiny_bundle):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto

    graph = onnx.load(str(tiny_bundle / "task.int8.onnx")).graph
    halves = {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT16}
    assert "task_model.pos_embed_fp16" in halves  # 1500 x 32 positions
    casts = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "Cast"}
    assert all(casts.get(name) == name.removesuffix("_fp16") for name in halves)
    assert not any(t.data_type == TensorProto.FLOAT and np.prod(t.dims) >= 16384 for t in graph.initializer)
    fp32 = onnx.load(str(tiny_bundle / "task.fp32.onnx")).graph
    assert not any(t.data_type == TensorProto.FLOAT16 for t in fp32.initializer)  # fp32 graphs stay fp32


def test_onnx_task_graph_runs_unbatched_gemms_and_every_int8_linear_is_integer(tiny_bundle):
    """The free-length task graph's linear layers are Gemms with their bias (one clip, unbatched), the
    Spectrogram Mixture's split into one matmul per input it joins; in the int8 graph every linear is an
    integer matmul, and the mixture's two halves quantise their two inputs apart (each on its own scale)."""
    onnx = pytest.importorskip("onnx")

    fp32 = onnx.load(str(tiny_bundle / "task.fp32.onnx")).graph
    weights = {i.name for i in fp32.initializer}
    scopes = ("/gate_linear/", "/spectrum_linear/", "/mixture_spectrum/", "/out_proj/", "/linear1/", "/linear2/")
    gemms = [n.name for n in fp32.node if n.op_type == "Gemm"]
    assert all(any(name.startswith(scope) for name in gemms) for scope in scopes), gemms
    weight_matmuls = [n.name for n in fp32.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert weight_matmuls == ["/mixture_hidden/MatMul"]  # its bias is the spectrum half's
    assert not any(n.name.startswith("/mixture/") for n in fp32.node)  # no joined mixture left
    int8 = onnx.load(str(tiny_bundle / "task.int8.onnx")).graph
    weights = {i.name for i in int8.initializer} | {n.output[0] for n in int8.node if n.op_type == "Cast"}
    assert not any(n.op_type in ("MatMul", "Gemm") and n.input[1] in weights for n in int8.node)
    integer = {n.name.split("/")[1]: n for n in int8.node if n.op_type == "MatMulInteger"}
    assert {"gate_linear", "spectrum_linear", "mixture_hidden", "mixture_spectrum", "Gemm_MatMul_quant", "out_proj",
            "linear1", "linear2", "linear", "out"} <= set(integer), sorted(integer)
    producer = {o: n for n in int8.node for o in n.output}
    halves = [producer[integer[name].input[0]] for name in ("mixture_hidden", "mixture_spectrum")]
    assert [n.op_type for n in halves] == ["DynamicQuantizeLinear"] * 2 and halves[0] is not halves[1]


def test_recover_checkpoint_reads_every_weight_back_from_the_int8_onnx_graphs(tiny_bundle):
    """examples/recover_checkpoint.py (behind reexport_default_model.py): every tensor of the checkpoint,
    the integer attention's int8 position tables too, within one step of its int8 grid (fp16 for kept floats)."""
    import sys

    from conftest import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "examples"))
    from recover_checkpoint import recover

    state, _ = recover(tiny_bundle)
    original = torch.load(TINY_GOLDEN / "state_dict.pt", weights_only=True)
    checked = [k for k in original if not k.startswith("preprocessor.") and not k.endswith("num_batches_tracked")]
    assert any("relative_position_k" in k for k in checked)
    # The graphs hold the query's content bias folded into linear_q's (b + u) and the position bias as
    # v - u: the checkpoint read back is the same model with u = 0.
    for attention in {k.removesuffix("query_bias1") for k in checked if k.endswith("query_bias1")}:
        content = original[attention + "query_bias1"]
        original[attention + "linear_q.bias"] = original[attention + "linear_q.bias"] + content.reshape(-1)
        original[attention + "query_bias2"] = original[attention + "query_bias2"] - content
        original[attention + "query_bias1"] = torch.zeros_like(content)
    for key in checked:
        want, got = original[key].float(), state[key]
        step = want.abs().max() / 63 + 1e-3 * want.abs().max() + 1e-6  # a 7-bit step, or fp16 rounding
        assert (want - got).abs().max() <= step, key


def test_onnx_int8_attention_runs_as_integer_matmuls_close_to_the_float_attention(tiny_bundle, tmp_path):
    """The attention products ONNX_INT8_ATTENTION names are integer matmuls in the int8 window graph, the
    rest and the fp32 graph's stay float, and the rewrite moves the window's output little against the
    same int8 graph with float attention."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from export.formats import ONNX_INT8_ATTENTION, quantize_onnx

    layers = json.loads((TINY_GOLDEN / "config.json").read_text())["acoustic_model"]["num_transformer_layers"]
    graph = onnx.load(str(tiny_bundle / "acoustic_window.int8.onnx")).graph
    # Products against a table with a constant scale are written fused (onnxruntime's MatMulIntegerToFloat).
    integer = [n for n in graph.node if n.op_type in ("MatMulInteger", "MatMulIntegerToFloat")
               and "/self_attn/MatMul" in n.name]
    assert any(n.op_type == "MatMulIntegerToFloat" and n.domain == "com.microsoft" for n in integer)
    float_attention = [n for n in graph.node if n.op_type == "MatMul" and "/self_attn/" in n.name]
    assert len(integer) == len(ONNX_INT8_ATTENTION) * layers  # of four a layer
    assert len(float_attention) == (4 - len(ONNX_INT8_ATTENTION)) * layers
    fp32 = onnx.load(str(tiny_bundle / "acoustic_window.fp32.onnx")).graph
    assert not any(n.op_type == "MatMulInteger" for n in fp32.node)

    float_attention_int8 = tmp_path / "float_attention.int8.onnx"
    quantize_onnx(tiny_bundle / "acoustic_window.fp32.onnx", float_attention_int8, attention=())
    log_mel = np.load(TINY_GOLDEN / "clip_10s.npz")["log_mel"][None, :, :600].astype(np.float32)
    outputs = {}
    for name, path in (("integer", tiny_bundle / "acoustic_window.int8.onnx"), ("float", float_attention_int8),
                       ("fp32", tiny_bundle / "acoustic_window.fp32.onnx")):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs[name] = session.run(None, {"log_mel": log_mel})[0]
    assert gates.cosine(outputs["integer"], outputs["fp32"]) >= 0.999
    assert np.abs(outputs["integer"] - outputs["float"]).max() <= 0.1 * np.abs(outputs["fp32"]).max()


def test_full_size_golden_logits_through_each_fp32_graph(full_bundle, full_golden):
    golden = np.load(full_golden / "clip_10s.npz")
    manifest = read_manifest(full_bundle)
    for fmt in ("onnx", "tflite"):
        outputs = _engine(full_bundle, fmt, "fp32").run(*compute_features(golden["wav"]))
        assert np.abs(outputs.logits - golden["logits"]).max() <= FP32_BOUND, fmt
    for fmt in ("onnx", "tflite"):
        assert manifest.parity["results"][f"{fmt}/fp32"]["passed"]
        figures = manifest.parity["results"][f"{fmt}/int8"]
        assert figures["acoustic_cosine_min"] >= 0.99, fmt
        # The golden weights are random: their top two logits can sit closer than int8's logit
        # error. A flip is only acceptable on such a near tie; a confident flip fails here.
        for flip in figures["disagreements"]:
            assert flip["reference_top1_margin"] < figures["max_abs_logit_diff"], (fmt, flip)
        assert figures["passed"] == (figures["top1_agreement"] >= 0.99), fmt
    assert manifest.parity["passed"] == all(r["passed"] for r in manifest.parity["results"].values())


@pytest.mark.parametrize("frames, valid", [(250, 250), (251, 200), (1000, 851), (1500, 1500)])
def test_the_bucketed_task_graph_in_query_chunks_computes_what_one_piece_computes(frames, valid, monkeypatch):
    # LiteRT's task buckets past TASK_QUERY_CHUNK_FRAMES run their attention one chunk of queries at a time.
    import torch

    softmax, calls = torch.softmax, []
    monkeypatch.setattr(torch, "softmax", lambda *a, **k: calls.append(1) or softmax(*a, **k))

    from export.graphs import TASK_QUERY_CHUNK_FRAMES, BucketedTaskGraph, task_example

    class OnePiece(BucketedTaskGraph):
        query_chunk_frames = None

    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    acoustic, pairs, _ = task_example(model, frames)
    valid_frames = torch.tensor([valid], dtype=torch.int32)
    with torch.no_grad():
        chunked = BucketedTaskGraph(model).eval()(acoustic, pairs, valid_frames)
        assert len(calls) == -(-frames // TASK_QUERY_CHUNK_FRAMES)
        whole = OnePiece(model).eval()(acoustic, pairs, valid_frames)
        assert len(calls) == -(-frames // TASK_QUERY_CHUNK_FRAMES) + 1
    for a, b in zip(chunked, whole):
        assert (a - b).abs().max() <= 1e-6


@pytest.mark.parametrize("frames", [1, 2, 50, 501])
def test_the_free_length_task_graph_in_two_parts_computes_what_one_piece_computes(frames, monkeypatch):
    # The ONNX task graph runs its queries in two slices and raises scores below the row max - 80.
    import torch

    from export.graphs import BucketedTaskGraph, TaskGraph, task_example

    softmax, calls = torch.softmax, []
    monkeypatch.setattr(torch, "softmax", lambda *a, **k: calls.append(1) or softmax(*a, **k))

    class OnePiece(BucketedTaskGraph):  # every frame valid: the mask changes nothing, and nothing is raised
        query_chunk_frames, query_parts = None, 1

    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    acoustic, pairs, valid_frames = task_example(model, frames)
    with torch.no_grad():
        parts = TaskGraph(model).eval()(acoustic, pairs)
        assert len(calls) == 2
        whole = OnePiece(model).eval()(acoustic, pairs, valid_frames)
    for a, b in zip(parts, whole):
        assert (a - b).abs().max() <= 1e-6


def test_tampered_graph_byte_is_caught_by_the_hash(tiny_bundle, tmp_path):
    copy = tmp_path / "tampered.hearedge"
    shutil.copytree(tiny_bundle, copy)
    graph = copy / "task.fp32.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"task\.fp32\.onnx fails its hash.*changed or damaged"):
        read_manifest(copy)
    with pytest.raises(BundleError, match=r"fails its hash"):
        InferenceEngine(copy, read_manifest(copy, verify_hashes=False), "onnx", "fp32")


def test_missing_graph_and_unknown_manifest_version(tiny_bundle, tmp_path):
    copy = tmp_path / "broken.hearedge"
    shutil.copytree(tiny_bundle, copy)
    (copy / "acoustic_window.int8.tflite").unlink()
    with pytest.raises(BundleError, match=r"missing its tflite int8 acoustic_window graph"):
        read_manifest(copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"schema_version 99 is not one this hear-edge reads"):
        read_manifest(copy)
    (copy / "manifest.json").write_text("{broken")
    with pytest.raises(BundleError, match=r"not valid JSON"):
        read_manifest(copy)


def test_manifest_round_trip(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest


def test_label_count_mismatch_fails_before_any_work(tmp_path):
    with pytest.raises(LabelError, match=r"4 labels given but the checkpoint's head has 5 classes"):
        export_bundle(TINY_GOLDEN / "state_dict.pt", tmp_path / "x.hearedge", labels=TINY_LABELS[:4])
    assert not any(tmp_path.iterdir())  # nothing staged or written: refused before any export work


def test_a_spectrogram_n_fft_other_than_the_frontends_is_refused_before_any_work(tmp_path):
    # The reference sizes its graphs for any n_fft, but the runtime frontend and the manifest know 1024 only.
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    config["acoustic_model"]["spectrogram_n_fft"] = 512
    checkpoint = tmp_path / "n_fft_512.pt"
    torch.save(HEAR(HearConfig.from_dict(config)).state_dict(), checkpoint)
    with pytest.raises(ConfigError, match=r"spectrogram_n_fft is 512; .*n_fft = 1024"):
        export_bundle(checkpoint, tmp_path / "x.hearedge", labels=TINY_LABELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n_fft_512.pt"]


def test_labels_from_text_and_json(tmp_path):
    (tmp_path / "labels.txt").write_text("yes\nno\n\nup\n")
    assert load_labels(tmp_path / "labels.txt") == ["yes", "no", "up"]
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["a", "b"]}))
    assert load_labels(tmp_path / "labels.json") == ["a", "b"]
    with pytest.raises(LabelError, match=r"repeated: \['a'\]"):
        load_labels(["a", "b", "a"])


@pytest.mark.slow
def test_seven_class_custom_head_exports_and_classifies(tmp_path):
    model = load_checkpoint(TINY_GOLDEN / "acoustic_model_state_dict.pt", num_classes=7)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in list(model.decoder.parameters()) + list(model.task_model.parameters()):
            p.normal_(0, 0.3)
    checkpoint = tmp_path / "custom.pt"
    torch.save(model.state_dict(), checkpoint)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"sound_{i}" for i in range(7)))
    bundle = tmp_path / "custom.hearedge"
    # fp32 only: a random head's near-tied logits make int8 agreement a coin toss (gated elsewhere)
    manifest = export_bundle(checkpoint, bundle, labels=labels, formats=["onnx"], precisions=["fp32"],
                             calibration=REAL_AUDIO)
    assert manifest.labels == [f"sound_{i}" for i in range(7)] and manifest.parity["passed"]
    golden = np.load(TINY_GOLDEN / "clip_10s.npz")
    outputs = _engine(bundle, "onnx", "fp32").run(*compute_features(golden["wav"]))
    with torch.no_grad():
        reference = model(torch.from_numpy(golden["wav"])[None], torch.tensor([golden["wav"].shape[-1]]))[0]
    assert outputs.logits.shape == (7,)
    assert np.abs(outputs.logits - reference.numpy()).max() <= FP32_BOUND


@pytest.mark.slow
def test_a_missed_gate_is_a_typed_error_and_force_marks_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gates, "FP32_MAX_ABS_LOGIT_DIFF", 1e-12)
    with pytest.raises(ParityError, match=r"onnx fp32 graphs: max_abs_logit_diff = .*gate <= 1e-12"):
        export_bundle(TINY_GOLDEN / "state_dict.pt", tmp_path / "a.hearedge", labels=TINY_LABELS,
                      formats=["onnx"], precisions=["fp32"])
    assert not (tmp_path / "a.hearedge").exists()
    manifest = export_bundle(TINY_GOLDEN / "state_dict.pt", tmp_path / "b.hearedge", labels=TINY_LABELS,
                             formats=["onnx"], precisions=["fp32"], force=True)
    assert manifest.parity["passed"] is False
    assert read_manifest(tmp_path / "b.hearedge").parity["results"]["onnx/fp32"]["passed"] is False


def test_existing_output_is_not_overwritten_silently(tmp_path):
    (tmp_path / "x.hearedge").mkdir()
    with pytest.raises(Exception, match=r"already exists.*overwrite"):
        export_bundle(TINY_GOLDEN / "state_dict.pt", tmp_path / "x.hearedge", labels=TINY_LABELS)


def test_bad_formats_and_a_missing_calibration_folder_are_typed(tmp_path):
    from hear_edge.errors import DataFolderError, InvalidArgumentError
    from hear_edge.export.parity import real_clips

    with pytest.raises(InvalidArgumentError, match=r"formats must be some of \('onnx', 'tflite'\)"):
        export_bundle(TINY_GOLDEN / "state_dict.pt", tmp_path / "x.hearedge", labels=TINY_LABELS, formats=("xml",))
    with pytest.raises(DataFolderError, match=r"calibration folder .*none does not exist"):
        real_clips(tmp_path / "none", 16000)
