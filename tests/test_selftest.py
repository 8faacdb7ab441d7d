"""The self-test at load (hear_edge.bundle.selftest): a runtime that computes a graph wrong is refused.

Torch-free: probes are recorded here on the shipped tiny bundle's ONNX graphs (as export records
them), and the shipped default bundle carries its own.
"""

import hashlib
import json
import logging
import shutil

import numpy as np
import pytest

from conftest import REPO_ROOT
from hear_edge import HearEdge, SelfTestError
from hear_edge import cli
from hear_edge.bundle.manifest import CHECKSUM_NAME, read_manifest
from hear_edge.bundle.selftest import PROBE_TOLERANCE, self_test, splitmix64, with_probe
from hear_edge.errors import BundleError, HearEdgeError, InvalidArgumentError
from hear_edge.run.classifier import default_bundle_path
from hear_edge.runtimes import base

TINY = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"
YES = REPO_ROOT / "examples" / "clips" / "yes.wav"


def _write(bundle, data):
    raw = (json.dumps(data, indent=2) + "\n").encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / CHECKSUM_NAME).write_text(hashlib.sha256(raw).hexdigest() + "\n")


@pytest.fixture(scope="module")
def probed_tiny(tmp_path_factory):
    """The tiny bundle (onnx fp32 and int8) with the probes export records."""
    pytest.importorskip("onnxruntime")
    copy = tmp_path_factory.mktemp("probed") / "tiny.hearedge"
    shutil.copytree(TINY, copy)
    manifest = read_manifest(copy)
    for spec in manifest.graphs:
        with_probe(copy, spec, manifest.window_frames, manifest.max_task_frames)
    manifest.write(copy)
    return copy


class _Perturbed:
    """A session whose outputs are its graph's, scaled by `factor`: a kernel that computes wrong."""

    def __init__(self, session, factor):
        self.session, self.factor = session, factor
        self.runtime = "fakeruntime 9.9.9"

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, inputs, signature=None, transient=False):
        return {k: v * self.factor for k, v in self.session.run(inputs, signature, transient).items()}


def _perturb(monkeypatch, factor, only=None):
    real = base.open_graph

    def open_graph(backend, path, *args, **kwargs):
        session = real(backend, path, *args, **kwargs)
        return _Perturbed(session, factor) if only is None or only in str(path) else session
    monkeypatch.setattr(base, "open_graph", open_graph)


