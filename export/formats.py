"""Writing the graphs: ONNX (torch.onnx, onnxruntime quantisation) and TFLite (litert-torch, ai-edge-quantizer)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from hear_edge.bundle import GraphSpec, TensorSpec, sha256_file

from .graphs import (TASK_INPUTS, TASK_OUTPUTS, WINDOW_INPUTS, WINDOW_OUTPUTS, AcousticWindowGraph,
                     TaskGraph, task_example, window_example)

logger = logging.getLogger("hear_edge")

ONNX_OPSET = 17
# Task-graph lengths for LiteRT, in acoustic frames (50 a second): litert-torch cannot convert a
# free length, so each bucket is one signature of one file, all sharing the same weights.
TFLITE_TASK_BUCKETS = (50, 100, 150, 250, 350, 500, 750, 1000, 1250, 1500)


def _specs(model, role: str, frames="frames"):
    acoustic = model.config.acoustic_model
    if role == "acoustic_window":
        window = acoustic.max_length
        return ([TensorSpec("log_mel", [1, 128, 2 * window], "float32"),
                 TensorSpec("valid_frames", [1], "int32")],
                [TensorSpec("acoustic", [1, window, acoustic.hidden_size], "float32")])
    bins = acoustic.spectrogram_n_fft // 2 + 1
    task_hidden = model.config.task_model.hidden_size
    return ([TensorSpec("acoustic", [1, frames, acoustic.hidden_size], "float32"),
             TensorSpec("spectrum_pairs", [1, frames, 2 * bins], "float32"),
             TensorSpec("valid_frames", [1], "int32")],
            [TensorSpec("logits", [1, model.config.classification_decoder.num_classes], "float32"),
             TensorSpec("pooled", [1, 3 * task_hidden], "float32")])


def _graph_spec(model, role, fmt, precision, path: Path, buckets=None) -> GraphSpec:
    inputs, outputs = _specs(model, role)
    return GraphSpec(role=role, format=fmt, precision=precision, file=path.name, sha256=sha256_file(path),
                     bytes=path.stat().st_size, inputs=inputs, outputs=outputs,
                     frame_buckets=list(buckets) if buckets else None)


def _task_buckets(model) -> list[int]:
    max_frames = model.task_model.max_length
    return sorted({b for b in TFLITE_TASK_BUCKETS if b < max_frames} | {max_frames})


def export_onnx(model, out_dir: Path, precisions) -> list[GraphSpec]:
    window_graph, task_graph = AcousticWindowGraph(model).eval(), TaskGraph(model).eval()
    fp32 = {"acoustic_window": out_dir / "acoustic_window.fp32.onnx", "task": out_dir / "task.fp32.onnx"}
    started = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The legacy (TorchScript) exporter: fast, and with the written-out task attention the
        # frame axis stays free.
        torch.onnx.export(window_graph, window_example(model), fp32["acoustic_window"], dynamo=False,
                          opset_version=ONNX_OPSET, input_names=list(WINDOW_INPUTS),
                          output_names=list(WINDOW_OUTPUTS))
        torch.onnx.export(task_graph, task_example(model, min(500, model.task_model.max_length)), fp32["task"],
                          dynamo=False, opset_version=ONNX_OPSET, input_names=list(TASK_INPUTS),
                          output_names=list(TASK_OUTPUTS),
                          dynamic_axes={"acoustic": {1: "frames"}, "spectrum_pairs": {1: "frames"}})
    logger.info("onnx fp32 graphs exported in %.1f s", time.perf_counter() - started)
    return _graph_specs(model, "onnx", fp32, precisions, quantize_onnx)


def _graph_specs(model, fmt: str, fp32: dict[str, Path], precisions, quantize, task_buckets=None) -> list[GraphSpec]:
    """Specs of the fp32 graphs and of their int8 versions; fp32 files not asked for are removed."""
    specs = []
    for precision in ("fp32", "int8"):
        if precision not in precisions:
            continue
        for role, path in fp32.items():
            if precision == "int8":
                path = quantize(path, path.with_name(f"{role}.int8{path.suffix}"))
            specs.append(_graph_spec(model, role, fmt, precision, path, task_buckets if role == "task" else None))
    if "fp32" not in precisions:
        for path in fp32.values():
            path.unlink()
    return specs


def quantize_onnx(fp32_path: Path, int8_path: Path) -> Path:
    """Weights int8 per channel, activations quantised on the fly (dynamic): what holds up on HEAR."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Symbolic shape inference trips on the relative-shift reshapes; ONNX's own inference suffices.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        # Unsigned weights per channel: half the logit error of signed+reduce_range on HEAR
        # (measured on real clips), with no saturation risk on AVX2 machines without VNNI.
        # The Spectrogram Mixture's gate and mixture matmuls stay fp32: their inputs join
        # hidden states and spectra of very different scales, and quantising them alone
        # quadrupled the task graph's logit error on a trained model (+1.3 MB).
        quantize_dynamic(str(prepared), str(int8_path), weight_type=QuantType.QUInt8, per_channel=True,
                         nodes_to_exclude=[n for n in _matmul_names(prepared)
                                           if n.startswith(("/mixture/", "/gate_linear/"))])
    _store_float_weights_as_fp16(int8_path)
    logger.info("onnx int8 %s quantised in %.1f s", int8_path.name, time.perf_counter() - started)
    return int8_path


