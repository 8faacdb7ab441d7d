"""What classify and streams return: categories, results, embeddings, and how scores become a result. No torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hear_edge.errors import InvalidArgumentError, LabelError
from .inference import ClipOutputs

# How many categories classify and streams return by default (the CLI's --top-k too).
DEFAULT_MAX_RESULTS = 5


@dataclass(frozen=True)
class Category:
    """One label's score."""

    label: str
    index: int
    score: float   # softmax probability
    logit: float


@dataclass
class ClassificationResult:
    """What `classify` returns: ranked categories plus every label's score, in label order.

    For audio over one segment (`HearEdge.segment_samples`: 30 s for the official model),
    `segments` holds one result per segment (with its start and end) and the top-level scores
    are their mean.
    """

    categories: list[Category]
    scores: np.ndarray
    logits: np.ndarray
    labels: list[str]
    start_s: float
    end_s: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    segments: list["ClassificationResult"] = field(default_factory=list)
    # Streams only: the category this result detects, when it starts a detection (see
    # `ClassificationStream`); None for every other result and always None from classify.
    detection: Category | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def top(self) -> Category | None:
        return self.categories[0] if self.categories else None

    def to_dict(self) -> dict:
        """The result as JSON-ready data: its span, the kept categories, every label's score, its
        segments and (streams) its detection. The one record the CLI's --json and results files write."""
        data = {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "categories": [{"label": c.label, "score": round(c.score, 6)} for c in self.categories],
                "scores": {label: round(float(s), 6) for label, s in zip(self.labels, self.scores)}}
        if self.segments:
            data["segments"] = [segment.to_dict() for segment in self.segments]
        if self.detection is not None:
            data["detection"] = {"label": self.detection.label, "score": round(self.detection.score, 6)}
        return data


@dataclass
class Embeddings:
    """`embed` output: one scene vector per clip and 50 frame vectors per second with their centres."""

    scene: np.ndarray          # (3 * task hidden,): the pooled Task Model states the head classifies
    frames: np.ndarray         # (frames, acoustic hidden): the Acoustic Model's output
    frame_times_s: np.ndarray  # (frames,): the centre of each frame


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max())
    return (shifted / shifted.sum()).astype(np.float32)


def build_result(outputs: ClipOutputs, labels: list[str], start_s: float, end_s: float, keep,
                 timings: dict[str, float]) -> ClassificationResult:
    """The ClassificationResult of one run of the graphs over [start_s, end_s): softmax scores and
    the categories `keep` (a `_ResultFilter`) lets through. The one place classify's segments and
    stream results are built, so both rank and filter alike."""
    scores = softmax(outputs.logits)
    return ClassificationResult(keep(scores, outputs.logits), scores, outputs.logits.astype(np.float32),
                                labels, start_s, end_s, timings)


class _ResultFilter:
    """max_results, score_threshold, allowlist and denylist, checked once per call."""

    def __init__(self, labels: list[str], max_results, score_threshold, allowlist, denylist):
        if max_results is not None and (isinstance(max_results, bool) or not isinstance(max_results, int)
                                        or max_results < 1):
            raise InvalidArgumentError(
                f"max_results must be an int >= 1 (or None for every label), got {max_results!r}.")
        if score_threshold is not None:
            if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float, np.integer,
                                                                                     np.floating)):
                raise InvalidArgumentError(f"score_threshold must be a number (a probability in [0, 1]) or None, "
                                           f"got {score_threshold!r} ({type(score_threshold).__name__}); pass "
                                           f"e.g. score_threshold=0.5.")
            if math.isnan(score_threshold) or not 0.0 <= float(score_threshold) <= 1.0:
                raise InvalidArgumentError(f"score_threshold is a probability in [0, 1], got {score_threshold!r}; "
                                           f"pass e.g. score_threshold=0.5, or None to keep every score.")
        if allowlist is not None and denylist is not None:
            raise InvalidArgumentError("give allowlist or denylist, not both.")
        chosen = allowlist if allowlist is not None else denylist
        if chosen is not None:
            if isinstance(chosen, str) or not isinstance(chosen, (Sequence, set, frozenset)):
                raise LabelError(f"allowlist/denylist must be a list of labels, got {type(chosen).__name__}.")
            odd = [item for item in chosen if not isinstance(item, str)]
            if odd:
                raise LabelError(f"allowlist/denylist entries must be label strings, got {odd[:3]!r}; pass a "
                                 f"flat list such as ['{labels[0]}'].")
            unknown = sorted(set(chosen) - set(labels))
            if unknown:
                raise LabelError(f"{'allowlist' if allowlist is not None else 'denylist'} names labels the "
                                 f"model does not have: {unknown}. Its labels are: {labels}.")
        self.labels = labels
        self.max_results = max_results
        self.score_threshold = score_threshold
        self.allowed = set(allowlist) if allowlist is not None else None
        self.denied = set(denylist) if denylist is not None else set()

    def __call__(self, scores: np.ndarray, logits: np.ndarray) -> list[Category]:
        ranked = []
        for index in np.argsort(-scores, kind="stable"):
            label = self.labels[index]
            if (self.allowed is not None and label not in self.allowed) or label in self.denied:
                continue
            if self.score_threshold is not None and scores[index] < self.score_threshold:
                break
            ranked.append(Category(label, int(index), float(scores[index]), float(logits[index])))
            if self.max_results is not None and len(ranked) == self.max_results:
                break
        return ranked
