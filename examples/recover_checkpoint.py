"""Rebuild a HEAR checkpoint from a bundle's int8 ONNX graphs (integer weights dequantised).

The fp32 checkpoint of the default model 0.2 was trained on a lent GPU machine and never
committed; its shipped int8 graphs hold every weight (int8 per channel, or fp16/fp32 for the
few kept float). This reads them back under the official key names, so the model can be
re-exported in a newer bundle format. The result is the shipped model's own arithmetic up to
the int8 rounding it already had: re-export measures it against this checkpoint, not the lost one.

    python3 examples/recover_checkpoint.py OLD.hearedge out/kws12-0.2.pt
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from hear_edge.reference.config import HearConfig
from hear_edge.reference.model import HEAR


def _initializers(path: Path) -> tuple[dict[str, np.ndarray], list]:
    model = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    # Float weights stored fp16 come back through a Cast node named NAME_to_fp32.
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in values and node.input[0].endswith("_fp16"):
            values[node.output[0]] = values[node.input[0]].astype(np.float32)
    return values, list(model.graph.node)


def _dequantised(values: dict, name: str) -> np.ndarray:
    """Weight `name` of a MatMulInteger / ConvInteger: (q - zero_point) * scale, per output channel."""
    base = name.removesuffix("_quantized")
    q = values[name].astype(np.float32)
    zero, scale = values[base + "_zero_point"].astype(np.float32), values[base + "_scale"]
    if zero.ndim and q.ndim == 3:  # conv (out, in, k) per channel: axis 0
        zero, scale = zero[:, None, None], scale[:, None, None]
    return (q - zero) * scale  # matmul (in, out) per channel broadcasts along axis 1; per tensor: scalars


def _matmul_weights(values: dict, nodes) -> dict[str, np.ndarray]:
    """Node scope (e.g. '/contextual_encoder/layers.0/self_attn/linear_q') -> weight as a MatMul B."""
    found = {}
    for node in nodes:
        if node.op_type in ("MatMulInteger", "ConvInteger", "MatMul") and len(node.input) >= 2:
            weight = node.input[1]
            if node.op_type == "MatMul":
                if weight not in values:
                    continue
                array = values[weight]
            elif weight in values:
                array = _dequantised(values, weight)
            else:
                continue
            found[node.name] = array
    return found


def _scope(found: dict, pattern: str) -> np.ndarray:
    matches = [name for name in found if re.search(pattern, name)]
    if len(matches) != 1:
        raise SystemExit(f"expected one weight node matching {pattern!r}, found {matches}")
    return found[matches[0]]


def _put_folded_query(put, values: dict, nodes, found: dict, scope: str, key: str, acoustic, layer: int) -> None:
    """Graphs from stop 31 on fold 1/sqrt(d) and query_bias1 into the query projection
    (`MultiHeadSelfAttentionWithRelativePosition._blocked`): weight W s, bias (b + u) s, and the position
    query adds (v - u) s. Only b + u and v - u reach the outputs, so the checkpoint read back has u = 0:
    the same model, other key values."""
    heads, size = acoustic.heads_in_layer(layer), acoustic.head_size
    scale = 1 / np.sqrt(size)
    projection = f"^{scope}self_attn/Gemm/"
    put(f"{key}self_attn.linear_q.weight", _scope(found, projection).T / scale)
    bias = [n for n in nodes if n.op_type == "Add" and re.search(projection, n.name) and n.input[1] in values]
    offset = [n for n in nodes if n.op_type == "Add" and re.search(f"^{scope}self_attn/Add", n.name)
              and n.input[1] in values and values[n.input[1]].shape == (heads, size)]
    if len(bias) != 1 or len(offset) != 1:
        raise SystemExit(f"{scope}: expected the folded query's bias and position offset, found "
                         f"{[n.name for n in bias]} and {[n.name for n in offset]}")
    put(f"{key}self_attn.linear_q.bias", values[bias[0].input[1]] / scale)
    put(f"{key}self_attn.query_bias1", np.zeros((heads, size), np.float32))
    put(f"{key}self_attn.query_bias2", values[offset[0].input[1]] / scale)


def recover(bundle: Path) -> tuple[dict[str, torch.Tensor], HearConfig]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    config = HearConfig.from_dict(manifest["provenance"]["config"])
    model = HEAR(config).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    window_file = next(g["file"] for g in manifest["graphs"]
                       if g["role"] == "acoustic_window" and g["format"] == "onnx" and g["precision"] == "int8")
    task_file = next(g["file"] for g in manifest["graphs"]
                     if g["role"] == "task" and g["format"] == "onnx" and g["precision"] == "int8")
    loaded = set()

    def put(key: str, array: np.ndarray) -> None:
        tensor = torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy
        if tensor.shape != state[key].shape:
            raise SystemExit(f"{key}: graph gives {tuple(tensor.shape)}, model expects {tuple(state[key].shape)}")
        state[key] = tensor
        loaded.add(key)

    values, nodes = _initializers(bundle / window_file)
    found = _matmul_weights(values, nodes)
    prefix = "acoustic_model."
    for key in state:  # float tensors the exporter kept under their own names
        if key.startswith(prefix) and key in values:
            put(key, values[key])
    if "acoustic_model.feature_extractor.conv.weight" not in loaded:  # schema 2 keeps it float, by name
        put("acoustic_model.feature_extractor.conv.weight", _scope(found, r"^/feature_extractor/conv/"))
    max_length = config.acoustic_model.max_length
    for layer in range(config.acoustic_model.num_transformer_layers):
        scope = f"(/contextual_encoder)?/layers.{layer}/"  # schema 1 graphs have the outer scope
        key = f"{prefix}contextual_encoder.layers.{layer}."
        for linear in ("linear_k", "linear_v", "linear_out"):
            put(f"{key}self_attn.{linear}.weight", _scope(found, f"^{scope}self_attn/{linear}/").T)
        if f"{key}self_attn.query_bias1" in loaded:  # graphs before stop 31: linear_q and the biases by name
            put(f"{key}self_attn.linear_q.weight", _scope(found, f"^{scope}self_attn/linear_q/").T)
        else:
            _put_folded_query(put, values, nodes, found, scope, key, config.acoustic_model, layer)
        for dense in ("intermediate_dense", "output_dense"):
            put(f"{key}ffn.{dense}.weight", _scope(found, f"^{scope}ffn/{dense}/").T)
        # Integer attention keeps each whole table as int8 with one scale, named after the Gather that reads it.
        for name in ("relative_position_k", "relative_position_v"):
            table = f"{key}self_attn.{name}.positional_embedding.weight"
            gather = next((n for n in nodes if n.op_type == "Gather" and n.input[0] == table + "_s8"), None)
            if gather is not None:
                scale = values[gather.name.removesuffix("/table_s8") + "/table_scale"]
                put(table, values[table + "_s8"].astype(np.float32) * scale)
        # The static graph baked the relative-position tables for distances -(T-1)..T-1: rows
        # 1..2T-1 of the 2T-row embedding; row 0 (distance -T) is never read, left at zero.
        if f"{key}self_attn.relative_position_k.positional_embedding.weight" in loaded:
            continue  # schema 2 graphs keep the whole tables, by name (float or int8)
        table_k = _scope(found, f"^{scope}self_attn/MatMul_quant$").T     # (2T-1, head)
        table_v = _scope(found, f"^{scope}self_attn/MatMul_2_quant$")     # (2T-1, head)
        for name, table in (("relative_position_k", table_k), ("relative_position_v", table_v)):
            full = np.zeros((2 * max_length, table.shape[1]), np.float32)
            full[1:] = table
            put(f"{key}self_attn.{name}.positional_embedding.weight", full)

    values, nodes = _initializers(bundle / task_file)
    found = _matmul_weights(values, nodes)
    renames = {"mixture.": "spectrogram_mixture.", "mixture_spectrum.bias": "spectrogram_mixture.mixture.bias"}
    for name, array in values.items():
        key = next((new + name[len(old):] for old, new in renames.items() if name.startswith(old)), name)
        if key in state and not key.startswith(prefix):
            put(key, array)
    put("spectrogram_mixture.gate_linear.weight", _scope(found, r"^/gate_linear/").T)
    put("spectrogram_mixture.spectrum_linear.weight", _scope(found, r"^/spectrum_linear/").T)
    if any(name.startswith("/mixture_hidden/") for name in found):  # split into one matmul per input (stop 29 on)
        put("spectrogram_mixture.mixture.weight", np.concatenate(
            [_scope(found, r"^/mixture_hidden/"), _scope(found, r"^/mixture_spectrum/")]).T)
    else:
        put("spectrogram_mixture.mixture.weight", _scope(found, r"^/mixture/").T)
    put("task_model.transformer.self_attn.in_proj_weight", _scope(found, r"^/(Gemm_)?MatMul_quant$").T)
    put("task_model.transformer.self_attn.out_proj.weight", _scope(found, r"^/out_proj/").T)
    put("task_model.transformer.linear1.weight", _scope(found, r"^/linear1/").T)
    put("task_model.transformer.linear2.weight", _scope(found, r"^/linear2/").T)
    put("decoder.linear.weight", _scope(found, r"^/linear/Gemm").T)
    put("decoder.out.weight", _scope(found, r"^/out/Gemm").T)
    put("task_model.pos_embed", values["task_model.pos_embed"])

    missing = [k for k in state if k not in loaded and not k.startswith("preprocessor.")
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise SystemExit(f"weights not found in the graphs: {missing}")
    return state, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    state, config = recover(args.bundle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    args.out.with_suffix(".config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    labels = json.loads((args.bundle / "manifest.json").read_text())["labels"]
    args.out.with_suffix(".labels.txt").write_text("\n".join(labels) + "\n")
    print(f"wrote {args.out} ({sum(v.numel() for v in state.values()):,} values)")


if __name__ == "__main__":
    main()
