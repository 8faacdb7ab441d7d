"""The one way a benchmark script ends: its JSON report on stdout, and in --json's file when given."""

from __future__ import annotations

import json


def emit_report(report: dict, json_path: str | None) -> int:
    text = json.dumps(report, indent=2)
    if json_path:
        with open(json_path, "w") as handle:
            handle.write(text + "\n")
    print(text)
    return 0
