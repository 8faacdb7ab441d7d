"""What every step of the keyword-set builder shares: the 12 labels and their words, logs, CSV tables, hashes."""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import sys
from pathlib import Path

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
LABELS = KEYWORDS + [UNKNOWN, SILENCE]

# Speech Commands v1 auxiliary words + digits, the 5 v2 words, and 12 near-misses.
UNKNOWN_WORDS_EASY = [
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "backward", "forward", "follow", "learn", "visual",
]
UNKNOWN_WORDS_NEAR = ["yet", "now", "cup", "town", "lift", "light", "top", "goal", "yellow",
                      "dawn", "own", "of",
                      # issue 13: words a user found called keywords ("hello", "banana" -> no) and
                      # further one-phoneme-off neighbours of no / go / stop / left / right / off
                      "hello", "banana", "note", "nose", "noon", "nope", "snow", "gold", "goat",
                      "stock", "step", "loft", "ride", "often"]
UNKNOWN_WORDS = UNKNOWN_WORDS_EASY + UNKNOWN_WORDS_NEAR


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def stable_int(text: str) -> int:
    """Stable 32-bit number from a string (sha1, platform independent)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:4], "big")


def read_csv(path: Path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def dir_mb(d) -> float:
    return sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file()) / 1e6


def missing_modules(*names: str) -> list:
    """The named top-level modules that are not installed (nothing is imported).

    The one rule for optional packages: one that is not found is absent (its user skips, saying what
    to install); one that is found is imported normally, so an installed but broken one raises."""
    return [name for name in names if importlib.util.find_spec(name) is None]
