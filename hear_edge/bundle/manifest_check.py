"""Every manifest field checked against its range, in one place, before any of it is used.

A manifest number is used to size buffers and loops (window_frames, task buckets, hop_samples), so
an out-of-range one is refused here with a BundleError that names the field, instead of surfacing
as a MemoryError, an endless loop or a ZeroDivisionError later.
"""

from __future__ import annotations

import math
import re

from hear_edge.errors import BundleError, InvalidArgumentError
from hear_edge.signal.frontend import FrontendParams
from hear_edge.signal.segments import segment_samples
from hear_edge.signal.stream_timing import check_smoothing_seconds, check_stream_timing
from .schema import FORMATS, PRECISIONS, ROLES

MAX_WINDOW_FRAMES = 10_000
# 10 minutes of acoustic frames; a bucket this long pads to 1 x 30000 x 1026 float32 (123 MB).
MAX_TASK_FRAMES = 30_000
MAX_HIDDEN_SIZE = 65_536
MAX_LABELS = 100_000
MAX_GRAPH_BYTES = 4 << 30
MAX_STREAMING_SECONDS = 30.0
# The runtime's frontend constants: the streaming frame cache and the graphs' mel input assume them.
SUPPORTED_FRONTEND = {key: getattr(FrontendParams(), key) for key in ("sample_rate_hz", "n_fft", "window_samples",
                                                                     "hop_samples")}
_SHA256 = re.compile(r"[0-9a-f]{64}")

_TOP_REQUIRED = ("model_name", "model_version", "labels", "frontend", "window_frames", "overlap_frames",
                 "acoustic_hidden_size", "task_hidden_size", "max_task_frames", "graphs")
_TOP_OPTIONAL = ("provenance", "parity", "description", "schema_version", "sample_rate_hz", "streaming")
_FRONTEND_KEYS = ("sample_rate_hz", "n_fft", "window_samples", "hop_samples", "num_mel_bins", "log_offset",
                  "norm_eps")
