"""The segment planner (hear_edge.signal.segments): one rule, read from the bundle's max_task_frames, used by
classify, embed, streams, the bench and `hear-edge info`. Torch-free: runs on the shipped tiny bundle."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from hear_edge import HearEdge
from hear_edge.bundle.manifest import CHECKSUM_NAME
from hear_edge.errors import BundleError, InvalidArgumentError, InvalidAudioError
from hear_edge.signal.segments import last_segment_start, segment_samples, split_segments

TINY = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"


def _frames(samples: int, hop: int = 160) -> int:
    return (samples // hop + 1) // 2  # acoustic frames of a clip, as the frontend and the model count them


@pytest.mark.parametrize("max_task_frames", [1, 7, 250, 1500, 3000])
def test_a_segment_is_the_longest_frame_grid_length_within_max_task_frames(max_task_frames):
    segment = segment_samples(max_task_frames, 160)
    assert segment % 320 == 0
    assert _frames(segment) <= max_task_frames
    assert _frames(segment + 320) > max_task_frames  # one more acoustic frame would not fit


def _spans(total: int, segment: int, block: int | None = None) -> list[tuple[int, int]]:
    audio = np.zeros(total)
    block = block or total
    return [(start, start + len(piece)) for start, piece in
            split_segments((audio[i:i + block] for i in range(0, total, block)), segment, 320)]


def test_the_official_task_model_gives_30_second_segments():
    assert segment_samples(1500, 160) == 30 * 16000
    assert _spans(70 * 16000, 480000) == [(0, 480000), (480000, 960000), (640000, 1120000)]
    # The last start is snapped UP to the 20 ms grid: never longer than a segment.
    total = 70 * 16000 + 100
    assert _spans(total, 480000)[-1] == (-(-(total - 480000) // 320) * 320, total)


@pytest.mark.parametrize("total", [1, 999, 80000, 80001, 160000, 200123, 401234])
@pytest.mark.parametrize("block", [1000, 65536, 10 ** 6])
def test_split_segments_cuts_any_block_stream_alike(total, block):
    audio = np.arange(total, dtype=np.float64)
    pieces = list(split_segments((audio[i:i + block] for i in range(0, total, block)), 80000, 320))
    spans = [(start, start + len(piece)) for start, piece in pieces]
    assert spans == _spans(total, 80000)  # as one block
    full = total // 80000  # whole segments, then (if any audio is left) the final one ending at the end
    tail = [(last_segment_start(total, 80000, 320), total)] if full and total % 80000 else []
    assert spans == ([(i * 80000, (i + 1) * 80000) for i in range(full)] + tail if full else [(0, total)])
    for start, piece in pieces:
        np.testing.assert_array_equal(piece, audio[start:start + len(piece)])
        assert len(piece) <= 80000 and start % 320 == 0


def test_split_segments_refuses_no_audio():
    with pytest.raises(InvalidAudioError, match="empty"):
        list(split_segments(iter([np.zeros(0)]), 80000, 320))


def _bundle_with_max_task_frames(tmp_path, frames: int):
    copy = tmp_path / f"max{frames}.hearedge"
    shutil.copytree(TINY, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["max_task_frames"] = frames
    if data.get("streaming"):  # the default stream must fit one segment of the shorter Task Model
        data["streaming"]["context_seconds"] = min(data["streaming"]["context_seconds"], frames / 50)
    raw = (json.dumps(data, indent=2) + "\n").encode()
    (copy / "manifest.json").write_bytes(raw)
    (copy / CHECKSUM_NAME).write_text(hashlib.sha256(raw).hexdigest() + "\n")
    return copy


def test_classify_and_embed_segment_by_the_bundles_max_task_frames(tmp_path):
    model = HearEdge.load(_bundle_with_max_task_frames(tmp_path, 250), backend="onnx", precision="fp32")
    assert model.segment_samples == 5 * 16000
    audio = (0.1 * np.random.default_rng(3).standard_normal(12 * 16000)).astype(np.float32)
    result = model.classify(audio, 16000, max_results=None)
    assert [(s.start_s, s.end_s) for s in result.segments] == [(0.0, 5.0), (5.0, 10.0), (7.0, 12.0)]
    for segment in result.segments:
        alone = model.classify(audio[int(segment.start_s * 16000):int(segment.end_s * 16000)], 16000)
        np.testing.assert_allclose(segment.logits, alone.logits, atol=1e-5)
    embeddings = model.embed(audio, 16000)
    assert len(embeddings.frame_times_s) == _frames(len(audio))  # every frame once, overlap not repeated
    np.testing.assert_allclose(np.diff(embeddings.frame_times_s), 0.02, atol=1e-9)
    # A stream's context is at most one segment of this Task Model.
    model.create_stream(hop_seconds=1.0, context_seconds=5.0)
    with pytest.raises(InvalidArgumentError, match="between 0.05 and 5.0 s"):
        model.create_stream(hop_seconds=1.0, context_seconds=6.0)


def test_the_official_length_still_gives_30_second_segments():
    model = HearEdge.load(TINY, backend="onnx", precision="fp32")
    assert model.manifest.max_task_frames == 1500 and model.segment_samples == 30 * 16000


def test_a_manifest_stream_context_longer_than_a_segment_is_refused(tmp_path):
    copy = _bundle_with_max_task_frames(tmp_path, 250)
    data = json.loads((copy / "manifest.json").read_text())
    data["streaming"] = {"clip_seconds": None, "context_seconds": 6.0, "hop_seconds": 1.0}
    raw = (json.dumps(data, indent=2) + "\n").encode()
    (copy / "manifest.json").write_bytes(raw)
    (copy / CHECKSUM_NAME).write_text(hashlib.sha256(raw).hexdigest() + "\n")
    with pytest.raises(BundleError, match="streaming.context_seconds"):
        HearEdge.load(copy)


@pytest.mark.parametrize("frames, seconds", [(250, "5"), (1500, "30")])
def test_info_prints_the_segment_length_classify_uses(tmp_path, frames, seconds):
    bundle = TINY if frames == 1500 else _bundle_with_max_task_frames(tmp_path, frames)
    out = subprocess.run([sys.executable, "-m", "hear_edge.cli", "info", str(bundle)], capture_output=True,
                         text=True, timeout=120, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert f"classify cuts clips over {seconds} s into segments" in out.stdout
    listed = subprocess.run([sys.executable, "-m", "hear_edge.cli", "info", str(bundle), "--json"],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert json.loads(listed.stdout)["segment_seconds"] == float(seconds)