def test_splitmix64_is_the_reference_generator():
    # The first outputs of splitmix64 from state 0 (Vigna's reference implementation).
    assert [int(x) for x in splitmix64(0, 3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_probes_are_recorded_small_and_pass_where_recorded(probed_tiny):
    manifest = read_manifest(probed_tiny)
    assert all(spec.probe is not None for spec in manifest.graphs)
    assert len(json.dumps([spec.probe for spec in manifest.graphs])) < 8000  # a few numbers per output
    for precision in ("fp32", "int8"):
        model = HearEdge.load(probed_tiny, backend="onnx", precision=precision)
        assert model.classify(YES).top is not None


@pytest.mark.parametrize("precision,factor", [("fp32", 1 + 1e-3), ("int8", 1.2)])
def test_a_backend_that_computes_wrong_is_refused_with_its_runtime_and_graph(probed_tiny, monkeypatch, precision,
                                                                          factor):
    _perturb(monkeypatch, factor, only="task")
    tolerance = PROBE_TOLERANCE[precision]
    with pytest.raises(SelfTestError, match=rf"the onnx backend on fakeruntime 9\.9\.9 computes the onnx {precision} "
                                            rf"task graph task\.{precision}\.onnx wrong: .* output 'logits' off by a "
                                            rf"relative error of .*, beyond the {tolerance:g} allowed for {precision}"):
        HearEdge.load(probed_tiny, backend="onnx", precision=precision)
    assert issubclass(SelfTestError, HearEdgeError)


@pytest.mark.parametrize("precision,factor", [("fp32", 1 + 1e-6), ("int8", 1.02)])
def test_differences_within_the_precisions_tolerance_pass(probed_tiny, monkeypatch, precision, factor):
    _perturb(monkeypatch, factor)
    assert HearEdge.load(probed_tiny, backend="onnx", precision=precision).precision == precision


def test_self_test_false_and_the_cli_flag_skip_it(probed_tiny, monkeypatch, capsys):
    _perturb(monkeypatch, 2.0)
    HearEdge.load(probed_tiny, backend="onnx", precision="fp32", self_test=False)
    assert cli.main(["classify", str(YES), "--bundle", str(probed_tiny), "--no-self-test"]) == 0
    capsys.readouterr()
    assert cli.main(["classify", str(YES), "--bundle", str(probed_tiny)]) == 2
    assert "computes the onnx" in capsys.readouterr().err


def test_self_test_takes_a_bool():
    with pytest.raises(InvalidArgumentError, match=r"self_test must be True or False, got 'no'\."):
        HearEdge.load(TINY, self_test="no")


def test_bundles_without_probes_load_and_say_so_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="hear_edge")
    for bundle in (TINY, REPO_ROOT / "tests" / "data" / "tiny-golden-schema1.hearedge"):
        assert all(spec.probe is None for spec in read_manifest(bundle).graphs)
        assert HearEdge.load(bundle, backend="onnx", precision="fp32").classify(YES).top is not None
    assert "has no probe (exported before hear-edge recorded them): its self-test is skipped" in caplog.text


@pytest.mark.parametrize("backend", base.available_backends())
def test_the_shipped_bundle_passes_on_every_installed_backend(backend):
    manifest = read_manifest(default_bundle_path())
    fmt = base.BACKEND_FORMAT[backend]
    for spec in manifest.graphs:
        if spec.format != fmt:
            continue
        assert spec.probe is not None, spec.file
        session = base.open_graph(backend, default_bundle_path() / spec.file, spec.input_names, spec.output_names)
        error = self_test(session, spec, backend, session.runtime)
        assert error <= spec.probe["tolerance"] / 3, (spec.file, session.runtime, error)  # with room to spare


def _change_probe(bundle, tmp_path, change):
    copy = tmp_path / "changed.hearedge"
    shutil.copytree(bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    change(data["graphs"][0]["probe"])
    _write(copy, data)
    return copy


@pytest.mark.parametrize("change,message", [
    (lambda p: p.update(tolerance=0), r"graphs\[0\]\.probe\.tolerance must be a number in \(0, 1\], got 0"),
    (lambda p: p["outputs"]["acoustic"]["projections"].pop(),
     r"graphs\[0\]\.probe\.outputs\.acoustic\.projections must be a list of 16 numbers"),
    (lambda p: p["outputs"].update(logits=p["outputs"].pop("acoustic")),
     r"graphs\[0\]\.probe\.outputs lacks the field\(s\) \['acoustic'\]"),
    (lambda p: p["inputs"]["log_mel"].update(shape=[1, 10 ** 6, 10 ** 6]),
     r"graphs\[0\]\.probe\.inputs\.log_mel\.shape must be a list of positive integers of at most"),
    (lambda p: p.update(formula="mersenne"), r"graphs\[0\]\.probe\.formula must be one of \['splitmix64-v1'\]"),
    (lambda p: p.update(extra=1), r"graphs\[0\]\.probe has unknown field\(s\) \['extra'\]"),
])
def test_the_manifest_checker_validates_probes(probed_tiny, tmp_path, change, message):
    with pytest.raises(BundleError, match=message):
        read_manifest(_change_probe(probed_tiny, tmp_path, change))


def test_a_recorded_probe_that_disagrees_is_refused_and_named(probed_tiny, tmp_path):
    def change(probe):
        probe["outputs"]["acoustic"]["projections"] = list(-np.array(probe["outputs"]["acoustic"]["projections"]))
    copy = _change_probe(probed_tiny, tmp_path, change)
    with pytest.raises(SelfTestError, match=r"acoustic_window graph acoustic_window\.fp32\.onnx wrong"):
        HearEdge.load(copy, backend="onnx", precision="fp32")
