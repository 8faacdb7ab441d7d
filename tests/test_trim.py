import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import REAL_AUDIO, TINY_GOLDEN, TINY_LABELS  # noqa: E402
from test_finetune import _make_tone_set  # noqa: E402

from hear_edge import HearEdge  # noqa: E402
from hear_edge.cli import main  # noqa: E402
from hear_edge.errors import ConfigError, InvalidArgumentError  # noqa: E402
from hear_edge.export import export_bundle  # noqa: E402
from hear_edge.reference.config import HearConfig  # noqa: E402
from hear_edge.reference.macs import acoustic_macs, acoustic_window_macs  # noqa: E402
from hear_edge.reference.model import load_checkpoint  # noqa: E402
from hear_edge.training.finetune import finetune  # noqa: E402
from hear_edge.training.trim import TrimMasks, UnitGates, parameter_count, remove_masked_units, trim  # noqa: E402

# Layer 0 keeps heads 1 and 3 and no FFN channel; layer 1 keeps no head and half its channels:
# both kinds of vanished sublayer and both kinds of partial one.
KEPT = {"heads": [[1, 3], []], "channels": [[], list(range(0, 64, 2))]}


def _waves(seconds=(8.0, 5.0), seed=0):
    generator = torch.Generator().manual_seed(seed)
    samples = int(max(seconds) * 16000)
    waves = torch.randn(len(seconds), 1, samples, generator=generator) * 0.1
    return waves, torch.tensor([int(s * 16000) for s in seconds])


def _masked_tiny():
    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    masks = TrimMasks(model)
    masks.set_kept_units(KEPT)
    return model, masks


def test_masked_model_with_every_gate_open_equals_the_untrimmed_model():
    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    waves, lengths = _waves()
    with torch.no_grad():
        reference = model(waves, lengths)
        masks = TrimMasks(model)
        assert masks.sparsity() == 0.0
        gated = model(waves, lengths)
    assert (gated - reference).abs().max().item() <= 1e-5


def test_physically_trimmed_model_equals_the_masked_model_and_reloads_by_shape(tmp_path):
    model, masks = _masked_tiny()
    waves, lengths = _waves()
    with torch.no_grad():
        untrimmed_free = load_checkpoint(TINY_GOLDEN / "state_dict.pt")(waves, lengths)
        masked = model(waves, lengths)
        assert (masked - untrimmed_free).abs().max().item() > 1e-2  # the gates really change the output
        trimmed = remove_masked_units(model, masks)
        assert (trimmed(waves, lengths) - masked).abs().max().item() <= 1e-4
    torch.save(trimmed.state_dict(), tmp_path / "trimmed.pt")
    reloaded = load_checkpoint(tmp_path / "trimmed.pt")  # every size from the tensor shapes
    assert reloaded.config.acoustic_model.layer_attention_heads == [2, 0]
    assert reloaded.config.acoustic_model.layer_intermediate_sizes == [0, 32]
    with torch.no_grad():
        assert (reloaded(waves, lengths) - masked).abs().max().item() <= 1e-4
    layers = reloaded.acoustic_model.contextual_encoder.layers
    assert tuple(layers[0].self_attn.linear_q.weight.shape) == (16, 32)
    assert tuple(layers[1].ffn.output_dense.weight.shape) == (32, 32)
    # the shared relative-position tables stay whole
    assert tuple(layers[1].self_attn.relative_position_k.positional_embedding.weight.shape) == (600, 8)
    assert parameter_count(reloaded.acoustic_model) < parameter_count(model.acoustic_model)


