import json

import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")

from conftest import TINY_GOLDEN  # noqa: E402
from hear_edge import HearEdge  # noqa: E402
from hear_edge.errors import CheckpointError, InvalidArgumentError  # noqa: E402
from hear_edge.export import export_bundle  # noqa: E402
from hear_edge.reference.model import load_checkpoint  # noqa: E402
from hear_edge.training.finetune import _initial_model, finetune  # noqa: E402
from hear_edge.training.toolkit import (balanced_batches, balanced_epoch_clips, read_labelled_folders,  # noqa: E402
                                       speed_perturb)


def _make_tone_set(root, per_class=12, seed=0):
    """Three easy classes: a low tone, a high tone, noise; at varied levels, lengths and phases."""
    rng = np.random.default_rng(seed)
    for label in ("low", "high", "noise"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            n = int(rng.uniform(0.6, 1.2) * 16000)
            t = np.arange(n) / 16000
            if label == "noise":
                wave = rng.standard_normal(n) * 0.2
            else:
                freq = rng.uniform(200, 400) if label == "low" else rng.uniform(3000, 5000)
                wave = 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + 0.01 * rng.standard_normal(n)
            soundfile.write(root / label / f"{i}.wav", (wave * rng.uniform(0.3, 1.0)).astype(np.float32), 16000)


@pytest.fixture(scope="module")
def tone_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    _make_tone_set(root)
    return root


@pytest.mark.slow
def test_finetuning_a_tiny_config_learns_and_exports(tone_set, tmp_path):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    output = tmp_path / "model.pt"
    result = finetune(tone_set, output, config=config, epochs=6, batch_size=8, learning_rate=3e-3, seed=0,
                      device="cpu", progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert result.best_val_accuracy >= 0.8 and output.is_file()
    assert result.labels_file.read_text().split() == ["high", "low", "noise"]
    model = load_checkpoint(output, result.config_file)
    assert model.decoder.out.out_features == 3
    bundle = tmp_path / "tones.hearedge"
    export_bundle(output, bundle, config=result.config_file, labels=result.labels_file, formats=["onnx"])
    runtime = HearEdge.load(bundle, precision="fp32")
    t = np.arange(16000) / 16000
    assert runtime.classify(0.3 * np.sin(2 * np.pi * 4000 * t), 16000).top.label == "high"
    assert runtime.classify(0.3 * np.sin(2 * np.pi * 300 * t), 16000).top.label == "low"


@pytest.mark.slow
def test_finetuning_is_deterministic_for_a_seed(tone_set, tmp_path):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    runs = [finetune(tone_set, tmp_path / f"{i}.pt", config=config, epochs=1, batch_size=8, seed=3, device="cpu",
                     progress=False) for i in range(2)]
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]
    first, second = (torch.load(r.checkpoint, weights_only=True) for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_finetuning_from_an_acoustic_model_file_with_a_frozen_backbone(tone_set, tmp_path):
    before = torch.load(TINY_GOLDEN / "acoustic_model_state_dict.pt", weights_only=True)
    result = finetune(tone_set, tmp_path / "m.pt", init=TINY_GOLDEN / "acoustic_model_state_dict.pt",
                      config=TINY_GOLDEN / "config.json", freeze_acoustic=True, epochs=1, batch_size=8,
                      device="cpu", progress=False)
    after = torch.load(result.checkpoint, weights_only=True)
    for key, value in before.items():
        assert torch.equal(after[f"acoustic_model.{key}"], value), key


def test_reading_labelled_folders(tone_set):
    data = read_labelled_folders(tone_set)
    assert data.labels == ["high", "low", "noise"] and len(data.clips) == 36
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in data.clips)


def test_frequency_warp_moves_the_spectrum_from_f_to_f_times_factor():
    from hear_edge.training.toolkit import _bin_centres_hz, _warp_frequency

    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    mel_hz, power_hz = _bin_centres_hz(model.preprocessor.n_fft)
    assert len(mel_hz) == 128 and len(power_hz) == 513 and np.all(np.diff(mel_hz) > 0)
    features = torch.zeros(2, 513, 3)
    features[:, 100] = 1.0  # 1562.5 Hz
    warped = _warp_frequency(features, torch.tensor([1.0, 1.1]), power_hz)
    assert torch.equal(warped[0], features[0])
    assert warped[1, :, 0].argmax().item() == 110  # 1718.75 Hz = 1.1 x 1562.5 Hz
    mel = torch.zeros(1, 128, 1)
    peak = int(np.argmin(np.abs(mel_hz - 1000)))
    mel[0, peak] = 1.0
    moved = _warp_frequency(mel, torch.tensor([1.2]), mel_hz)[0, :, 0].argmax().item()
    assert abs(mel_hz[moved] - 1.2 * mel_hz[peak]) < 0.05 * mel_hz[peak]


def test_speed_perturbation_gives_a_clip_the_same_samples_in_any_batch():
    rng = np.random.default_rng(0)
    clip, twin, other = (torch.from_numpy(rng.standard_normal(n).astype(np.float32)) for n in (16000, 16000, 12000))
    for factor in (0.8, 1.13, 1.25):
        among_equal = speed_perturb([clip, twin], [factor, 0.9])[0]  # a batch that could be stacked
        among_mixed = speed_perturb([clip, other], [factor, 0.9])[0]  # one that cannot
        assert torch.equal(among_equal, among_mixed), factor
        assert torch.equal(speed_perturb([clip], [factor])[0], among_equal), factor


def test_speed_perturbation_plays_faster_about_the_centre_at_the_same_length():
    ramp = torch.arange(101, dtype=torch.float32)  # sample t holds t, so the output shows where it read
    assert torch.equal(speed_perturb([ramp], [1.0])[0], ramp)
    assert torch.allclose(speed_perturb([ramp], [0.5])[0], 50 + (ramp - 50) * 0.5)
    inside = (ramp >= 25) & (ramp <= 75)  # at twice the speed only these read inside the clip
    assert torch.allclose(speed_perturb([ramp], [2.0])[0], torch.where(inside, 50 + (ramp - 50) * 2, 0.0))
    assert [tuple(c.shape) for c in speed_perturb([ramp, ramp[:50]], [1.2, 0.8])] == [(101,), (50,)]


@pytest.mark.slow
def test_finetuning_with_frequency_warp_is_deterministic(tone_set, tmp_path):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    runs = [finetune(tone_set, tmp_path / f"{i}.pt", config=config, epochs=1, batch_size=8, seed=5, device="cpu",
                     progress=False, frequency_warp=0.15) for i in range(2)]
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]


