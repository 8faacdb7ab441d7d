"""LiteRT's memory: the CompiledModel engine and its gate, long-clip buckets freed (on unclustered
Interpreters, glibc mapping large blocks), and the peaks of a 1 s clip against onnxruntime's and of
clips of 1-30 s, measured in fresh processes (peak memory may be tested; time may not)."""

import subprocess
import sys

import numpy as np
import pytest

from hear_edge import host
from hear_edge.errors import BundleError
from hear_edge.run.classifier import default_bundle_path
from hear_edge.runtimes import litert

pytest.importorskip("ai_edge_litert.interpreter", reason="the litert backend's int8 graphs need ai-edge-litert")

BUNDLE = default_bundle_path()
TASK = BUNDLE / "task.int8.tflite"
TASK_INPUTS = ["acoustic", "spectrum_pairs", "valid_frames"]


def _task_inputs(frames, seed=0):
    rng = np.random.default_rng(seed)
    return {"acoustic": rng.standard_normal((1, frames, 384)).astype(np.float32),
            "spectrum_pairs": rng.standard_normal((1, frames, 1026)).astype(np.float32),
            "valid_frames": np.array([frames - 7], np.int32)}


def _cpuinfo(monkeypatch, machine, features):
    monkeypatch.setattr(litert.sys, "platform", "linux")
    monkeypatch.setattr(litert.platform, "machine", lambda: machine)
    monkeypatch.setattr(litert, "cpu_model_and_flags", lambda: ("", tuple(features.split())))


@pytest.mark.parametrize("machine, features, safe", [
    ("aarch64", "fp asimd evtstrm crc32 cpuid", False),                         # Cortex-A53/A72: Pi 3, Zero 2 W, Pi 4
    ("aarch64", "fp asimd evtstrm aes crc32 atomics fphp asimddp cpuid", True),  # Cortex-A76: Pi 5
    ("x86_64", "fpu sse sse2 avx2", True),
    ("armv7l", "half thumb fastmult vfp neon", False),
])
def test_the_compiled_engine_runs_only_where_the_cpu_has_lse_atomics(monkeypatch, machine, features, safe):
    _cpuinfo(monkeypatch, machine, features)
    assert litert.weight_cache_safe() is safe


def test_a_cpu_without_lse_gets_the_interpreter(monkeypatch):
    _cpuinfo(monkeypatch, "aarch64", "fp asimd evtstrm crc32 cpuid")
    session = litert.open_session(TASK, TASK_INPUTS, ["logits", "pooled"], 1)
    assert session.engine == "InterpreterModel"


@pytest.mark.parametrize("frames", [50, 1500])
def test_both_engines_compute_the_same_outputs(frames):
    inputs = _task_inputs(frames)
    outputs = [litert.open_session(TASK, TASK_INPUTS, ["logits", "pooled"], 1, engine=engine).run(
        inputs, f"task_{frames}") for engine in ("compiled", "interpreter")]
    for name in ("logits", "pooled"):
        assert outputs[0][name].shape == outputs[1][name].shape
        np.testing.assert_allclose(outputs[0][name], outputs[1][name], atol=1e-5)


@pytest.mark.parametrize("engine", ["compiled", "interpreter"])
def test_one_transient_bucket_is_kept_at_a_time(engine):
    session = litert.open_session(TASK, TASK_INPUTS, ["logits", "pooled"], 1, engine=engine)
    resident = session.run(_task_inputs(50), "task_50")
    long_run = session.run(_task_inputs(750), "task_750", transient=True)
    first = session._transient
    assert session._transient_key == "task_750" and first is not session._resident
    again = session.run(_task_inputs(750), "task_750", transient=True)
    assert session._transient is first  # the same long bucket again: kept, not re-opened
    session.run(_task_inputs(1000), "task_1000", transient=True)
    assert session._transient_key == "task_1000" and session._transient is not first
    np.testing.assert_array_equal(long_run["logits"], again["logits"])
    np.testing.assert_array_equal(resident["logits"], session.run(_task_inputs(50), "task_50")["logits"])


@pytest.mark.parametrize("engine", ["compiled", "interpreter"])
def test_a_released_long_bucket_reopens_with_identical_outputs(engine):
    session = litert.open_session(TASK, TASK_INPUTS, ["logits", "pooled"], 1, engine=engine)
    first = session.run(_task_inputs(750, seed=1), "task_750", transient=True)
    session.run(_task_inputs(1000), "task_1000", transient=True)  # releases task_750
    again = session.run(_task_inputs(750, seed=1), "task_750", transient=True)
    for name in ("logits", "pooled"):
        np.testing.assert_array_equal(first[name], again[name])


def test_a_long_bucket_beside_the_compiled_model_runs_on_its_cut_without_clustering():
    session = litert.open_session(TASK, TASK_INPUTS, ["logits", "pooled"], 1, engine="compiled")
    inputs = _task_inputs(1500, seed=2)
    resident = session.run(inputs, "task_1500")
    transient = session.run(inputs, "task_1500", transient=True)
    model = session._transient
    assert session.engine == "CompiledModel" and isinstance(model, litert._InterpreterModel)
    assert model._cuts is not None and list(model._interpreters) == ["task_1500"]
    assert litert._unclustered(model._interpreter_class) == {"experimental_disable_delegate_clustering": True}
    for name in ("logits", "pooled"):
        np.testing.assert_allclose(transient[name], resident[name], atol=1e-5)


