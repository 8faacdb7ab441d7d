"""Load and stream rules of issue 15 item 9, torch-free on the shipped tiny bundle (onnx fp32 + int8)."""

import hashlib
import json
import shutil
from pathlib import Path
import threading

import numpy as np
import pytest

from conftest import REPO_ROOT
from hear_edge import HearEdge
from hear_edge.bundle import manifest as bundle_module
from hear_edge.bundle.manifest import CHECKSUM_NAME
from hear_edge.errors import BundleError

TINY = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"


def _rewrite(copy, change):
    data = json.loads((copy / "manifest.json").read_text())
    change(data)
    raw = (json.dumps(data, indent=2) + "\n").encode()
    (copy / "manifest.json").write_bytes(raw)
    (copy / CHECKSUM_NAME).write_text(hashlib.sha256(raw).hexdigest() + "\n")


def _int8_only(tmp_path, passed: bool):
    copy = tmp_path / "int8.hearedge"
    shutil.copytree(TINY, copy)

    def change(data):
        data["graphs"] = [g for g in data["graphs"] if g["precision"] == "int8"]
        data["parity"]["results"] = {"onnx/int8": {**data["parity"]["results"]["onnx/int8"], "passed": passed}}
        data["parity"]["passed"] = passed
    _rewrite(copy, change)
    return copy


def test_auto_precision_refuses_int8_graphs_that_failed_their_gate(tmp_path):
    copy = _int8_only(tmp_path, passed=False)
    with pytest.raises(BundleError, match=r"only onnx int8 graphs, and they failed their parity gate.*"
                                          r"precision='int8'"):
        HearEdge.load(copy)
    assert HearEdge.load(copy, precision="int8").precision == "int8"  # forced: the user's call


def test_auto_precision_takes_int8_graphs_that_passed(tmp_path):
    assert HearEdge.load(_int8_only(tmp_path, passed=True)).precision == "int8"


def test_load_hashes_only_the_two_chosen_graphs_once(monkeypatch):
    hashed = []
    real = bundle_module._sha256_finding
    monkeypatch.setattr(bundle_module, "_sha256_finding", lambda path, find: hashed.append(Path(path).name) or real(path, find))
    HearEdge.load(TINY, backend="onnx", precision="fp32")
    assert sorted(hashed) == ["acoustic_window.fp32.onnx", "task.fp32.onnx"]


def test_a_read_checks_the_schema_version_once(monkeypatch):
    checked = []
    real = bundle_module.check_schema_version
    monkeypatch.setattr(bundle_module, "check_schema_version", lambda data, source: checked.append(source) or
                        real(data, source))
    bundle_module.read_manifest(TINY, verify_hashes=False)
    assert len(checked) == 1
    bundle_module.Manifest.from_dict(json.loads((TINY / "manifest.json").read_text()))  # a dict alone: checked too
    assert len(checked) == 2


def test_a_damaged_graph_of_another_variant_does_not_block_load_but_its_own(tmp_path):
    copy = tmp_path / "b.hearedge"
    shutil.copytree(TINY, copy)
    data = bytearray((copy / "task.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "task.int8.onnx").write_bytes(bytes(data))
    assert HearEdge.load(copy, precision="fp32").precision == "fp32"
    with pytest.raises(BundleError, match=r"task\.int8\.onnx fails its hash"):
        HearEdge.load(copy, precision="int8")


class _HookLock:
    """A lock that runs `on_release` once, right after a release: what another thread could do there."""

    def __init__(self):
        self.inner, self.on_release = threading.Lock(), None

    def __enter__(self):
        self.inner.acquire()

    def __exit__(self, *exc):
        self.inner.release()
        hook, self.on_release = self.on_release, None
        if hook:
            hook()


def test_flush_resets_under_the_lock_so_a_chunk_sent_right_after_it_is_kept():
    model = HearEdge.load(TINY, backend="onnx", precision="fp32")
    stream = model.create_stream(hop_seconds=0.5, context_seconds=1.0)
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    assert len(stream.accept_waveform(audio[:12000], 16000)) == 1
    stream._lock = _HookLock()
    stream._lock.on_release = lambda: stream.accept_waveform(audio[:4800], 16000)  # lands as flush lets go
    assert len(stream.flush()) == 1  # the 0.75 s tail
    # The 0.3 s that arrived after the flush belong to the new stream; a reset after the lock was
    # released would have erased them.
    later = stream.flush()
    assert len(later) == 1 and later[0].start_s == 0.0 and later[0].end_s == 0.3
