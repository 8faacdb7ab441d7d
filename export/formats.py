"""Writing the graphs: ONNX (torch.onnx, onnxruntime quantisation) and TFLite (litert-torch, ai-edge-quantizer)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from hear_edge.bundle.manifest import GraphSpec, TensorSpec, sha256_file, signature_name
from hear_edge.bundle.schema import (ACOUSTIC, LOG_MEL, LOGITS, POOLED, SPECTRUM_PAIRS, TASK_INPUTS, TASK_OUTPUTS,
                                     VALID_FRAMES, WINDOW_INPUTS, WINDOW_OUTPUTS)
from hear_edge.runtimes.base import GRAPH_SUFFIX

from .graphs import (AcousticWindowGraph, BucketedAcousticWindowGraph, BucketedTaskGraph, TaskGraph, task_example,
                     window_example)

logger = logging.getLogger("hear_edge")

ONNX_OPSET = 17
# Task-graph lengths for LiteRT, in acoustic frames (50 a second): litert-torch cannot convert a
# free length, so each bucket is one signature of one file, all sharing the same weights.
TFLITE_TASK_BUCKETS = (50, 100, 150, 250, 350, 500, 750, 1000, 1250, 1500)
# Acoustic-window lengths for LiteRT: 1, 2, 3, 4, 5 and 6 s windows, so a short clip or stream
# window pays for at most one second more than it has (ONNX runs the exact length).
TFLITE_WINDOW_BUCKETS = (50, 100, 150, 200, 250, 300)


def _specs(model, role: str, fmt: str):
    acoustic = model.config.acoustic_model
    mels = model.acoustic_model.feature_extractor.conv.in_channels  # the frontend's mel bins
    if role == "acoustic_window":
        if fmt == "onnx":
            return ([TensorSpec(LOG_MEL, [1, mels, "mel_frames"], "float32")],
                    [TensorSpec(ACOUSTIC, [1, "frames", acoustic.hidden_size], "float32")])
        return ([TensorSpec(LOG_MEL, [1, mels, "2 * bucket"], "float32"),
                 TensorSpec(VALID_FRAMES, [1], "int32")],
                [TensorSpec(ACOUSTIC, [1, "bucket", acoustic.hidden_size], "float32")])
    frames = "frames" if fmt == "onnx" else "bucket"
    bins = acoustic.spectrogram_n_fft // 2 + 1
    task_hidden = model.config.task_model.hidden_size
    masked = [TensorSpec(VALID_FRAMES, [1], "int32")] if fmt != "onnx" else []
    return ([TensorSpec(ACOUSTIC, [1, frames, acoustic.hidden_size], "float32"),
             TensorSpec(SPECTRUM_PAIRS, [1, frames, 2 * bins], "float32")] + masked,
            [TensorSpec(LOGITS, [1, model.config.classification_decoder.num_classes], "float32"),
             TensorSpec(POOLED, [1, 3 * task_hidden], "float32")])


def _graph_spec(model, role, fmt, precision, path: Path, buckets=None) -> GraphSpec:
    inputs, outputs = _specs(model, role, fmt)
    return GraphSpec(role=role, format=fmt, precision=precision, file=path.name, sha256=sha256_file(path),
                     bytes=path.stat().st_size, inputs=inputs, outputs=outputs,
                     frame_buckets=list(buckets) if buckets else None)


def _fp32_paths(out_dir: Path, fmt: str) -> dict[str, Path]:
    """Where each role's fp32 graph of `fmt` is written: `acoustic_window.fp32.onnx`, `task.fp32.tflite`."""
    return {role: out_dir / f"{role}.fp32{GRAPH_SUFFIX[fmt]}" for role in ("acoustic_window", "task")}


def _buckets(candidates, max_frames: int) -> list[int]:
    return sorted({b for b in candidates if b < max_frames} | {max_frames})