def test_without_cuts_a_long_bucket_beside_the_compiled_model_stays_on_a_compiled_model(monkeypatch):
    monkeypatch.setattr(litert._tflite_cut, "available", lambda: False)
    session = litert.open_session(TASK, TASK_INPUTS, ["logits", "pooled"], 1, engine="compiled")
    session.run(_task_inputs(750), "task_750", transient=True)
    assert isinstance(session._transient, litert._CompiledModel)


class _OldInterpreter:  # an old tflite-runtime: no experimental_disable_delegate_clustering
    def __init__(self, model_path=None, model_content=None, num_threads=None):
        self.options = {"num_threads": num_threads}

    def get_signature_list(self):
        return {"task_50": {}}


class _NewInterpreter(_OldInterpreter):
    def __init__(self, model_path=None, model_content=None, num_threads=None,
                 experimental_disable_delegate_clustering=False):
        super().__init__(model_path, model_content, num_threads)
        self.options["unclustered"] = experimental_disable_delegate_clustering


@pytest.mark.parametrize("interpreter_class, options", [(_OldInterpreter, {"num_threads": 2}),
                                                        (_NewInterpreter, {"num_threads": 2, "unclustered": True})])
def test_the_interpreter_opens_without_delegate_clustering_where_it_can(interpreter_class, options):
    model = litert._InterpreterModel(interpreter_class, TASK, 2)
    assert model.signatures == ["task_50"] and model.interpreter.options == options


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return 1


def test_large_blocks_are_mapped_once_through_glibc(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(host.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(host, "_large_blocks_mapped", False)
    assert host.map_large_blocks() is True
    assert libc.calls == [(-3, 8 << 20), (-1, 16 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert host.map_large_blocks() is False and len(libc.calls) == 2


def test_mapping_large_blocks_is_a_no_op_without_glibc(monkeypatch):
    def no_glibc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(host.ctypes, "CDLL", no_glibc)
    monkeypatch.setattr(host, "_large_blocks_mapped", False)
    assert host.map_large_blocks() is False
    host.release_freed_heap()  # and the trim beside it does not raise either


# A fresh process's peak, started through a bare interpreter (Linux carries ru_maxrss across exec).
PEAK_CHILD = """
import resource, sys
if sys.argv[2] == "interpreter":
    import hear_edge.runtimes.litert as litert
    litert.weight_cache_safe = lambda: False
from hear_edge import HearEdge
from hear_edge.bundle.gates import synthetic_clip
model = HearEdge.load(backend=sys.argv[1], precision="int8")
for seconds in range(1, int(sys.argv[3]) + 1):
    model.classify(synthetic_clip(seconds, seed=100), 16000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def _peak_mib(backend, engine, longest_s=1):
    """Peak RSS of a fresh process that classifies clips of 1, 2, ... `longest_s` seconds in turn."""
    result = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, sys.executable, "-c", PEAK_CHILD, backend, engine,
                             str(longest_s)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("engine", ["auto", "interpreter"])
def test_a_one_second_clip_peaks_within_1_1x_of_onnxruntime(engine):
    """Measured on x86-64 (AVX-512): onnx 99 MiB; LiteRT's CompiledModel 102, its Interpreter on cut files
    91 (on the whole files, as before: 179)."""
    onnx = _peak_mib("onnx", "auto")
    lite = _peak_mib("litert", engine)
    assert lite <= 1.1 * onnx, f"litert ({engine}) {lite:.1f} MiB, onnx {onnx:.1f} MiB"


@pytest.mark.slow
def test_clips_of_1_to_30_s_in_one_process_peak_within_250_mb():
    """Measured on x86-64 (AVX-512), CompiledModel: 250-262 MiB before long buckets ran on unclustered
    Interpreters and glibc mapped large blocks, 226-231 after; onnxruntime 180-188."""
    peak = _peak_mib("litert", "auto", longest_s=30)
    assert peak <= 250e6 / 2**20, f"{peak:.1f} MiB"


def test_a_cut_file_computes_what_the_whole_file_computes(monkeypatch):
    inputs = _task_inputs(250, seed=3)
    cut = litert.open_session(TASK, TASK_INPUTS, ["logits", "pooled"], 1, engine="interpreter")
    assert cut._resident._cuts is not None
    monkeypatch.setattr(litert._tflite_cut, "available", lambda: False)
    whole = litert.open_session(TASK, TASK_INPUTS, ["logits", "pooled"], 1, engine="interpreter")
    assert whole._resident._cuts is None
    for name, value in cut.run(inputs, "task_250").items():
        np.testing.assert_array_equal(value, whole.run(inputs, "task_250")[name])
    assert cut.output_shape("logits") == whole.output_shape("logits") == [1, 12]


def test_a_signature_cut_again_is_the_same_file():
    cuts = litert._tflite_cut.TfliteFile(TASK)
    first = cuts.cut("task_1500")
    assert cuts.cut("task_1500") == first and litert._tflite_cut.TfliteFile(TASK).cut("task_1500") == first


def test_a_file_that_is_not_tflite_is_a_bundle_error(tmp_path):
    bad = tmp_path / "task.int8.tflite"
    bad.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(BundleError, match=r"LiteRT cannot load .*task\.int8\.tflite"):
        litert.open_session(bad, TASK_INPUTS, ["logits", "pooled"], 1, engine="interpreter")
