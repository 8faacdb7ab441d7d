import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_CASES, TINY_GOLDEN  # noqa: E402
from hear_edge.errors import CheckpointError, ClipTooLongError, ConfigError  # noqa: E402
from hear_edge.reference.model import (HEAR, POSITION_BLOCK_FRAMES, MultiHeadSelfAttentionWithRelativePosition,  # noqa: E402
                                       infer_config, load_checkpoint, reference_outputs, relative_position_rows)
from hear_edge.signal.frontend import compute_features  # noqa: E402

LOGIT_BOUND = 1e-4
FRONTEND_FED_BOUND = 1e-3


def _load(case, golden_dir=TINY_GOLDEN):
    return np.load(golden_dir / f"{case}.npz")


def _logits(model, wav):
    return reference_outputs(model, wav, acoustic=False)[0]  # what golden, the parity gate and the bench run


def _frontend_fed_logits(model, wav):
    log_mel, log_power = compute_features(wav)
    with torch.no_grad():
        hidden, lengths = model.forward_features(torch.from_numpy(log_mel)[None],
                                                 torch.from_numpy(log_power)[None],
                                                 torch.tensor([log_mel.shape[1]]))
        return model.decoder(hidden, lengths)[0].numpy()


@pytest.fixture(scope="module", params=["with_config", "config_free"])
def tiny_model(request):
    config = TINY_GOLDEN / "config.json" if request.param == "with_config" else None
    return load_checkpoint(TINY_GOLDEN / "state_dict.pt", config)


@pytest.mark.parametrize("case", TINY_CASES)
def test_tiny_logits_and_stages_match_official(tiny_model, case):
    golden = _load(case)
    assert np.abs(_logits(tiny_model, golden["wav"]) - golden["logits"]).max() <= LOGIT_BOUND
    assert np.abs(_frontend_fed_logits(tiny_model, golden["wav"]) - golden["logits"]).max() <= FRONTEND_FED_BOUND
    waveform = torch.from_numpy(golden["wav"])[None]
    with torch.no_grad():
        log_mel, frames, log_power = tiny_model.preprocessor(waveform, torch.tensor([waveform.shape[-1]]))
        acoustic, lengths = tiny_model.acoustic_model(log_mel, frames)
        mixed = tiny_model.spectrogram_mixture(acoustic, log_power)
        task = tiny_model.task_model(mixed, lengths)
    assert int(frames[0]) == int(golden["num_frames"]) and int(lengths[0]) == int(golden["num_acoustic_frames"])
    for produced, key in ((acoustic, "acoustic_hidden"), (mixed, "mixture"), (task, "task_hidden")):
        assert np.abs(produced[0].numpy() - golden[key]).max() <= LOGIT_BOUND, key


@pytest.mark.parametrize("use_config", [True, False])
def test_full_size_logits_match_official(full_golden, use_config):
    model = load_checkpoint(full_golden / "state_dict.pt", full_golden / "config.json" if use_config else None)
    assert sum(p.numel() for p in model.parameters()) == 15_097_394
    golden = _load("clip_10s", full_golden)
    assert np.abs(_logits(model, golden["wav"]) - golden["logits"]).max() <= LOGIT_BOUND
    assert np.abs(_frontend_fed_logits(model, golden["wav"]) - golden["logits"]).max() <= FRONTEND_FED_BOUND


def test_config_inference_reads_every_size_from_tensors():
    state = torch.load(TINY_GOLDEN / "state_dict.pt", weights_only=True)
    inferred = infer_config(state).to_dict()
    official = json.loads((TINY_GOLDEN / "config.json").read_text())
    for section, fields in official.items():
        for name, value in fields.items():
            assert inferred[section][name] == value, (section, name)


