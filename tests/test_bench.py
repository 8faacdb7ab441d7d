import json
import shutil

import numpy as np
import pytest

from hear_edge.bundle.gates import PARITY_SECONDS
from hear_edge.bundle.manifest import Manifest, read_manifest
from hear_edge.reference.macs import model_flops
from hear_edge.tools.bench import _percentile, compare, markdown_table, parity_seconds, run_bench


@pytest.fixture(scope="module")
def quick_report(tiny_bundle):
    return run_bench(tiny_bundle, backends=["onnx"], threads=[1], quick=True)


def test_quick_bench_reports_every_row_with_parity(quick_report):
    rows = quick_report["rows"]
    assert [r["name"] for r in rows] == ["onnx fp32 x1", "onnx int8 x1"]
    for row in rows:
        assert row["parity"]["passed"] and row["parity"]["reference"] == "stored in the bundle at export"
        assert row["parity"]["clips"] == ["synthetic_10s", "synthetic_1s"]
        ten = row["latency"]["10"]
        assert ten["median_s"] > 0 and ten["rtf"] == ten["median_s"] / 10
        assert ten["runs"] == 3  # quick: 3 timed runs after the warm-up
        assert set(ten["stages_ms"]) >= {"frontend_ms", "acoustic_ms", "task_ms"}
        assert 0 < ten["fraction_of_gemm"] and row["peak_rss_mb"] > 10 and row["cold_start_s"] > 0
        assert 10 < row["peak_rss_1s_mb"] <= row["peak_rss_mb"] + 5  # one 1 s clip, fresh: within the all-lengths peak
        keyword, long_context = row["streaming"]["keyword"], row["streaming"]["long_context"]
        assert (keyword["context_s"], keyword["hop_s"], keyword["results"]) == (1.0, 0.25, 40)
        assert (long_context["context_s"], long_context["hop_s"], long_context["results"]) == (6.0, 1.0, 10)
        assert keyword["compute_per_result_s"] > 0 and keyword["compute_vs_offline_classify"] > 0
    assert rows[0]["parity"]["max_abs_logit_diff"] <= 1e-3
    assert quick_report["machine"]["gemm_fp32_1thread_gflops"] > 0
    json.dumps(quick_report)
    assert "| onnx fp32 x1 | ok" in markdown_table(quick_report)


def test_a_row_whose_outputs_differ_gets_no_speed(tiny_bundle, tmp_path):
    copy = tmp_path / "wrong.hearedge"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for outputs in manifest["parity"]["reference_outputs"].values():
        outputs["logits"] = [x + 0.5 for x in outputs["logits"]]
    Manifest.from_dict(manifest).write(copy)  # with its checksum
    report = run_bench(copy, backends=["onnx"], precisions=["fp32"], threads=[1], quick=True)
    row = report["rows"][0]
    assert not row["parity"]["passed"] and row["latency"] is None and row["streaming"] is None
    assert "refused" in markdown_table(report)


def test_pytorch_rows_and_live_reference(tiny_bundle, tiny_golden):
    pytest.importorskip("torch")
    report = run_bench(tiny_bundle, checkpoint=tiny_golden / "state_dict.pt", backends=["litert"],
                       precisions=["fp32"], threads=[1], quick=True)
    names = [r["name"] for r in report["rows"]]
    assert names == ["litert fp32 x1", "pytorch-eager fp32 x1"]
    assert all(r["parity"]["reference"] == "pytorch, this run" and r["parity"]["passed"] for r in report["rows"])
    runtime = report["rows"][0]
    assert set(runtime["speedup_vs_pytorch"]) == {"1", "10"} and all(v > 0 for v in runtime["speedup_vs_pytorch"].values())
    assert runtime["streaming"]["keyword"]["speedup_per_result_vs_pytorch_classify"] > 0
    assert report["machine"]["host"]["machine"]


