"""The HEAR benchmark API: a torch Module, timestamps on the 20 ms grid past 30 s, empty batches."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import BLOCK_TORCH, REPO_ROOT
from hear_edge import HearEdge, hear_api
from hear_edge.errors import InvalidAudioError

BUNDLE = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"


@pytest.fixture(scope="module")
def embedder():
    """The API's model without the torch wrapper: what its functions use, torch-free."""
    return hear_api.HearEdgeEmbedder(HearEdge.load(BUNDLE, backend="onnx", precision="fp32"))


@pytest.mark.parametrize("seconds", [30.01, 61.23])
def test_timestamps_past_30_seconds_step_20_ms_everywhere(embedder, seconds):
    samples = round(seconds * 16000)
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, samples))).astype(np.float32)
    frames, timestamps = hear_api.get_timestamp_embeddings(audio, embedder)
    steps = np.diff(timestamps[0])
    assert np.abs(steps - 20.0).max() <= 1.0, steps[np.abs(steps - 20.0) > 1.0]
    assert timestamps[0, 0] == pytest.approx(5.0)
    # As many frames as one pass over the whole clip would give, the last within 20 ms of its end.
    assert frames.shape == (1, (samples // 160 + 1) // 2, 32) and timestamps.shape == frames.shape[:2]
    assert 1000 * seconds - 20 <= timestamps[0, -1] <= 1000 * seconds


def test_segments_of_long_clips_start_on_the_frame_grid_and_cover_the_clip(embedder):
    audio = (0.1 * np.random.default_rng(1).standard_normal(round(61.23 * 16000))).astype(np.float32)
    result = embedder.model.classify(audio, 16000)
    starts = [s.start_s for s in result.segments]
    assert starts[:2] == [0.0, 30.0] and len(starts) == 3
    assert all(abs(round(s / 0.02) * 0.02 - s) < 1e-9 for s in starts)
    assert result.segments[-1].end_s == pytest.approx(61.23)
    assert all(s.end_s - s.start_s <= 30.0 for s in result.segments)


def test_an_empty_batch_gives_empty_arrays_of_the_right_shape(embedder):
    frames, timestamps = hear_api.get_timestamp_embeddings(np.zeros((0, 16000), np.float32), embedder)
    one_frames, one_timestamps = hear_api.get_timestamp_embeddings(np.zeros((1, 16000), np.float32) + 0.01,
                                                                   embedder)
    assert frames.shape == (0, *one_frames.shape[1:]) and timestamps.shape == (0, one_timestamps.shape[1])
    assert frames.dtype == timestamps.dtype == np.float32
    assert hear_api.get_scene_embeddings(np.zeros((0, 16000), np.float32), embedder).shape == (0, 96)
    long_frames, _ = hear_api.get_timestamp_embeddings(np.zeros((0, round(61.23 * 16000)), np.float32), embedder)
    assert long_frames.shape == (0, (round(61.23 * 16000) // 160 + 1) // 2, 32)


def test_audio_that_is_not_a_batch_is_a_typed_error(embedder):
    with pytest.raises(InvalidAudioError, match=r"audio must be \(n_sounds, n_samples\), got shape \(16000,\)"):
        hear_api.get_scene_embeddings(np.zeros(16000, np.float32), embedder)


def test_load_model_returns_a_torch_module_with_the_hear_attributes():
    torch = pytest.importorskip("torch")
    model = hear_api.load_model(str(BUNDLE), backend="onnx", precision="fp32")
    assert isinstance(model, torch.nn.Module)
    assert (model.sample_rate, model.scene_embedding_size, model.timestamp_embedding_size) == (16000, 96, 32)
    audio = torch.zeros(2, 16000) + 0.01
    frames, timestamps = hear_api.get_timestamp_embeddings(audio, model)
    assert isinstance(frames, torch.Tensor) and frames.shape == (2, 50, 32) and timestamps.shape == (2, 50)
    scenes = hear_api.get_scene_embeddings(audio, model)
    assert isinstance(scenes, torch.Tensor) and scenes.shape == (2, 96)
    empty, _ = hear_api.get_timestamp_embeddings(torch.zeros(0, 16000), model)
    assert isinstance(empty, torch.Tensor) and empty.shape == (0, 50, 32)


NO_TORCH = BLOCK_TORCH + """
import sys
from hear_edge import hear_api
from hear_edge.errors import HearEdgeError
try:
    hear_api.load_model(sys.argv[1])
except HearEdgeError as error:
    print(error)
print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))
"""


def test_without_torch_load_model_names_what_to_install_and_nothing_imports_torch():
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(BUNDLE)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    message, modules = result.stdout.strip().splitlines()
    assert "returns a torch.nn.Module" in message and "pip install torch" in message
    assert modules == "[]"
