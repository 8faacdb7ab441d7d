import subprocess
import sys

import pytest

from conftest import TINY_GOLDEN


def test_golden_command_reports_every_case():
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-m", "hear_edge.cli", "golden", str(TINY_GOLDEN)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "6 of 6 cases within bounds" in result.stdout
    assert result.stdout.count("| ok |") == 6


def test_cli_reports_library_errors_without_a_traceback(tmp_path):
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-m", "hear_edge.cli", "golden", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "hear-edge: error:" in result.stderr and "has no cases.json" in result.stderr
    assert "Traceback" not in result.stderr


# ---- the CLI as a Unix tool: each behaviour of issue 16 item 5, torch-free ----

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402
from hear_edge import __version__  # noqa: E402
from hear_edge.cli import build_parser  # noqa: E402
from hear_edge.run.classifier import DEFAULT_MAX_RESULTS  # noqa: E402

BUNDLE = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"
CLIP = REPO_ROOT / "examples" / "clips" / "yes.wav"


def _cli(*args, prelude="", **options):
    code = prelude + "import sys\nfrom hear_edge.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300, **options)


def test_version():
    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"hear-edge {__version__}"


def test_verbose_is_accepted_before_and_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["-v", "info"]).verbose is True
    assert parser.parse_args(["info", "-v"]).verbose is True
    assert parser.parse_args(["info", "--verbose"]).verbose is True
    assert parser.parse_args(["info"]).verbose is False
    result = _cli("classify", CLIP, "--bundle", BUNDLE, "-v")
    assert result.returncode == 0, result.stderr
    assert "hear_edge: loaded" in result.stderr  # the INFO log that -v turns on


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.dest}" for name, sub in commands.choices.items() for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not action.help]
    missing += [action.dest for action in parser._actions if not action.help]
    assert missing == []