def test_finetune_refuses_a_backwards_speed_range(tone_set, tmp_path):
    from hear_edge.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"speed_range must be \(slowest, fastest\) .* got \(1.2, 0.8\)"):
        finetune(tone_set, tmp_path / "m.pt", speed_range=(1.2, 0.8), device="cpu")


def test_finetune_refuses_a_frequency_warp_out_of_range(tone_set, tmp_path):
    from hear_edge.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"frequency_warp must be between 0 and 0.5 .* got 0.7"):
        finetune(tone_set, tmp_path / "m.pt", frequency_warp=0.7, device="cpu")


@pytest.mark.slow
def test_cli_finetune_takes_the_augmentations(tone_set, tmp_path, capsys):
    from hear_edge.cli import main

    config = tmp_path / "tiny.config.json"
    config.write_text((TINY_GOLDEN / "config.json").read_text())
    status = main(["finetune", str(tone_set), "-o", str(tmp_path / "m.pt"), "--config", str(config), "--epochs", "1",
                   "--batch-size", "8", "--device", "cpu", "--spec-augment", "--speed-range", "0.9", "1.1",
                   "--frequency-warp", "0.1"])
    assert status == 0 and "best epoch 1" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "m.pt", tmp_path / "m.config.json").decoder.out.out_features == 3