def test_acoustic_only_checkpoint_loads_with_a_new_head():
    model = load_checkpoint(TINY_GOLDEN / "acoustic_model_state_dict.pt", num_classes=7)
    assert model.decoder.out.out_features == 7
    golden = _load("odd_17s")
    waveform = torch.from_numpy(golden["wav"])[None]
    with torch.no_grad():
        log_mel, frames, _ = model.preprocessor(waveform, torch.tensor([waveform.shape[-1]]))
        acoustic, _ = model.acoustic_model(log_mel, frames)
        assert model(waveform, torch.tensor([waveform.shape[-1]])).shape == (1, 7)
    assert np.abs(acoustic[0].numpy() - golden["acoustic_hidden"]).max() <= LOGIT_BOUND


def test_acoustic_only_checkpoint_needs_num_classes():
    with pytest.raises(CheckpointError, match=r"acoustic-model-only checkpoint.*num_classes=N"):
        load_checkpoint(TINY_GOLDEN / "acoustic_model_state_dict.pt")


def test_num_classes_that_disagrees_with_the_head_is_an_error():
    with pytest.raises(CheckpointError, match=r"num_classes=3 but the checkpoint's head has 5 classes"):
        load_checkpoint(TINY_GOLDEN / "state_dict.pt", num_classes=3)


def test_wrong_shaped_checkpoint_names_the_tensor(tmp_path):
    state = torch.load(TINY_GOLDEN / "state_dict.pt", weights_only=True)
    state["spectrogram_mixture.gate_linear.weight"] = torch.zeros(32, 31)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"mis-shaped.*spectrogram_mixture\.gate_linear\.weight: "
                                              r"checkpoint \(32, 31\), model \(32, 32\)"):
        load_checkpoint(path, TINY_GOLDEN / "config.json")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = torch.load(TINY_GOLDEN / "state_dict.pt", weights_only=True)
    del state["decoder.batch_norm.running_var"]
    state["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys \['decoder\.batch_norm\.running_var'\]; "
                                              r"unexpected keys \['decoder\.extra\.weight'\]"):
        load_checkpoint(state)


def test_config_that_disagrees_with_the_tensors(tmp_path):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    config["acoustic_model"]["num_transformer_layers"] = 3
    with pytest.raises(CheckpointError, match=r"missing keys \['acoustic_model\.contextual_encoder\.layers\.2"):
        load_checkpoint(TINY_GOLDEN / "state_dict.pt", config)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    data = (TINY_GOLDEN / "state_dict.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot be read: it is truncated, corrupt or not a torch.save"):
        load_checkpoint(path)


def test_missing_checkpoint_file():
    with pytest.raises(CheckpointError, match=r"does not exist"):
        load_checkpoint("/nonexistent/hear.pt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"acoustic_model.x": _RunsCode(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"loading it would run code.*weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()


def test_not_a_hear_checkpoint():
    with pytest.raises(CheckpointError, match=r"no Acoustic Model transformer layers"):
        load_checkpoint({"foo.weight": torch.zeros(2)}, num_classes=2)


def test_malformed_config_is_a_clear_error(tmp_path):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    config["task_model"]["hidden_sise"] = 32
    with pytest.raises(ConfigError, match=r"section 'task_model' has unknown field\(s\) \['hidden_sise'\]"):
        load_checkpoint(TINY_GOLDEN / "state_dict.pt", config)
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"is not valid JSON"):
        load_checkpoint(TINY_GOLDEN / "state_dict.pt", path)


def test_clips_over_30_seconds_are_refused():
    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    assert model.max_samples == 480159
    model(torch.zeros(1, 1, model.max_samples), torch.tensor([model.max_samples]))
    too_long = model.max_samples + 1
    with pytest.raises(ClipTooLongError, match=r"30\.01 s; the reference model takes at most 480159 samples"):
        model(torch.zeros(1, 1, too_long), torch.tensor([too_long]))


