import subprocess
import sys

from conftest import TINY_GOLDEN


def test_golden_command_reports_every_case():
    result = subprocess.run([sys.executable, "-m", "hear_edge.cli", "golden", str(TINY_GOLDEN)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "6 of 6 cases within bounds" in result.stdout
    assert result.stdout.count("| ok |") == 6


def test_cli_reports_library_errors_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hear_edge.cli", "golden", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "hear-edge: error:" in result.stderr and "has no cases.json" in result.stderr
    assert "Traceback" not in result.stderr