def export_onnx(model, out_dir: Path, precisions) -> list[GraphSpec]:
    window_graph, task_graph = AcousticWindowGraph(model).eval(), TaskGraph(model).eval()
    fp32 = _fp32_paths(out_dir, "onnx")
    started = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The legacy (TorchScript) exporter: fast, and with the written-out task attention the
        # frame axis stays free.
        torch.onnx.export(window_graph, window_example(model)[:1], fp32["acoustic_window"], dynamo=False,
                          opset_version=ONNX_OPSET, input_names=list(WINDOW_INPUTS),
                          output_names=list(WINDOW_OUTPUTS),
                          dynamic_axes={LOG_MEL: {2: "mel_frames"}, ACOUSTIC: {1: "frames"}})
        torch.onnx.export(task_graph, task_example(model, min(500, model.task_model.max_length))[:2], fp32["task"],
                          dynamo=False, opset_version=ONNX_OPSET, input_names=list(TASK_INPUTS),
                          output_names=list(TASK_OUTPUTS),
                          dynamic_axes={ACOUSTIC: {1: "frames"}, SPECTRUM_PAIRS: {1: "frames"}})
    for path in fp32.values():
        declare_only_used_opsets(path)
    logger.info("onnx fp32 graphs exported in %.1f s", time.perf_counter() - started)
    return _graph_specs(model, "onnx", fp32, precisions, quantize_onnx)


def declare_only_used_opsets(path: Path) -> None:
    """Drop opset imports that no node uses: onnxruntime 1.17 refuses a graph that declares
    ai.onnx.ml opset 5, which the quantiser adds though every node here is plain ai.onnx."""
    import onnx

    model = onnx.load(str(path))
    used = {node.domain or "" for node in model.graph.node}
    kept = [o for o in model.opset_import if (o.domain or "") in used or (o.domain or "") == ""]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save(model, str(path))


def _graph_specs(model, fmt: str, fp32: dict[str, Path], precisions, quantize, buckets=None) -> list[GraphSpec]:
    """Specs of the fp32 graphs and of their int8 versions; fp32 files not asked for are removed."""
    specs = []
    for precision in ("fp32", "int8"):
        if precision not in precisions:
            continue
        for role, path in fp32.items():
            if precision == "int8":
                path = quantize(path, path.with_name(f"{role}.int8{path.suffix}"))
            specs.append(_graph_spec(model, role, fmt, precision, path, (buckets or {}).get(role)))
    if "fp32" not in precisions:
        for path in fp32.values():
            path.unlink()
    return specs


# Signed int8 weights run onnxruntime's u8s8 kernels: 3.5x fp32 per GEMM on an AVX-512 VNNI host
# against 1.5x for u8u8. reduce_range keeps them to 7 bits, so that the AVX2 kernel without VNNI
# (vpmaddubsw, which adds two u8*s8 products in int16) cannot saturate: 2 * 255 * 63 < 32767.
ONNX_INT8_RECIPE = {"weight_type": "QInt8", "per_channel": True, "reduce_range": True,
                    "op_types_to_quantize": ["MatMul", "Gemm"]}


# The attention products of the int8 window graph that run as integer matmuls (both sides activations):
# queries as dynamic uint8, keys as dynamic symmetric 7-bit int8, the position tables likewise once at export,
# the probabilities as uint8 on a fixed 1/255 scale (they lie in [0, 1]) for the position values, on
# onnxruntime's u8s8 kernels (AMX, VNNI). "probs_value" (probabilities times values) is left float:
# it would save about 10 % more of a 300-frame window, but it tripled the window's int8 error (golden full-size
# acoustic cosine 0.9993 -> 0.9928, against the 0.99 gate). The Task Model's attention stays float.
ONNX_INT8_ATTENTION = ("query_key", "query_position", "probs_position")
_PROBS_SCALE = 1 / 255
# The signed side in 7 bits, as reduce_range keeps the weights: the uint8 side spans 0-255, and the
# AVX2 kernel without VNNI adds two u8*s8 products in int16 (2 * 255 * 63 < 32767; 127 would saturate).
_SIGNED_LEVELS = 63
_MOVES = ("Reshape", "Transpose")  # commute with per-tensor quantisation: run on the int8 tensor instead
_PROBS_MOVES = ("Reshape", "Pad")  # the zero-padded unshift of the probabilities (zero stays zero)
_ORT_DOMAIN = "com.microsoft"  # onnxruntime's contrib ops (MatMulIntegerToFloat: onnxruntime 1.5 on)