def _store_float_weights_as_fp16(path: Path, min_elements: int = 16384) -> None:
    """Large weights that stay float (the Task Model's position table, the two fp32 mixture
    matmuls) are stored as fp16 and cast back to fp32 when the session loads: 2 MB off the int8
    bundle, arithmetic unchanged, rounding (2^-11 relative) far below int8's."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    graph_inputs = {i.name for i in graph.input}
    casts = []
    for initializer in list(graph.initializer):
        if initializer.data_type != TensorProto.FLOAT or initializer.name in graph_inputs:
            continue
        values = numpy_helper.to_array(initializer)
        if values.size < min_elements or np.abs(values).max() > np.finfo(np.float16).max:
            continue
        half = numpy_helper.from_array(values.astype(np.float16), initializer.name + "_fp16")
        graph.initializer.remove(initializer)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [initializer.name], to=TensorProto.FLOAT,
                                      name=initializer.name + "_to_fp32"))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.save(model, str(path))


def _matmul_names(path: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node
            if node.op_type in ("MatMul", "Gemm")]


def export_tflite(model, out_dir: Path, precisions) -> list[GraphSpec]:
    import litert_torch

    window_graph, task_graph = AcousticWindowGraph(model).eval(), TaskGraph(model).eval()
    buckets = _task_buckets(model)
    fp32 = {"acoustic_window": out_dir / "acoustic_window.fp32.tflite", "task": out_dir / "task.fp32.tflite"}
    started = time.perf_counter()
    logger.info("tflite: converting the acoustic window graph (about a minute on 2 cores)")
    litert_torch.convert(window_graph, window_example(model)).export(str(fp32["acoustic_window"]))
    logger.info("tflite: window done in %.0f s; converting the task graph in %d length buckets %s",
                time.perf_counter() - started, len(buckets), buckets)
    converter = None
    for frames in buckets:
        example = task_example(model, frames)
        converter = (litert_torch.signature(f"task_{frames}", task_graph, example) if converter is None
                     else converter.signature(f"task_{frames}", task_graph, example))
    converter.convert().export(str(fp32["task"]))
    logger.info("tflite fp32 graphs converted in %.0f s", time.perf_counter() - started)
    return _graph_specs(model, "tflite", fp32, precisions, quantize_tflite, buckets)


def quantize_tflite(fp32_path: Path, int8_path: Path) -> Path:
    """ai-edge-quantizer's dynamic recipe: int8 weights, float activations quantised at run time."""
    from ai_edge_quantizer import quantizer, recipe

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = quantizer.Quantizer(str(fp32_path), recipe.dynamic_wi8_afp32()).quantize()
        result.save(scratch, model_name="quantized", overwrite=True)
        shutil.move(str(Path(scratch) / "quantized.tflite"), int8_path)
    logger.info("tflite int8 %s quantised in %.1f s", int8_path.name, time.perf_counter() - started)
    return int8_path