@pytest.mark.parametrize("wrap", ["state_dict", "module."])
def test_init_reads_wrapped_and_prefixed_checkpoints_as_full_models(tmp_path, wrap):
    state = torch.load(TINY_GOLDEN / "state_dict.pt", map_location="cpu", weights_only=True)
    saved = {"state_dict": state} if wrap == "state_dict" else {f"module.{k}": v for k, v in state.items()}
    checkpoint = tmp_path / "wrapped.pt"
    torch.save(saved, checkpoint)
    # Taken as a full HEAR checkpoint (not an acoustic-only file): a 3-class head replaces the
    # 5-class one, and every other weight is the checkpoint's.
    model = _initial_model(checkpoint, None, ["a", "b", "c"])
    assert model.decoder.out.out_features == 3
    for key, value in model.state_dict().items():
        if not key.startswith("decoder.out."):
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


def test_balanced_batches_draw_every_label_equally_and_repeat_rare_ones_by_seed():
    targets = [0] * 50 + [1] * 7 + [2] * 23  # 80 clips, 26 per label per epoch
    batches = balanced_batches(targets, np.random.default_rng(3), 8)
    drawn = np.concatenate(batches)
    assert np.bincount(np.asarray(targets)[drawn]).tolist() == [26, 26, 26]
    assert len(set(drawn[np.asarray(targets)[drawn] == 0])) == 26  # a common label: a share, no repeats
    assert set(drawn[np.asarray(targets)[drawn] == 1]) == set(range(50, 57))  # a rare one: all, repeated
    again = balanced_batches(targets, np.random.default_rng(3), 8)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_a_balanced_epoch_counts_the_labels_that_have_clips():
    # labels 0, 1 and 3 of four: the epoch (and so the run's schedule) is 3 x 26, not 4 x 20
    targets = [0] * 50 + [1] * 7 + [3] * 23
    drawn = np.concatenate(balanced_batches(targets, np.random.default_rng(0), 8))
    assert balanced_epoch_clips(targets) == len(drawn) == 78


def test_a_balanced_run_resumes_only_as_a_balanced_run(tone_set, tmp_path):
    state = tmp_path / "state"
    finetune(tone_set, tmp_path / "m.pt", config=json.loads((TINY_GOLDEN / "config.json").read_text()), epochs=2,
             batch_size=8, seed=0, device="cpu", progress=False, checkpoint_dir=state, max_steps=2,
             balance_labels=True)
    with pytest.raises(InvalidArgumentError, match="balance_labels: True there, None now"):
        finetune(tone_set, tmp_path / "m.pt", config=json.loads((TINY_GOLDEN / "config.json").read_text()),
                 epochs=2, batch_size=8, seed=0, device="cpu", progress=False, checkpoint_dir=state, resume=True)


