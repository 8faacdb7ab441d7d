"""Stream detections: the bundle's recommended threshold and background labels, one detection per
word heard in overlapping windows, and the offline replay a threshold sweep uses. Torch-free."""

import shutil
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, TINY_CASES, TINY_GOLDEN
from hear_edge import HearEdge
from hear_edge.bundle.manifest import default_background_labels, read_manifest
from hear_edge.errors import BundleError, ConfigError, InvalidArgumentError, LabelError
from hear_edge.run.streaming import replay_detections

BUNDLE = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"


def _edited(tmp_path, **streaming):
    copy = tmp_path / "edited.hearedge"
    shutil.copytree(BUNDLE, copy)
    manifest = read_manifest(copy)
    manifest.streaming.update(streaming)
    manifest.write(copy)  # refreshes manifest.json.sha256
    return copy


def _audio():
    """The golden clips one after another (48 s): the tiny model's best label changes along it."""
    clips = [np.load(TINY_GOLDEN / f"{case}.npz")["wav"].mean(axis=0) for case in TINY_CASES]
    return np.concatenate(clips).astype(np.float32)


def _run(stream, audio):
    return stream.accept_waveform(audio, 16000) + stream.flush()


def test_background_labels_default_to_the_names_between_underscores():
    assert default_background_labels(["yes", "_unknown_", "_silence_", "_", "__", "_x", "x_"]) == \
        ["_unknown_", "_silence_"]
    assert read_manifest(BUNDLE).background_labels == []
    shipped = HearEdge.load().manifest
    assert shipped.background_labels == ["_unknown_", "_silence_"]


def test_auto_takes_the_bundles_recommended_threshold(tmp_path):
    model = HearEdge.load(_edited(tmp_path, score_threshold=0.7), backend="onnx")
    assert model.manifest.stream_score_threshold == 0.7
    assert model.create_stream().score_threshold == 0.7
    assert model.create_stream(score_threshold=None).score_threshold is None
    assert model.create_stream(score_threshold=0.25).score_threshold == 0.25
    assert HearEdge.load(BUNDLE, backend="onnx").create_stream().score_threshold is None


def test_a_threshold_string_other_than_auto_is_refused():
    model = HearEdge.load(BUNDLE, backend="onnx")
    with pytest.raises(InvalidArgumentError, match=r"score_threshold must be a number \(a probability in \[0, 1\]\) "
                                                   r"or None, got 'high' \(str\)"):
        model.create_stream(score_threshold="high")


def test_a_word_heard_in_overlapping_windows_is_one_detection():
    model = HearEdge.load(BUNDLE, backend="onnx")
    results = _run(model.create_stream(hop_seconds=0.25, context_seconds=1.0, score_threshold=None), _audio())
    last_end = {}
    for r in results:  # the rule, checked result by result
        best = model.labels[int(np.argmax(r.scores))]
        expected = None if last_end.get(best, -1.0) > r.start_s else best
        last_end[best] = r.end_s
        assert (r.detection.label if r.detection else None) == expected
    detected = [r for r in results if r.detection]
    assert 0 < len(detected) < len(results)