_GRAPH_REQUIRED = ("role", "format", "precision", "file", "sha256", "bytes", "inputs", "outputs")
_GRAPH_OPTIONAL = ("frame_buckets", "bucket_files", "probe")
_PROBE_KEYS = ("formula", "seed", "frames", "signature", "inputs", "outputs", "tolerance", "recorded_with")
PROBE_FORMULAS = ("splitmix64-v1",)
PROBE_PROJECTIONS = 16
# A probe tensor is generated at load: its size is bounded like a bucket's (1 x 30000 x 1026).
MAX_PROBE_ELEMENTS = 1 << 25
_BUCKET_FILE_KEYS = ("file", "sha256", "bytes")
_TENSOR_KEYS = ("name", "shape", "dtype")
_STREAMING_KEYS = ("clip_seconds", "context_seconds", "hop_seconds", "score_threshold", "background_labels",
                   "smoothing_seconds")


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, expected: str, value) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise BundleError(f"{self.source}: manifest field {field} must be {expected}, got {shown}; the "
                          f"manifest is damaged or was not written by `hear-edge export`: re-export or "
                          f"re-copy the bundle.")

    def keys(self, data, field: str, required, optional=()) -> None:
        if not isinstance(data, dict):
            self.fail(field or "(top level)", "a JSON object", data)
        missing = [k for k in required if k not in data]
        if missing:
            raise BundleError(f"{self.source}: manifest {field or 'top level'} lacks the field(s) {missing}; "
                              f"re-export the bundle with `hear-edge export`.")
        unknown = [k for k in data if k not in required and k not in optional]
        if unknown:
            raise BundleError(f"{self.source}: manifest {field or 'top level'} has unknown field(s) {unknown}; "
                              f"expected only {list(required) + list(optional)}. A newer hear-edge may have "
                              f"written it: upgrade hear-edge, or re-export the bundle.")

    def integer(self, value, field: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(field, f"an integer in [{low}, {high}]", value)
        return value

    def number(self, value, field: str, low: float, high: float, low_open: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not (low < value if low_open else low <= value) or value > high:
            self.fail(field, f"a number in {'(' if low_open else '['}{low:g}, {high:g}]", value)
        return value

    def string(self, value, field: str) -> str:
        if not isinstance(value, str):
            self.fail(field, "a string", value)
        return value

    def choice(self, value, field: str, choices) -> None:
        if not isinstance(value, str) or value not in choices:
            self.fail(field, f"one of {list(choices)}", value)


def _check_file_entry(check: _Checker, entry: dict, where: str) -> None:
    """A graph file's name (plain, inside the bundle), sha256 and size."""
    name = check.string(entry["file"], f"{where}.file")
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name or ":" in name:
        check.fail(f"{where}.file", "a plain file name inside the bundle folder (no folders, no "
                                    "absolute path)", name)
    sha = entry["sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        check.fail(f"{where}.sha256", "64 lowercase hex digits", sha)
    check.integer(entry["bytes"], f"{where}.bytes", 1, MAX_GRAPH_BYTES)


def _check_bucket_files(check: _Checker, graph: dict, where: str) -> None:
    """A graph written one file per bucket: a tflite graph, one entry per frame bucket, the first its `file`."""
    files = graph.get("bucket_files")
    if files is None:
        return
    buckets = graph.get("frame_buckets")
    if graph["format"] != "tflite" or not buckets:
        check.fail(f"{where}.bucket_files", "null unless the graph is tflite with frame_buckets", files)
    if not isinstance(files, list) or len(files) != len(buckets):
        check.fail(f"{where}.bucket_files", f"a list of {len(buckets)} files, one per frame bucket", files)
    for j, entry in enumerate(files):
        check.keys(entry, f"{where}.bucket_files[{j}]", _BUCKET_FILE_KEYS)
        _check_file_entry(check, entry, f"{where}.bucket_files[{j}]")
    if files[0]["file"] != graph["file"]:
        check.fail(f"{where}.bucket_files[0].file", f"the graph's file {graph['file']!r}", files[0]["file"])
    names = [entry["file"] for entry in files]
    if len(set(names)) != len(names):
        check.fail(f"{where}.bucket_files", "distinct files", names)


def validate_manifest(data, source: str = "manifest") -> None:
    """Refuse a manifest (a parsed JSON object) whose fields are missing, unknown, mistyped or out of range.

    The schema version is checked before this (`hear_edge.bundle.schema.check_schema_version`).

    Raises:
        BundleError: naming the first bad field, what it must be and what it is.
    """
    check = _Checker(source)
    check.keys(data, "", _TOP_REQUIRED, _TOP_OPTIONAL)
    check.string(data["model_name"], "model_name")
    check.string(data["model_version"], "model_version")
    if "description" in data:
        check.string(data["description"], "description")
    for name in ("provenance", "parity"):
        if name in data and not isinstance(data[name], dict):
            check.fail(name, "a JSON object", data[name])

    labels = data["labels"]
    if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS:
        check.fail("labels", f"a list of 1 to {MAX_LABELS} label strings", labels)
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            check.fail(f"labels[{i}]", "a non-empty string", label)
    if len(set(labels)) != len(labels):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        check.fail("labels", "a list of unique labels", f"{repeated} repeated")

    frontend = data["frontend"]
    check.keys(frontend, "frontend", _FRONTEND_KEYS)
    for key, supported in SUPPORTED_FRONTEND.items():
        if isinstance(frontend[key], bool) or frontend[key] != supported or not isinstance(frontend[key], int):
            check.fail(f"frontend.{key}", f"{supported} (the only value this runtime supports)", frontend[key])
    check.integer(frontend["num_mel_bins"], "frontend.num_mel_bins", 1, SUPPORTED_FRONTEND["n_fft"] // 2)
    check.number(frontend["log_offset"], "frontend.log_offset", 0.0, 1.0, low_open=True)
    check.number(frontend["norm_eps"], "frontend.norm_eps", 0.0, 1.0, low_open=True)
    if "sample_rate_hz" in data and (isinstance(data["sample_rate_hz"], bool)
                                     or data["sample_rate_hz"] != frontend["sample_rate_hz"]):
        check.fail("sample_rate_hz", f"frontend.sample_rate_hz ({frontend['sample_rate_hz']})", data["sample_rate_hz"])

    window = check.integer(data["window_frames"], "window_frames", 2, MAX_WINDOW_FRAMES)  # 2: room for an overlap
    check.integer(data["overlap_frames"], "overlap_frames", 1, window - 1)
    check.integer(data["acoustic_hidden_size"], "acoustic_hidden_size", 1, MAX_HIDDEN_SIZE)
    check.integer(data["task_hidden_size"], "task_hidden_size", 1, MAX_HIDDEN_SIZE)
    max_task = check.integer(data["max_task_frames"], "max_task_frames", 1, MAX_TASK_FRAMES)

    graphs = data["graphs"]
    if not isinstance(graphs, list) or not graphs:
        check.fail("graphs", "a non-empty list of graph objects", graphs)
    seen = set()
    for i, graph in enumerate(graphs):
        where = f"graphs[{i}]"
        check.keys(graph, where, _GRAPH_REQUIRED, _GRAPH_OPTIONAL)
        check.choice(graph["role"], f"{where}.role", ROLES)
        check.choice(graph["format"], f"{where}.format", FORMATS)
        check.choice(graph["precision"], f"{where}.precision", PRECISIONS)
        variant = (graph["role"], graph["format"], graph["precision"])
        if variant in seen:
            check.fail(where, "the only graph of its role, format and precision", " ".join(variant))
        seen.add(variant)
        _check_file_entry(check, graph, where)
        for kind in ("inputs", "outputs"):
            tensors = graph[kind]
            if not isinstance(tensors, list) or not tensors:
                check.fail(f"{where}.{kind}", "a non-empty list of tensor objects", tensors)
            for j, tensor in enumerate(tensors):
                at = f"{where}.{kind}[{j}]"
                check.keys(tensor, at, _TENSOR_KEYS)
                check.string(tensor["name"], f"{at}.name")
                check.string(tensor["dtype"], f"{at}.dtype")
                shape = tensor["shape"]
                if not isinstance(shape, list) or not all(
                        isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
                        for d in shape):
                    check.fail(f"{at}.shape", "a list of positive integers or dimension names", shape)
        buckets = graph.get("frame_buckets")
        if buckets is not None:
            if not isinstance(buckets, list) or not buckets:
                check.fail(f"{where}.frame_buckets", "null or a non-empty list of frame counts", buckets)
            for j, bucket in enumerate(buckets):
                check.integer(bucket, f"{where}.frame_buckets[{j}]", 1, max_task)
            if len(set(buckets)) != len(buckets):
                check.fail(f"{where}.frame_buckets", "unique frame counts", buckets)
            if graph["role"] == "task" and max(buckets) != max_task:
                # A clip of up to max_task_frames frames must find a bucket that holds it.
                check.fail(f"{where}.frame_buckets", f"frame counts whose largest is max_task_frames ({max_task})",
                           buckets)
        _check_bucket_files(check, graph, where)
        if graph.get("probe") is not None:
            _check_probe(check, graph, f"{where}.probe", max(window, max_task))

    streaming = data.get("streaming")
    if streaming is not None:
        check.keys(streaming, "streaming", (), _STREAMING_KEYS)
        for key, value in streaming.items():
            if value is None:
                continue
            if key == "score_threshold":
                check.number(value, f"streaming.{key}", 0.0, 1.0)
            elif key == "smoothing_seconds":
                try:
                    check_smoothing_seconds(value, f"streaming.{key}")
                except InvalidArgumentError as error:
                    raise _damaged_stream_field(source, error) from None
            elif key == "background_labels":
                if not isinstance(value, list) or any(label not in labels for label in value) \
                        or len(set(value)) != len(value):
                    check.fail(f"streaming.{key}", "a list of distinct labels from `labels`", value)
            else:
                check.number(value, f"streaming.{key}", 0.0, MAX_STREAMING_SECONDS, low_open=True)
        hop, context = streaming.get("hop_seconds"), streaming.get("context_seconds")
        if (hop is None) != (context is None):
            check.fail("streaming", "both hop_seconds and context_seconds, or neither", streaming)
        longest = segment_samples(max_task, frontend["hop_samples"]) / frontend["sample_rate_hz"]
        if hop is not None:
            try:  # the limits create_stream holds the defaults to (one segment of max_task_frames at most)
                check_stream_timing(hop, context, longest, ("streaming.hop_seconds", "streaming.context_seconds"))
            except InvalidArgumentError as error:
                raise _damaged_stream_field(source, error) from None


def _damaged_stream_field(source, error: InvalidArgumentError) -> BundleError:
    """A streaming field the runtime's own check refused (its message names the field)."""
    return BundleError(f"{source}: manifest field {error} The manifest is damaged or was not written by "
                       f"`hear-edge export`: re-export or re-copy the bundle.")


def _check_probe(check: _Checker, graph: dict, where: str, max_frames: int) -> None:
    """A graph's self-test probe (hear_edge.bundle.selftest): its input recipe for each graph input, a summary
    for each graph output, a tolerance."""
    probe = graph["probe"]
    check.keys(probe, where, _PROBE_KEYS)
    if probe["formula"] not in PROBE_FORMULAS:
        check.fail(f"{where}.formula", f"one of {list(PROBE_FORMULAS)} (a newer hear-edge may have written "
                                       f"another: upgrade hear-edge)", probe["formula"])
    check.integer(probe["seed"], f"{where}.seed", 0, 2 ** 32)
    frames = check.integer(probe["frames"], f"{where}.frames", 1, max_frames)
    signature = probe["signature"]
    if signature is not None:
        check.string(signature, f"{where}.signature")
    check.number(probe["tolerance"], f"{where}.tolerance", 0.0, 1.0, low_open=True)
    check.string(probe["recorded_with"], f"{where}.recorded_with")
    inputs, outputs = probe["inputs"], probe["outputs"]
    names = {t.get("name"): t.get("dtype") for t in graph["inputs"]}
    check.keys(inputs, f"{where}.inputs", list(names))
    for name, dtype in names.items():
        at = f"{where}.inputs.{name}"
        integer = isinstance(dtype, str) and dtype.startswith("int")
        check.keys(inputs[name], at, ("shape", "fill") if integer else ("shape", "mean", "std"))
        shape = inputs[name]["shape"]
        if not isinstance(shape, list) or not shape or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape) \
                or math.prod(shape) > MAX_PROBE_ELEMENTS:
            check.fail(f"{at}.shape", f"a list of positive integers of at most {MAX_PROBE_ELEMENTS} elements",
                       shape)
        if integer:
            check.integer(inputs[name]["fill"], f"{at}.fill", 0, frames)
        else:
            check.number(inputs[name]["mean"], f"{at}.mean", -1e6, 1e6)
            check.number(inputs[name]["std"], f"{at}.std", 0.0, 1e6)
    check.keys(outputs, f"{where}.outputs", [t.get("name") for t in graph["outputs"]])
    for name, summary in outputs.items():
        at = f"{where}.outputs.{name}"
        check.keys(summary, at, ("rms", "projections"))
        check.number(summary["rms"], f"{at}.rms", 0.0, 1e30)
        projections = summary["projections"]
        if not isinstance(projections, list) or len(projections) != PROBE_PROJECTIONS:
            check.fail(f"{at}.projections", f"a list of {PROBE_PROJECTIONS} numbers", projections)
        for j, value in enumerate(projections):
            check.number(value, f"{at}.projections[{j}]", -1e30, 1e30)