def quantize_onnx(fp32_path: Path, int8_path: Path, attention=ONNX_INT8_ATTENTION) -> Path:
    """Weights int8 per channel, activations quantised on the fly (dynamic); the Conv1d stays fp32
    (ConvInteger with signed weights is 2.6x slower than the fp32 conv); the `attention` products
    (ONNX_INT8_ATTENTION) as integer matmuls."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        unfused = Path(scratch) / "unfused.onnx"
        _gemm_to_matmul(fp32_path, unfused)
        # Symbolic shape inference trips on the relative-shift reshapes; ONNX's own inference suffices.
        quant_pre_process(str(unfused), str(prepared), skip_symbolic_shape=True)
        # Every linear layer is int8, the Spectrogram Mixture's too: the task graph splits the mixture's
        # matmul over [hidden, spectrum] into one per input (TaskGraph._mix), each quantised on its own
        # scale. Joined, one scale for both doubled the default model's mean logit error (0.020 -> 0.043);
        # split, 0.0196 -> 0.0204 on its held-out voices and 0.0207 -> 0.0230 on natural ones, the task
        # graph int8 0.75-0.87x the time at 50 frames (benchmarks/README.md, stop 29).
        recipe = dict(ONNX_INT8_RECIPE, weight_type=getattr(QuantType, ONNX_INT8_RECIPE["weight_type"]))
        quantize_dynamic(str(prepared), str(int8_path), **recipe)
    _integer_attention(int8_path, attention)
    _store_float_weights_as_fp16(int8_path)
    declare_only_used_opsets(int8_path)
    logger.info("onnx int8 %s quantised in %.1f s", int8_path.name, time.perf_counter() - started)
    return int8_path


def _integer_attention(path: Path, products=ONNX_INT8_ATTENTION) -> None:
    """Rewrite the Acoustic Model's attention MatMuls of an int8 graph at `path` as MatMulInteger with
    their scales (onnxruntime fuses them into MatMulIntegerToFloat): `products` names which."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    added, before, constants = [], {}, []  # nodes, {node name: nodes to insert before it}, initializers

    def constant(name, value, dtype):
        if name not in weights:
            weights[name] = numpy_helper.from_array(np.array(value, dtype), name)
            constants.append(weights[name])
        return name

    def moves_above(name, ops):
        """The chain of `ops` nodes (each read only by the next) that `name` comes out of, top first."""
        chain = []
        while name in producer and producer[name].op_type in ops and consumers.get(name, 0) == 1:
            chain.insert(0, producer[name])
            name = producer[name].input[0]
        return name, chain

    def replay(chain, source, prefix):
        for i, node in enumerate(chain):
            out = f"{prefix}/{node.op_type}_{i}_q"
            inputs = [source] + list(node.input[1:])
            if node.op_type == "Pad" and len(inputs) > 2 and inputs[2]:
                return None  # a pad value other than zero: not replayable on integers
            added.append(helper.make_node(node.op_type, inputs, [out], name=out,
                                          **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
            source = out
        return source

    def signed(name, prefix):
        """(int8 tensor, scale) of `name`: a weight gathered by rows quantised once, else dynamic symmetric."""
        top, chain = moves_above(name, _MOVES)
        gather = producer.get(top)
        if gather is not None and gather.op_type == "Gather" and gather.input[0] in weights:
            table = numpy_helper.to_array(weights[gather.input[0]]).astype(np.float32)
            scale = float(max(np.abs(table).max(), 1e-30) / _SIGNED_LEVELS)
            q_table = numpy_helper.from_array(np.clip(np.round(table / scale), -_SIGNED_LEVELS,
                                                      _SIGNED_LEVELS).astype(np.int8),
                                              gather.input[0] + "_s8")
            constants.append(q_table)
            gathered = prefix + "/table_s8"
            added.append(helper.make_node("Gather", [q_table.name, gather.input[1]], [gathered], name=gathered,
                                          **{a.name: helper.get_attribute_value(a) for a in gather.attribute}))
            return replay(chain, gathered, prefix), constant(prefix + "/table_scale", scale, np.float32)
        peak = [prefix + "/abs", prefix + "/absmax", prefix + "/absmax_floor", prefix + "/scale_b"]
        added.extend([helper.make_node("Abs", [top], [peak[0]], name=peak[0]),
                      helper.make_node("ReduceMax", [peak[0]], [peak[1]], keepdims=0, name=peak[1]),
                      helper.make_node("Max", [peak[1], constant("attention_tiny", 1e-30, np.float32)], [peak[2]],
                                       name=peak[2]),
                      helper.make_node("Mul", [peak[2], constant("attention_signed_step", 1 / _SIGNED_LEVELS,
                                                                  np.float32)],
                                       [peak[3]], name=peak[3]),
                      helper.make_node("QuantizeLinear", [top, peak[3], constant("attention_zero_s8", 0, np.int8)],
                                       [prefix + "/s8"], name=prefix + "/s8")])
        return replay(chain, prefix + "/s8", prefix), peak[3]

    def probs(name, prefix):
        """(uint8 tensor, scale, zero point) of probabilities that come out of a Softmax through zero pads."""
        top, chain = moves_above(name, _PROBS_MOVES)
        if producer.get(top) is None or producer[top].op_type != "Softmax":
            return None
        quantised = top + "_u8"
        if quantised not in {o for n in added for o in n.output}:  # one quantisation per softmax
            added.append(helper.make_node("QuantizeLinear", [top, constant("attention_probs_scale", _PROBS_SCALE,
                                                                           np.float32),
                                                             constant("attention_zero_u8", 0, np.uint8)],
                                          [quantised], name=quantised))
        source = replay(chain, quantised, prefix)
        return None if source is None else (source, "attention_probs_scale", "attention_zero_u8")

    rewritten = {}
    for node in graph.node:
        if node.op_type != "MatMul" or "/self_attn/" not in node.name or any(i in weights for i in node.input):
            continue
        a, b = node.input
        start = len(added)
        top = producer.get(moves_above(a, _PROBS_MOVES)[0])
        from_probs = probs(a, node.name) if top is not None and top.op_type == "Softmax" else None
        table = moves_above(b, _MOVES)[0]
        by_table = table in producer and producer[table].op_type == "Gather" and producer[table].input[0] in weights
        kind = ("probs_position" if by_table else "probs_value") if from_probs else \
            ("query_position" if by_table else "query_key")
        if kind not in products:
            del added[start:]
            continue
        if from_probs:
            qa, sa, za = from_probs
        else:
            qa, sa, za = (node.name + "/qa", node.name + "/sa", node.name + "/za")
            added.append(helper.make_node("DynamicQuantizeLinear", [a], [qa, sa, za], name=qa))
        qb, sb = signed(b, node.name)
        if qb is None:
            del added[start:]
            continue
        p = node.name
        zero_b = constant("attention_zero_s8", 0, np.int8)
        if sa in weights and sb in weights:
            # Both scales constant (probabilities against a table): onnxruntime would fold their product and
            # then not fuse MatMulInteger, Cast and Mul, so the fused op is written out (window int8 2-3 %
            # faster at 300 frames, outputs bit-identical).
            added.append(helper.make_node("MatMulIntegerToFloat", [qa, qb, sa, sb, za, zero_b], [node.output[0]],
                                          name=p + "/MatMulIntegerToFloat", domain=_ORT_DOMAIN))
        else:
            added.extend([helper.make_node("MatMulInteger", [qa, qb, za, zero_b], [p + "/int32"],
                                           name=p + "/MatMulInteger"),
                          helper.make_node("Cast", [p + "/int32"], [p + "/float"], to=TensorProto.FLOAT,
                                           name=p + "/Cast"),
                          helper.make_node("Mul", [sa, sb], [p + "/scale"], name=p + "/scale"),
                          helper.make_node("Mul", [p + "/float", p + "/scale"], [node.output[0]], name=p + "/Scaled")])
        before[node.name] = added[start:]
        rewritten[node.name] = kind
    if not rewritten:
        return
    nodes = []
    for node in graph.node:
        nodes.extend(before.get(node.name, [node]))
    # The float chains the integer products replaced (and their weights) are read by nobody now.
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    if any(n.domain == _ORT_DOMAIN for n in nodes) and not any(o.domain == _ORT_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_ORT_DOMAIN, 1))
    used = {i for n in nodes for i in n.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    onnx.save(model, str(path))
    logger.info("onnx int8 %s: %d attention products as integer matmuls", path.name, len(rewritten))


def _gemm_to_matmul(path: Path, out_path: Path, prefix: str = "/layers.") -> None:
    """Gemm(x, W, b) over a weight -> MatMul(x, W^T) + b for the Acoustic Model's layers (`prefix`):
    onnxruntime's dynamic quantiser has no integer Gemm, and the unbatched window graph's linear
    layers trace to Gemm (onnxruntime fuses the int8 MatMul and its bias Add back into one
    DynamicQuantizeMatMul). Other Gemms stay Gemm: the quantiser splits those itself."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0 \
            and not attributes.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in weights or not node.name.startswith(prefix):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        if attributes.get("transB", 0):
            weight = weight.T
        name = f"{node.input[1]}_matmul_{len(nodes)}"
        graph.initializer.append(numpy_helper.from_array(weight.copy(), name))
        product = node.output[0] + ("_matmul" if len(node.input) > 2 and node.input[2] else "")
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=node.name + "/MatMul"))
        if product != node.output[0]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + "/Add"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    onnx.save(model, str(out_path))


def _store_float_weights_as_fp16(path: Path, min_elements: int = 16384) -> None:
    """Large weights that stay float (the Conv1d's, the Task Model's position table) are stored as fp16
    and cast back to fp32 when the session loads: 1.3 MB off the full-size int8 bundle, arithmetic
    unchanged, rounding (2^-11 relative) far below int8's."""
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


def export_tflite(model, out_dir: Path, precisions) -> list[GraphSpec]:
    import litert_torch

    window_graph, task_graph = BucketedAcousticWindowGraph(model).eval(), BucketedTaskGraph(model).eval()
    buckets = {"acoustic_window": _buckets(TFLITE_WINDOW_BUCKETS, model.acoustic_model.max_length),
               "task": _buckets(TFLITE_TASK_BUCKETS, model.task_model.max_length)}
    fp32 = _fp32_paths(out_dir, "tflite")
    examples = {"acoustic_window": lambda frames: window_example(model, frames),
                "task": lambda frames: task_example(model, frames)}
    started = time.perf_counter()
    for role, graph in (("acoustic_window", window_graph), ("task", task_graph)):
        logger.info("tflite: converting the %s graph in %d length buckets %s", role, len(buckets[role]),
                    buckets[role])
        converter = None
        for frames in buckets[role]:
            name = signature_name(role, frames)
            example = examples[role](frames)
            converter = (litert_torch.signature(name, graph, example) if converter is None
                         else converter.signature(name, graph, example))
        converter.convert().export(str(fp32[role]))
    logger.info("tflite fp32 graphs converted in %.0f s", time.perf_counter() - started)
    return _graph_specs(model, "tflite", fp32, precisions, quantize_tflite, buckets)


# ai-edge-quantizer's dynamic recipe (int8 weights, float activations quantised at run time), with
# FULLY_CONNECTED weights per tensor: tflite-runtime 2.14's hybrid FULLY_CONNECTED with per-channel
# weights computes wrong (relative error ~1 on every layer; the default bundle scored 5/60 there),
# per tensor it agrees with ai-edge-litert. The other quantised op (the Conv1d's CONV_2D) stays per
# channel, which 2.14 computes right. Later rules override earlier ones.
TFLITE_INT8_RECIPE = (("ALL_SUPPORTED", "CHANNELWISE"), ("FULLY_CONNECTED", "TENSORWISE"))


def tflite_int8_recipe():
    """TFLITE_INT8_RECIPE as ai-edge-quantizer's recipe (8-bit weights, dynamic activations)."""
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.qtyping import QuantGranularity, TFLOperationName

    manager = recipe_manager.RecipeManager()
    for operation, granularity in TFLITE_INT8_RECIPE:
        manager.add_dynamic_config(regex=".*", operation_name=TFLOperationName[operation], num_bits=8,
                                   granularity=QuantGranularity[granularity])
    return manager.get_quantization_recipe()


def quantize_tflite(fp32_path: Path, int8_path: Path) -> Path:
    """ai-edge-quantizer's dynamic recipe, fully-connected weights per tensor (TFLITE_INT8_RECIPE)."""
    from ai_edge_quantizer import quantizer

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = quantizer.Quantizer(str(fp32_path), tflite_int8_recipe()).quantize()
        result.save(scratch, model_name="quantized", overwrite=True)
        shutil.move(str(Path(scratch) / "quantized.tflite"), int8_path)
    int8_path.chmod(0o644)  # the quantiser writes it executable
    logger.info("tflite int8 %s quantised in %.1f s", int8_path.name, time.perf_counter() - started)
    return int8_path