def _random_attention(seed: int, std: float) -> MultiHeadSelfAttentionWithRelativePosition:
    """A 4-head, 32-wide attention with random weights of `std` (no dropout)."""
    torch.manual_seed(seed)
    attention = MultiHeadSelfAttentionWithRelativePosition(32, 4, 0.0, 300).eval()
    with torch.no_grad():
        for p in attention.parameters():
            p.normal_(0, std)
    return attention


@pytest.mark.parametrize("length, valid", [(2, 2), (3, 2), (150, 150), (300, 300), (300, 251), (37, 5)])
def test_skew_relative_attention_equals_the_official_gather(length, valid):
    attention = _random_attention(0, 0.5)
    with torch.no_grad():
        hidden = torch.randn(2, length, 32)
        mask = torch.arange(length)[None, :] < torch.tensor([length, valid])[:, None]
        skew = attention(hidden, mask)
        attention.position_mode = "gather"
        gather = attention(hidden, mask)
    assert (skew - gather).abs().max() <= 1e-5


@pytest.mark.parametrize("length", [1, 2, 3, 50, 300])
@pytest.mark.parametrize("mode", ["skew", "gather"])
def test_unbatched_attention_equals_the_batched_one(length, mode):
    # The exported window graph runs unbatched (frames, hidden) states; the reference runs (B, T, H).
    attention = _random_attention(1, 0.5)
    attention.position_mode = mode
    with torch.no_grad():
        hidden = torch.randn(1, length, 32)
        batched, unbatched = attention(hidden, None)[0], attention(hidden[0], None)
    assert unbatched.shape == (length, 32)
    assert (batched - unbatched).abs().max() <= 1e-5


@pytest.mark.parametrize("length, valid", [(1, 1), (2, 2), (49, 49), (50, 50), (51, 40), (173, 173), (250, 250),
                                           (299, 299), (300, 300), (300, 251)])
def test_query_blocks_equal_the_official_gather(length, valid):
    # The exported window graphs run the attention in blocks of POSITION_BLOCK_FRAMES queries, each
    # against its T + B - 1 table rows; lengths off the block size pad the last block.
    # Weights of std 0.2 give outputs of magnitude 2-3, as the trained model's; at 0.5 (magnitude 16)
    # fp32 rounding alone moves the official gather itself by 4e-5 from float64.
    attention = _random_attention(2, 0.2)
    with torch.no_grad():
        hidden = torch.randn(length, 32)
        mask = torch.arange(length) < valid
        rows = relative_position_rows(length, 300)
        assert rows.shape == (-(-length // POSITION_BLOCK_FRAMES), length + POSITION_BLOCK_FRAMES - 1)
        blocked = attention(hidden, mask, rows)
        attention.position_mode = "gather"
        gather = attention(hidden[None], mask[None])[0]
    assert blocked.shape == (length, 32)
    assert (blocked - gather).abs().max() <= 1e-5


def test_batched_forward_equals_single_clips():
    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    wav = _load("odd_17s")["wav"]
    single = _logits(model, wav)
    with torch.no_grad():
        batch = model(torch.from_numpy(np.stack([wav, wav])), torch.tensor([wav.shape[-1]] * 2))
    assert np.abs(batch.numpy() - single).max() <= 1e-5


def test_hear_state_dict_keys_are_the_official_layout():
    state = torch.load(TINY_GOLDEN / "state_dict.pt", weights_only=True)
    model = HEAR(infer_config(state))
    assert set(model.state_dict()) == set(state)


def test_reference_outputs_takes_mono_or_channels_and_gives_the_acoustic_frames(tiny_model):
    wav = _load("short_1s")["wav"]  # (1, samples)
    logits, acoustic = reference_outputs(tiny_model, wav)
    np.testing.assert_allclose(logits, _load("short_1s")["logits"], atol=LOGIT_BOUND)
    np.testing.assert_array_equal(reference_outputs(tiny_model, wav[0], acoustic=False)[0], logits)
    assert acoustic.shape == ((wav.shape[-1] // 160 + 1) // 2, tiny_model.config.acoustic_model.hidden_size)