def test_an_init_head_keeps_its_rows_for_the_same_labels_in_the_data_s_order(tmp_path):
    state = torch.load(TINY_GOLDEN / "state_dict.pt", map_location="cpu", weights_only=True)
    checkpoint = tmp_path / "five.pt"
    torch.save(state, checkpoint)
    weight, bias = state["decoder.out.weight"], state["decoder.out.bias"]
    data_labels = ["a", "b", "c", "d", "e"]  # what sorted label folders give
    # No .labels.txt: kept as it is (with a warning), as before.
    kept = _initial_model(checkpoint, None, data_labels).decoder.out
    torch.testing.assert_close(kept.weight, weight, rtol=0, atol=0)
    # Trained on the same labels in another order: each label keeps its own row.
    checkpoint.with_suffix(".labels.txt").write_text("e\nd\nc\nb\na\n")
    reordered = _initial_model(checkpoint, None, data_labels).decoder.out
    torch.testing.assert_close(reordered.weight, weight.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(reordered.bias, bias.flip(0), rtol=0, atol=0)
    # Another task's labels, same count: a new head.
    checkpoint.with_suffix(".labels.txt").write_text("v\nw\nx\ny\nz\n")
    replaced = _initial_model(checkpoint, None, data_labels).decoder.out
    assert replaced.weight.shape == weight.shape and not torch.equal(replaced.weight, weight)


def test_init_refuses_a_checkpoint_that_would_run_code_with_a_typed_error(tmp_path):
    checkpoint = tmp_path / "code.pt"
    torch.save({"weights": torch.zeros(2), "extra": np.dtype("float32")}, checkpoint)  # not a plain state_dict
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        _initial_model(checkpoint, None, ["a", "b", "c"])


@pytest.mark.parametrize("epochs", [0, -1, 1.5])
def test_finetune_refuses_epochs_below_one_before_any_work(tone_set, tmp_path, epochs):
    output = tmp_path / "never.pt"
    with pytest.raises(InvalidArgumentError, match="epochs must be an int >= 1"):
        finetune(tone_set, output, epochs=epochs, device="cpu", progress=False)
    assert not any(tmp_path.iterdir())


def test_a_missing_or_thin_data_folder_is_a_data_folder_error(tmp_path):
    from hear_edge.errors import DataFolderError

    with pytest.raises(DataFolderError, match=r"data folder .*none does not exist"):
        read_labelled_folders(tmp_path / "none")
    (tmp_path / "only").mkdir()
    with pytest.raises(DataFolderError, match=r"needs at least two label folders .* found 1"):
        read_labelled_folders(tmp_path)


def _run_weights(result):
    return torch.load(result.checkpoint, weights_only=True)


@pytest.mark.slow
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tone_set, tmp_path):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    run = dict(config=config, epochs=2, batch_size=8, seed=6, device="cpu", progress=False, spec_augment=True,
               frequency_warp=0.1, precision="fp32")
    whole = finetune(tone_set, tmp_path / "whole.pt", checkpoint_dir=tmp_path / "whole", **run)
    # Stopped mid-epoch 1 (4 steps an epoch), after a state written at step 2 and at the stop.
    cut = finetune(tone_set, tmp_path / "cut.pt", checkpoint_dir=tmp_path / "cut", checkpoint_every=2, max_steps=3,
                   **run)
    assert not cut.finished and cut.steps == 3 and cut.history == []
    resumed = finetune(tone_set, tmp_path / "cut.pt", checkpoint_dir=tmp_path / "cut", resume=True, **run)
    assert resumed.finished and resumed.steps == whole.steps == 8
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    a, b = _run_weights(whole), _run_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    last_a, last_b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("whole", "cut"))
    assert all(torch.equal(last_a["model"][k], last_b["model"][k]) for k in last_a["model"])
    assert last_a["epoch"] == last_b["epoch"] == 3 and not list((tmp_path / "cut").glob("*.tmp"))


def test_resume_refuses_another_runs_settings_and_a_missing_state(tone_set, tmp_path):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    with pytest.raises(InvalidArgumentError, match="resume: .*last.pt does not exist; start the run without resume"):
        finetune(tone_set, tmp_path / "m.pt", config=config, checkpoint_dir=tmp_path / "run", resume=True,
                 device="cpu", progress=False)
    finetune(tone_set, tmp_path / "m.pt", config=config, checkpoint_dir=tmp_path / "run", max_steps=1, batch_size=8,
             device="cpu", progress=False)
    with pytest.raises(InvalidArgumentError, match=r"saved by a run with other settings \(batch_size: 8 there, 16 now"):
        finetune(tone_set, tmp_path / "m.pt", config=config, checkpoint_dir=tmp_path / "run", resume=True,
                 batch_size=16, device="cpu", progress=False)


def test_precision_auto_follows_the_cpu_flags_and_the_others_force_it(monkeypatch):
    from hear_edge.training import toolkit as training

    cpu = torch.device("cpu")
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    assert training.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    assert training.resolve_precision("auto", cpu) == "fp32"
    assert training.resolve_precision("bf16", cpu) == "bf16" and training.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(InvalidArgumentError, match=r"precision must be one of \['auto', 'bf16', 'fp32'\], got 'fp16'"):
        training.resolve_precision("fp16", cpu)


@pytest.mark.slow
def test_bf16_training_is_deterministic_and_keeps_fp32_weights(tone_set, tmp_path):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    runs = [finetune(tone_set, tmp_path / f"{i}.pt", config=config, epochs=1, batch_size=8, seed=3, device="cpu",
                     progress=False, precision="bf16") for i in range(2)]
    assert runs[0].precision == "bf16"
    first, second = (_run_weights(r) for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert {v.dtype for k, v in first.items() if v.is_floating_point()} == {torch.float32}