def test_background_labels_and_the_threshold_are_never_detected(tmp_path):
    model = HearEdge.load(BUNDLE, backend="onnx")
    results = _run(model.create_stream(hop_seconds=0.25, context_seconds=1.0, score_threshold=None), _audio())
    tops = [model.labels[int(np.argmax(r.scores))] for r in results]
    common = max(set(tops), key=tops.count)
    others = sorted(float(r.scores.max()) for r, top in zip(results, tops) if top != common)
    threshold = others[len(others) // 2]  # some of the other labels' hits fall below it
    edited = HearEdge.load(_edited(tmp_path, background_labels=[common], score_threshold=threshold), backend="onnx")
    found = [r.detection for r in _run(edited.create_stream(hop_seconds=0.25, context_seconds=1.0), _audio())
             if r.detection]
    assert found and all(d.label != common and d.score >= threshold for d in found)
    unfiltered = [r.detection for r in _run(edited.create_stream(hop_seconds=0.25, context_seconds=1.0,
                                                                 score_threshold=None), _audio()) if r.detection]
    assert len(unfiltered) > len(found) and all(d.label != common for d in unfiltered)


def test_replay_gives_the_streams_own_detections_at_every_threshold():
    model = HearEdge.load(BUNDLE, backend="onnx")
    every = _run(model.create_stream(hop_seconds=0.25, context_seconds=1.0, score_threshold=None, max_results=None),
                 _audio())
    tops = sorted(float(r.scores.max()) for r in every)
    for threshold in (None, tops[len(tops) // 4], tops[len(tops) // 2], tops[-3]):
        stream = model.create_stream(hop_seconds=0.25, context_seconds=1.0, score_threshold=threshold)
        live = [(r.end_s, r.detection.label) for r in _run(stream, _audio()) if r.detection]
        replayed = [(r.end_s, c.label) for r, c in replay_detections(every, model.labels, [], threshold)]
        assert live == replayed and live


def test_smoothing_detects_on_the_mean_scores_of_the_results_within_its_span():
    model = HearEdge.load(BUNDLE, backend="onnx")
    every = _run(model.create_stream(hop_seconds=0.25, context_seconds=1.0, score_threshold=None, max_results=None),
                 _audio())
    stream = model.create_stream(hop_seconds=0.25, context_seconds=1.0, score_threshold=None, smoothing_seconds=0.5)
    assert stream.smoothing_seconds == 0.5
    live = _run(stream, _audio())
    last_end, expected = {}, []
    for i, r in enumerate(every):  # the rule, result by result: the three results ending within 0.5 s
        mean = np.mean([e.scores for e in every[max(0, i - 2):i + 1]], axis=0)
        best = model.labels[int(np.argmax(mean))]
        expected.append(None if last_end.get(best, -1.0) > r.start_s else best)
        last_end[best] = r.end_s
    assert [r.detection.label if r.detection else None for r in live] == expected
    # Results keep their own scores; only the rule reads the mean.
    assert all(np.array_equal(a.scores, b.scores) for a, b in zip(live, every))
    unsmoothed = [r.detection.label if r.detection else None for r in _run(
        model.create_stream(hop_seconds=0.25, context_seconds=1.0, score_threshold=None), _audio())]
    assert unsmoothed != expected
    replayed = replay_detections(every, model.labels, [], None, smoothing_seconds=0.5)
    assert [(r.end_s, c.label) for r, c in replayed] == [(r.end_s, r.detection.label) for r in live if r.detection]
    assert all(c.score == pytest.approx(float(np.mean([e.scores for e in every if r.end_s - 0.5 - 1e-9 <= e.end_s
                                                        <= r.end_s], axis=0).max()), abs=1e-6)
               for r, c in replayed)


def test_auto_takes_the_bundles_smoothing(tmp_path):
    model = HearEdge.load(_edited(tmp_path, smoothing_seconds=0.25), backend="onnx")
    assert model.manifest.stream_smoothing_seconds == 0.25
    assert model.create_stream().smoothing_seconds == 0.25
    assert model.create_stream(smoothing_seconds=None).smoothing_seconds == 0.0
    assert model.create_stream(smoothing_seconds=1).smoothing_seconds == 1.0
    assert HearEdge.load(BUNDLE, backend="onnx").create_stream().smoothing_seconds == 0.0


@pytest.mark.parametrize("value, message", [
    (-0.25, r"smoothing_seconds must be between 0.0 and 2.0 s, got -0.25\."),
    (2.5, r"smoothing_seconds must be between 0.0 and 2.0 s, got 2.5\."),
    (0.125, r"smoothing_seconds must be a multiple of 10 ms \(the frame hop\), got 0.125\."),
    ("long", r"smoothing_seconds must be a number of seconds, got 'long'\."),
])
def test_a_smoothing_out_of_range_or_off_the_frame_grid_is_refused(value, message):
    model = HearEdge.load(BUNDLE, backend="onnx")
    with pytest.raises(InvalidArgumentError, match=message):
        model.create_stream(smoothing_seconds=value)


def test_a_manifest_with_a_bad_smoothing_is_refused_at_load(tmp_path):
    copy = tmp_path / "bad.hearedge"
    shutil.copytree(BUNDLE, copy)
    manifest = read_manifest(copy)
    manifest.streaming["smoothing_seconds"] = 5
    manifest.write(copy)
    with pytest.raises(BundleError, match=r"manifest field streaming.smoothing_seconds must be between 0.0 and 2.0 s, "
                                          r"got 5\. The manifest is damaged"):
        read_manifest(copy)


def test_export_checks_the_detection_settings_before_any_work():
    pytest.importorskip("torch", reason="export needs torch")
    from hear_edge.export.api import _detection_settings

    labels = ["yes", "no", "_unknown_"]
    assert _detection_settings(labels, None, None) == {"background_labels": ["_unknown_"]}
    assert _detection_settings(labels, 0.8, ["no"]) == {"background_labels": ["no"], "score_threshold": 0.8}
    with pytest.raises(ConfigError, match=r"stream_score_threshold must be a probability in \[0, 1\] or None, got 1\.5"):
        _detection_settings(labels, 1.5, None)
    with pytest.raises(LabelError, match=r"background_labels must be a list of the model's labels"):
        _detection_settings(labels, None, ["maybe"])
    assert _detection_settings(labels, 0.8, None, 0.25)["smoothing_seconds"] == 0.25
    with pytest.raises(ConfigError, match=r"stream_smoothing_seconds must be a multiple of 10 ms \(the frame hop\), "
                                          r"got 0.005"):
        _detection_settings(labels, None, None, 0.005)


def test_stream_scoring_counts_hits_misses_duplicates_and_false_alarms():
    sys.path.insert(0, str(REPO_ROOT / "examples"))
    from evaluate_stream import score

    from hear_edge.run.classifier import Category

    class Window:
        def __init__(self, start_s, end_s):
            self.start_s, self.end_s = start_s, end_s

    events = [{"start_s": 1.0, "end_s": 1.6, "label": "yes", "word": "yes"},
              {"start_s": 4.0, "end_s": 4.5, "label": "no", "word": "no"},
              {"start_s": 7.0, "end_s": 7.5, "label": "_unknown_", "word": "hello"}]
    yes, no = Category("yes", 0, 0.9, 1.0), Category("no", 1, 0.9, 1.0)
    detections = [(Window(0.75, 1.75), yes),   # hit
                  (Window(1.5, 2.5), yes),     # a second detection of the same word: a false alarm
                  (Window(2.75, 3.75), no),    # ends before the word "no" starts: a false alarm
                  (Window(6.75, 7.75), no)]    # an other word taken for a keyword
    figures = score(detections, events, minutes=0.5, background={"_unknown_", "_silence_"})
    assert (figures["detected"], figures["keywords"], figures["false_alarms"]) == (1, 2, 3)
    assert figures["recall"] == 0.5 and figures["false_alarms_per_minute"] == 6.0
    assert figures["recall_per_label"] == {"no": 0.0, "yes": 1.0}
    assert figures["false_alarm_list"][-1]["words_in_window"] == ["hello"]