@pytest.mark.slow
def test_exported_trimmed_graphs_match_the_masked_model_and_carry_smaller_matrices(tmp_path):
    onnx = pytest.importorskip("onnx")
    model, masks = _masked_tiny()
    trimmed = remove_masked_units(model, masks)
    torch.save(trimmed.state_dict(), tmp_path / "trimmed.pt")
    bundle = tmp_path / "trimmed.hearedge"
    export_bundle(tmp_path / "trimmed.pt", bundle, labels=TINY_LABELS, precisions=["fp32"], calibration=REAL_AUDIO)
    waves, lengths = _waves(seconds=(8.0,), seed=4)
    with torch.no_grad():
        masked = model(waves, lengths)[0].numpy()
    for backend in ("onnx", "litert"):
        runtime = HearEdge.load(bundle, backend=backend, precision="fp32")
        logits = runtime.classify(waves[0, 0].numpy(), 16000).logits
        assert np.abs(logits - masked).max() <= 1e-4, backend
    graph = onnx.load(str(bundle / "acoustic_window.fp32.onnx")).graph
    shapes = sorted(tuple(t.dims) for t in graph.initializer if len(t.dims) == 2)
    # attention of layer 0: 2 heads x 8 wide = 16 rows; FFN of layer 1: 32 channels; nothing 64 wide is left
    assert (16, 32) in shapes or (32, 16) in shapes
    assert not any(64 in s for s in shapes)
    gate_sized = [t for t in graph.initializer if tuple(t.dims) in ((4,), (64,))]
    assert not gate_sized  # no mask vectors left to multiply by


def test_sparsity_loss_and_straight_through_gradient():
    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    masks = TrimMasks(model)
    # every gate starts open, m in [0.5, 1.5]; the loss steers the mean over modules of mean sigmoid
    assert all(g.logits.min() >= 0.5 and g.logits.max() <= 1.5 for g in (*masks.heads, *masks.channels))
    density = np.mean([torch.sigmoid(g.logits).mean().item() for g in (*masks.heads, *masks.channels)])
    assert masks.sparsity_loss(0.3, 100.0).item() == pytest.approx(100.0 * (density - 0.7) ** 2, rel=1e-5)
    waves, lengths = _waves(seconds=(2.0, 2.0))
    model(waves, lengths).sum().backward()
    for gates in (*masks.heads, *masks.channels):
        assert gates.logits.grad is not None and gates.logits.grad.abs().sum() > 0
    gates = UnitGates(3)
    with torch.no_grad():
        gates.logits.copy_(torch.tensor([2.0, -0.5, 0.01]))
    assert gates().tolist() == [1.0, 0.0, 1.0]


def test_macs_follow_the_per_layer_sizes():
    full = HearConfig.from_json(TINY_GOLDEN / "config.json").to_dict()["acoustic_model"]
    same = {**full, "layer_attention_heads": [4, 4], "layer_intermediate_sizes": [64, 64]}
    assert acoustic_window_macs(same, 300) == acoustic_window_macs(full, 300)
    empty = {**full, "layer_attention_heads": [0, 0], "layer_intermediate_sizes": [0, 0]}
    assert acoustic_window_macs(empty, 300) == 300 * 2 * 128 * 32  # the conv front end alone
    assert acoustic_macs(empty, 10.0, 300, 50) < acoustic_macs(full, 10.0, 300, 50)


@pytest.fixture(scope="module")
def tone_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("trim_tones")
    _make_tone_set(root / "data")
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    result = finetune(root / "data", root / "model.pt", config=config, epochs=4, batch_size=8, learning_rate=3e-3,
                      seed=0, device="cpu", progress=False)
    return root / "data", result