def test_model_flops_of_the_official_size(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    full = json.loads(json.dumps(manifest.provenance["config"]))
    full["acoustic_model"].update(hidden_size=384, intermediate_size=1536, num_transformer_layers=6)
    full["task_model"].update(hidden_size=384, intermediate_size=1536)
    manifest.provenance["config"] = full
    # Windows of 300 and 250 valid frames (the last runs only its own frames): 7.30e9 acoustic MACs.
    assert model_flops(manifest, 10.0) / 1e9 == pytest.approx(17.7, abs=0.05)


def test_compare_flags_regressions(quick_report):
    slower = json.loads(json.dumps(quick_report))
    slower["rows"][0]["latency"]["10"]["median_s"] *= 1.5
    assert compare(slower, quick_report)[0].startswith("onnx fp32 x1: 10 s clip")
    assert compare(quick_report, quick_report) == []


def test_plots_and_cli_outputs(quick_report, tmp_path):
    pytest.importorskip("matplotlib")
    from hear_edge.tools.bench import plot

    paths = plot(quick_report, tmp_path)
    assert [p.name for p in paths] == ["latency.png", "rtf.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_bench_quick_command_on_the_shipped_bundle(tmp_path):
    """What CI and the ARM workflow run: the default bundle against its stored reference outputs."""
    import subprocess
    import sys

    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "hear_edge.cli", "bench", "--quick", "--threads", "1",
                             "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "bench.json").read_text())
    from hear_edge.runtimes.base import backend_installed

    expected = ["onnx int8 x1"] + (["litert int8 x1"] if backend_installed("litert") else [])
    assert [r["name"] for r in report["rows"]] == expected  # the bundle's variants this environment runs
    for row in report["rows"]:
        assert row["parity"]["passed"] and row["latency"]["10"]["rtf"] > 0, row["name"]
    assert (out / "bench.md").read_text().startswith("| row | parity |")


@pytest.mark.parametrize("graph", ["acoustic", "task"])
def test_acoustic_side_by_side_bench_reports_ratios(tiny_bundle, tmp_path, graph):
    import importlib.util

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("acoustic_ab", REPO_ROOT / "benchmarks" / "acoustic_ab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    copy = tmp_path / "copy.hearedge"
    shutil.copytree(tiny_bundle, copy)
    out = tmp_path / "ab.json"
    assert module.main([str(tiny_bundle), str(copy), "--variant", "onnx/fp32", "--rounds", "3", "--graph", graph,
                        "--frames", "50", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["graph"], report["frames"]) == (graph, 50)
    rows = report["rows"]
    assert [(r["bundle"], r["variant"]) for r in rows] == [("tiny.hearedge", "onnx/fp32"),
                                                            ("copy.hearedge", "onnx/fp32")]
    assert rows[0]["speedup_vs_first"] == 1.0 and all(r["median_ms"] > 0 for r in rows)


def test_p95_is_the_95th_percentile_of_the_timed_runs():
    times = [0.010, 0.011, 0.012, 0.013, 0.100]  # one slow run: the median hides it, p95 shows it
    assert float(np.median(times)) == 0.012
    assert _percentile(times, 95) == pytest.approx(0.0826)  # linear interpolation: 0.013 + 0.8 * 0.087


def test_the_bench_compares_the_export_parity_clips_of_the_lengths_it_times():
    assert parity_seconds((1.0, 10.0)) == [1.0, 10.0]
    assert parity_seconds((1.0, 2.0, 3.0, 6.0, 10.0, 30.0, 60.0)) == [1.0, 6.0, 10.0, 30.0]
    assert set(parity_seconds(PARITY_SECONDS)) == set(PARITY_SECONDS)  # every clip the bundle stores outputs of


def test_package_versions_lists_the_installed_ones_in_order():
    from hear_edge.host import package_versions

    assert package_versions(("no-such-distribution-here", "numpy")) == {"numpy": np.__version__}


def test_op_profile_sums_onnxruntimes_kernel_times_by_op_type():
    pytest.importorskip("onnxruntime")
    from hear_edge import HearEdge
    from hear_edge.bundle.gates import synthetic_clip
    from hear_edge.tools.bench import op_profile

    model = HearEdge.load(backend="onnx", precision="int8", num_threads=1)  # the shipped bundle
    profile = op_profile(model, synthetic_clip(7.0, seed=100), calls=2)  # 350 frames: two windows
    assert set(profile) == {"acoustic_window", "task"}
    window, task = profile["acoustic_window"], profile["task"]
    assert window["windows_per_call"] == 2 and task["windows_per_call"] == 1
    for graph in (window, task):
        assert graph["nodes_per_window"] > 10 and graph["kernels_ms_per_call"] > 0
        assert graph["kernels_ms_per_call"] == pytest.approx(sum(graph["by_op_type_ms"].values()), rel=1e-3)
        assert list(graph["by_op_type_ms"].values()) == sorted(graph["by_op_type_ms"].values(), reverse=True)
    assert "DynamicQuantizeMatMul" in window["by_op_type_ms"] and "Softmax" in window["by_op_type_ms"]


def test_classify_side_by_side_bench_against_another_checkout(tiny_bundle, tmp_path, monkeypatch):
    import importlib.util

    from conftest import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("classify_ab", REPO_ROOT / "benchmarks" / "classify_ab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "ab.json"
    args = [str(tiny_bundle), "--precision", "fp32", "--seconds", "1", "--rounds", "2", "--json", str(out)]
    assert module.main(args + ["--against", str(REPO_ROOT)]) == 0  # itself: the same numbers
    report = json.loads(out.read_text())
    assert report["logits_identical"] == {"1 s clip fp32": True}
    assert report["before_over_after"]["1 s clip fp32"] > 0 and "cpu_flags" in report["machine"]
    other = tmp_path / "other"  # a checkout whose spectrum pairing is wrong: the bench must say so
    (other / "hear_edge" / "signal").mkdir(parents=True)
    (other / "hear_edge" / "run").mkdir()
    shutil.copy(REPO_ROOT / "hear_edge" / "signal" / "frontend.py", other / "hear_edge" / "signal" / "frontend.py")
    (other / "hear_edge" / "run" / "inference.py").write_text(
        "def spectrum_pairs(log_power, frames):\n    return np.zeros((frames, 2 * log_power.shape[0]), np.float32)\n")
    assert module.main(args + ["--against", str(other)]) == 1
    assert json.loads(out.read_text())["logits_identical"] == {"1 s clip fp32": False}