def test_a_command_that_needs_torch_names_the_extra_without_a_traceback():
    # None in sys.modules: `import torch` raises ModuleNotFoundError(name='torch'), as where it is absent.
    result = _cli("golden", REPO_ROOT / "tests" / "data" / "golden" / "tiny",
                  prelude="import sys\nsys.modules['torch'] = None\n")
    assert result.returncode == 2
    assert "`hear-edge golden` needs torch, which is not installed: pip install '.[export]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_exits_130_quietly(tmp_path):
    long_clip = tmp_path / "long.wav"
    soundfile.write(long_clip, np.tile(soundfile.read(CLIP, dtype="float32")[0], 30), 16000)
    # Python turns SIGINT into KeyboardInterrupt only where it starts with SIGINT at its default, as in a
    # terminal; a test run started in the background (`cmd &`) passes SIGINT on ignored, so the child
    # puts back the handler a terminal's Python has.
    code = ("import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from hear_edge.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    child = subprocess.Popen([sys.executable, "-c", code, "stream", str(long_clip), "--bundle", str(BUNDLE),
                              "--realtime"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = child.stdout.readline()  # it is streaming in real time now
        assert first.strip().startswith("0.00-")
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


def test_a_closed_pipe_exits_quietly():
    code = "import sys\nfrom hear_edge.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    # 40 files: more output than a pipe buffers, so the writes after `head` leaves do hit the closed pipe.
    child = subprocess.Popen(f"{sys.executable} -c '{code}' classify {' '.join([str(CLIP)] * 40)} "
                             f"--bundle {BUNDLE} --json | head -n 1", shell=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    stdout, stderr = child.communicate(timeout=300)
    assert json.loads(stdout)["file"] == str(CLIP)
    assert stderr == ""


def test_several_files_go_on_past_a_bad_one_and_fail_at_the_end(tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_text("not audio")
    result = _cli("classify", CLIP, bad, tmp_path / "missing.wav", CLIP, "--bundle", BUNDLE)
    assert result.returncode == 1
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [str(CLIP), str(CLIP)]
    assert f"hear-edge: error: {bad}: " in result.stderr and "missing.wav does not exist" in result.stderr
    assert result.stderr.strip().endswith("hear-edge: 2 of 4 files failed")
    assert "Traceback" not in result.stderr


def test_stream_json_all_gives_one_object_per_result():
    result = _cli("stream", CLIP, "--bundle", BUNDLE, "--json", "--all", "--hop", "0.5", "--context", "1")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["start_s"], r["end_s"]) for r in lines] == [(0.0, 0.5), (0.0, 1.0)]
    # --top-k's default is the library's max_results (the tiny bundle has 5 labels).
    assert all(len(r["categories"]) == min(DEFAULT_MAX_RESULTS, 5) and r["categories"][0]["label"] for r in lines)


def test_stream_prints_only_the_detections_unless_all(tmp_path):
    from hear_edge import HearEdge

    from conftest import TINY_CASES, TINY_GOLDEN

    clip = tmp_path / "long.wav"  # the golden clips one after another: the best label changes along it
    soundfile.write(clip, np.concatenate([np.load(TINY_GOLDEN / f"{case}.npz")["wav"].mean(axis=0)
                                          for case in TINY_CASES]).astype(np.float32), 16000)
    every = [json.loads(line) for line in
             _cli("stream", clip, "--bundle", BUNDLE, "--json", "--all", "--hop", "0.25", "--context", "1",
                  "--threshold", "0").stdout.splitlines()]
    detected = _cli("stream", clip, "--bundle", BUNDLE, "--json", "--hop", "0.25", "--context", "1",
                    "--threshold", "0", "-v")
    assert detected.returncode == 0, detected.stderr
    assert "printing detections" in detected.stderr and "--all prints every result" in detected.stderr
    shown = [json.loads(line) for line in detected.stdout.splitlines()]
    assert shown == [r for r in every if "detection" in r]
    assert 0 < len(shown) < len(every)  # overlapping windows of one label are one detection
    model = HearEdge.load(BUNDLE, backend="onnx")
    stream = model.create_stream(hop_seconds=0.25, context_seconds=1.0, score_threshold=0.0)
    expected = [r for r in stream.accept_waveform(soundfile.read(clip, dtype="float32")[0], 16000) + stream.flush()
                if r.detection is not None]
    assert [(d["end_s"], d["detection"]["label"]) for d in shown] == \
        [(round(r.end_s, 3), r.detection.label) for r in expected]


def test_info_json_is_the_manifest():
    result = _cli("info", BUNDLE, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    assert info["labels"] == manifest["labels"] == ["alpha", "beta", "gamma", "delta", "epsilon"]
    assert [g["sha256"] for g in info["graphs"]] == [g["sha256"] for g in manifest["graphs"]]
    assert info["parity_gate_passed"] is manifest["parity"]["passed"]


def test_embed_writes_exactly_the_path_it_prints(tmp_path):
    out = tmp_path / "embeddings"  # no .npz: np.savez would have written embeddings.npz
    result = _cli("embed", CLIP, "--bundle", BUNDLE, "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}\n" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings"]
    with np.load(out) as saved:
        assert saved["frames"].shape == (50, 32) and saved["scene"].shape == (96,)


def test_stream_smoothing_flag_is_checked_and_shown(tmp_path):
    refused = _cli("stream", CLIP, "--bundle", BUNDLE, "--smoothing", "0.125")
    assert refused.returncode == 2
    assert "--smoothing must be a multiple of 10 ms (the frame hop), got 0.125" in refused.stderr
    shown = _cli("stream", CLIP, "--bundle", BUNDLE, "--hop", "0.25", "--context", "1", "--smoothing", "0.25", "-v")
    assert shown.returncode == 0, shown.stderr
    assert "scores averaged over 0.25 s of results" in shown.stderr
    from hear_edge.bundle.manifest import read_manifest
    from hear_edge.run.classifier import default_bundle_path

    recorded = read_manifest(default_bundle_path()).stream_smoothing_seconds
    info = _cli("info")
    assert info.returncode == 0 and f"scores averaged over {recorded:g} s of results" in info.stdout


def test_bench_with_no_usable_backend_exits_non_zero(tmp_path):
    # The tiny bundle has only ONNX graphs, and onnxruntime is blocked: nothing can run.
    result = _cli("bench", "--bundle", BUNDLE, "--quick", "--out", tmp_path,
                  prelude="import sys\nsys.modules['onnxruntime'] = None\n")
    assert result.returncode == 2
    assert "nothing to bench: no backend runs a graph of" in result.stderr
    assert "needs the onnxruntime package, which is not installed" in result.stderr
    assert not (tmp_path / "bench.json").exists()
    asked = _cli("bench", "--bundle", BUNDLE, "--quick", "--backend", "litert", "--out", tmp_path)
    assert asked.returncode == 2 and "asked for ['litert']" in asked.stderr