def test_trimming_reaches_its_target_and_writes_an_exportable_checkpoint(tone_model, tmp_path):
    data, tuned = tone_model
    result = trim(tuned.checkpoint, data, tmp_path / "trimmed.pt", target_sparsity=0.5, config=tuned.config_file,
                  epochs=8, batch_size=4, mask_learning_rate=0.05, seed=0, device="cpu", progress=False)
    assert abs(result.sparsity - 0.5) <= 0.15, result.history
    assert result.acoustic_parameters[1] < result.acoustic_parameters[0]
    assert result.acoustic_macs_10s[1] < result.acoustic_macs_10s[0]
    assert [h["epoch"] for h in result.history] == list(range(1, len(result.history) + 1))
    model = load_checkpoint(result.checkpoint, result.config_file)
    assert model.config.acoustic_model.layer_attention_heads == result.kept_heads
    assert result.labels_file.read_text().split() == ["high", "low", "noise"]
    again = trim(tuned.checkpoint, data, tmp_path / "again.pt", target_sparsity=0.5, config=tuned.config_file,
                 epochs=len(result.history), batch_size=4, mask_learning_rate=0.05, seed=0, device="cpu",
                 progress=False)
    assert again.kept_units == result.kept_units  # deterministic for a seed


def test_trim_refuses_a_target_outside_zero_one(tone_model, tmp_path):
    data, tuned = tone_model
    with pytest.raises(InvalidArgumentError, match=r"target_sparsity must be between 0 and 1 .* got 1.5"):
        trim(tuned.checkpoint, data, tmp_path / "t.pt", target_sparsity=1.5, device="cpu")


def test_trim_refuses_a_head_for_other_labels(tone_model, tmp_path):
    data, _ = tone_model
    with pytest.raises(InvalidArgumentError, match=r"head has 5 classes but the data has 3 labels"):
        trim(TINY_GOLDEN / "state_dict.pt", data, tmp_path / "t.pt", epochs=1, device="cpu", progress=False)


def test_config_refuses_per_layer_sizes_that_do_not_fit():
    data = json.loads((TINY_GOLDEN / "config.json").read_text())
    data["acoustic_model"]["layer_attention_heads"] = [4, 5]
    with pytest.raises(ConfigError, match=r"layer_attention_heads must list 2 integers between 0 and 4"):
        HearConfig.from_dict(data)


def test_untrimmed_config_stays_in_the_official_layout():
    assert "layer_attention_heads" not in HearConfig().to_dict()["acoustic_model"]


def test_cli_trim_reports_a_bad_target(tone_model, tmp_path, capsys):
    data, tuned = tone_model
    status = main(["trim", str(tuned.checkpoint), "--data", str(data), "-o", str(tmp_path / "t.pt"),
                   "--target-sparsity", "0"])
    assert status == 2
    assert "target_sparsity must be between 0 and 1" in capsys.readouterr().err


def test_the_papers_sigmoid_loss_is_met_with_every_gate_open_and_the_gate_loss_is_not():
    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    masks = TrimMasks(model)
    with torch.no_grad():
        for gates in (*masks.heads, *masks.channels):
            gates.logits.fill_(float(np.log(0.7 / 0.3)))  # sigmoid 0.7 everywhere: every gate open
    assert masks.sparsity() == 0.0
    assert masks.sparsity_loss(0.3, 100.0, "sigmoid").item() == pytest.approx(0.0, abs=1e-8)
    assert masks.sparsity_loss(0.3, 100.0, "gates").item() == pytest.approx(100.0 * 0.3 ** 2, rel=1e-6)


def test_cli_trim_writes_an_exportable_checkpoint(tone_model, tmp_path, capsys):
    data, tuned = tone_model
    status = main(["trim", str(tuned.checkpoint), "--data", str(data), "-o", str(tmp_path / "t.pt"),
                   "--config", str(tuned.config_file), "--epochs", "1", "--batch-size", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert status == 0 and "kept heads per layer" in out and "hear-edge export" in out
    assert load_checkpoint(tmp_path / "t.pt", tmp_path / "t.config.json").decoder.out.out_features == 3


def test_trim_refuses_an_unknown_sparsity_measure(tone_model, tmp_path):
    data, tuned = tone_model
    with pytest.raises(InvalidArgumentError, match=r"sparsity_measure must be 'gates' or 'sigmoid', got 'hard'"):
        trim(tuned.checkpoint, data, tmp_path / "t.pt", sparsity_measure="hard", device="cpu")
