"""A bundle: a `NAME.hearedge/` folder of graphs and the `manifest.json` that describes them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hear_edge.errors import BundleError
from hear_edge.signal.frontend import FrontendParams
from hear_edge.signal.segments import segment_samples
from .manifest_check import validate_manifest
from .schema import FORMATS, PRECISIONS, SCHEMA_VERSION, check_schema_version  # noqa: F401 (re-exported)

logger = logging.getLogger("hear_edge")

MANIFEST_NAME = "manifest.json"
CHECKSUM_NAME = MANIFEST_NAME + ".sha256"   # hex sha256 of manifest.json's bytes; from schema 2 on
MAX_MANIFEST_BYTES = 10 << 20               # far above any real manifest; read before parsing


# How an ONNX TensorProto names an external-data file: StringStringEntryProto field 1 (tag 0x0a),
# length 8, "location". Bundles embed their weights; a graph that points elsewhere would make
# onnxruntime open a file outside the bundle.
_ONNX_EXTERNAL_DATA_MARK = b"\x0a\x08location"


def sha256_file(path: str | Path) -> str:
    return _sha256_finding(path, b"")[0]


def _sha256_finding(path: str | Path, find: bytes) -> tuple[str, bool]:
    """(hex sha256 of a file, whether `find` occurs in it), in one pass of 1 MB blocks."""
    digest, found, tail = hashlib.sha256(), False, b""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            if find and not found:
                found = find in tail + block
                tail = block[-len(find):]
    return digest.hexdigest(), found


def signature_name(role: str, frames: int) -> str:
    """The LiteRT signature of one length bucket: `window_300`, `task_1500`."""
    return f"{'window' if role == 'acoustic_window' else 'task'}_{frames}"


@dataclass
class TensorSpec:
    name: str
    shape: list  # ints, or a string for a dimension the graph leaves free
    dtype: str


@dataclass
class GraphSpec:
    role: str        # "acoustic_window" or "task"
    format: str      # "onnx" or "tflite"
    precision: str   # "fp32" or "int8"
    file: str
    sha256: str
    bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # None when the frame axis is free (or, in schema 1, a window graph's one static length);
    # else the static lengths, one signature each (`signature_name`).
    frame_buckets: list[int] | None = None
    # The self-test: the graph's outputs for a fixed probe input, recorded at export
    # (`hear_edge.bundle.selftest`); None in bundles exported before it.
    probe: dict | None = None
    # None: every bucket is a signature of `file`. Else one single-signature file per bucket, in
    # frame_buckets order, each {"file", "sha256", "bytes"} (the compat export for old TFLite
    # runtimes, `hear_edge.export.compat`); `file` is then the first of them.
    bucket_files: list[dict[str, Any]] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "GraphSpec":
        data = dict(data)
        data["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
        data["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
        return cls(**data)

    @property
    def total_bytes(self) -> int:
        """Bytes of the graph's files: its one file, or all its bucket files."""
        return sum(entry["bytes"] for entry in self.bucket_files) if self.bucket_files else self.bytes

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass
class Manifest:
    model_name: str
    model_version: str
    labels: list[str]
    frontend: FrontendParams
    window_frames: int              # acoustic frames per window (mel frames are twice that)
    overlap_frames: int
    acoustic_hidden_size: int
    task_hidden_size: int
    max_task_frames: int            # the Task Model's position table; longer clips are segmented
    graphs: list[GraphSpec]
    provenance: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # How to stream this model: {"clip_seconds": the length the head was trained on (None if
    # unknown), "context_seconds", "hop_seconds", optionally "score_threshold" (the recommended
    # detection threshold, chosen on a validation stream), "smoothing_seconds" (the span whose
    # results' mean scores detections read, chosen with it) and "background_labels" (labels that are
    # never detections)}; empty in bundles older than schema 2.
    streaming: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def sample_rate_hz(self) -> int:
        return self.frontend.sample_rate_hz

    @property
    def embedding_size(self) -> int:
        return 3 * self.task_hidden_size

    @property
    def window_seconds(self) -> float:
        return self.window_frames * 2 * self.frontend.hop_samples / self.frontend.sample_rate_hz

    @property
    def segment_samples(self) -> int:
        """Longest piece of audio (samples) classify runs at once; longer audio is segmented
        (`hear_edge.signal.segments`): 2 * max_task_frames hops, 30 s for the official 1500 frames."""
        return segment_samples(self.max_task_frames, self.frontend.hop_samples)

    @property
    def stream_defaults(self) -> dict[str, float]:
        """The context and hop a stream takes when not told (older bundles: one window, 1 s hop)."""
        settings = self.streaming or stream_settings(None, self.window_seconds)
        return {"context_seconds": float(settings["context_seconds"]), "hop_seconds": float(settings["hop_seconds"])}

    @property
    def stream_score_threshold(self) -> float | None:
        """The detection threshold the bundle recommends for streams (None: it recommends none)."""
        threshold = self.streaming.get("score_threshold")
        return None if threshold is None else float(threshold)

    @property
    def stream_smoothing_seconds(self) -> float:
        """The score smoothing the bundle recommends for stream detections (0.0: none, as in bundles without it)."""
        return float(self.streaming.get("smoothing_seconds") or 0.0)

    @property
    def background_labels(self) -> list[str]:
        """Labels a stream never reports as detections: the manifest's list, else `default_background_labels`."""
        recorded = self.streaming.get("background_labels")
        return list(recorded) if recorded is not None else default_background_labels(self.labels)

    def graph(self, role: str, fmt: str, precision: str) -> GraphSpec | None:
        for spec in self.graphs:
            if (spec.role, spec.format, spec.precision) == (role, fmt, precision):
                return spec
        return None

    def variants(self) -> list[tuple[str, str]]:
        """(format, precision) pairs for which both graphs are present."""
        found = []
        for fmt in FORMATS:
            for precision in PRECISIONS:
                if self.graph("acoustic_window", fmt, precision) and self.graph("task", fmt, precision):
                    found.append((fmt, precision))
        return found

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sample_rate_hz"] = self.sample_rate_hz
        for graph in data["graphs"]:
            if graph["probe"] is None:  # as bundles without probes have always been written
                del graph["probe"]
            if graph["bucket_files"] is None:  # so that hear-edge releases before the field read the bundle
                del graph["bucket_files"]
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> "Manifest":
        check_schema_version(data, source)
        return cls._from_versioned(data, source)

    @classmethod
    def _from_versioned(cls, data: dict, source: str) -> "Manifest":
        """`from_dict` of data whose schema version is checked (`read_manifest` checks it before the checksum)."""
        validate_manifest(data, source)
        try:
            data = dict(data)
            data.pop("sample_rate_hz", None)
            data["frontend"] = FrontendParams(**data["frontend"])
            data["graphs"] = [GraphSpec.from_dict(g) for g in data["graphs"]]
            data["streaming"] = data.get("streaming") or {}
            return cls(**data)
        except (KeyError, TypeError) as error:
            raise BundleError(f"{source}: the manifest is malformed ({type(error).__name__}: {error}).") from None

    def write(self, bundle_dir: Path) -> Path:
        """Write manifest.json and, beside it, manifest.json.sha256 (its checksum, which load verifies)."""
        path = Path(bundle_dir) / MANIFEST_NAME
        data = (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8")
        path.write_bytes(data)
        (Path(bundle_dir) / CHECKSUM_NAME).write_text(hashlib.sha256(data).hexdigest() + "\n")
        return path


def default_background_labels(labels: list[str]) -> list[str]:
    """The labels named like Speech Commands' `_unknown_` and `_silence_` (between underscores):
    what a keyword spotter hears when no keyword is said."""
    return [label for label in labels if len(label) > 2 and label.startswith("_") and label.endswith("_")]


def stream_settings(clip_seconds: float | None, window_seconds: float) -> dict[str, Any]:
    """How to stream a head trained on clips of `clip_seconds`: a context of one training clip
    (at most one acoustic window), four results per context and at least one a second. A head
    trained on 1 s words and shown 6 s of context hears mostly audio unlike its training."""
    context = window_seconds if clip_seconds is None else min(window_seconds, max(0.1, round(clip_seconds, 2)))
    return {"clip_seconds": clip_seconds, "context_seconds": context, "hop_seconds": min(1.0, round(context / 4, 2))}


def bundle_file(bundle_dir: str | Path, name: str, what: str) -> Path:
    """The real path of `name` in the bundle; refused unless it resolves to a regular file inside the folder.

    Checked before anything is opened: a manifest (or a symlink in the bundle) must not make the
    runtime read a file elsewhere on the device.
    """
    root = os.path.realpath(bundle_dir)
    real = os.path.realpath(os.path.join(root, name))
    if os.path.isabs(name) or os.path.commonpath([root, real]) != root or real == root:
        raise BundleError(f"bundle {bundle_dir}: its {what} {name!r} resolves to {real}, outside the bundle "
                          f"folder; a bundle may only name files inside itself. Re-export or re-copy the bundle.")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise BundleError(f"bundle {bundle_dir} is missing its {what} {name}; re-export or re-copy the bundle.") from None
    if not stat.S_ISREG(mode):
        raise BundleError(f"bundle {bundle_dir}: its {what} {name} is not a regular file; re-export or "
                          f"re-copy the bundle.")
    return Path(real)


def read_manifest(bundle_dir: str | Path, verify_hashes: bool = True) -> Manifest:
    """Read a bundle's manifest and check that every graph it lists is there with its recorded size
    (a stat each); with `verify_hashes`, check every graph's sha256 too.

    Raises:
        BundleError: no such folder, a missing, resized or (with `verify_hashes`) changed file, a
            manifest that is malformed, fails its checksum or has an unknown schema version.
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle {bundle_dir} does not exist or is not a folder (a bundle is a "
                          f"NAME.hearedge/ folder made by `hear-edge export`).")
    if not os.path.lexists(path):
        raise BundleError(f"bundle {bundle_dir} has no {MANIFEST_NAME}; it is not a hear-edge bundle.")
    real = bundle_file(bundle_dir, MANIFEST_NAME, "manifest")
    size = real.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES} bytes. "
                          f"The bundle is corrupt: re-export or re-copy it.")
    raw = real.read_bytes()[:MAX_MANIFEST_BYTES + 1]
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON ({error}); the bundle is corrupt.") from None
    except RecursionError:
        raise BundleError(f"{path} nests its JSON too deeply to be a manifest; the bundle is corrupt: "
                          f"re-export or re-copy it.") from None
    _verify_checksum(bundle_dir, raw, check_schema_version(data, str(path)))
    manifest = Manifest._from_versioned(data, str(path))
    for spec in manifest.graphs:  # every listed file, even one this load will not open: a damaged copy shows now
        (verify_graph if verify_hashes else check_graph_size)(bundle_dir, spec)
        if spec.bucket_files:
            verify_bucket_files(bundle_dir, spec, hashes=verify_hashes)
    return manifest


def _verify_checksum(bundle_dir: Path, raw: bytes, schema_version: int) -> None:
    """manifest.json against manifest.json.sha256: catches accidental change, not a deliberate edit."""
    if not os.path.lexists(Path(bundle_dir) / CHECKSUM_NAME):
        if schema_version >= 2:
            raise BundleError(f"bundle {bundle_dir} has no {CHECKSUM_NAME}, which schema {schema_version} "
                              f"manifests must have; re-export or re-copy the bundle.")
        logger.warning("bundle %s (schema %d) has no %s: its manifest is not covered by a checksum",
                       bundle_dir, schema_version, CHECKSUM_NAME)
        return
    path = bundle_file(bundle_dir, CHECKSUM_NAME, "manifest checksum")
    expected = path.read_bytes()[:200].decode("ascii", "replace").strip()
    actual = hashlib.sha256(raw).hexdigest()
    if expected != actual:
        raise BundleError(f"{Path(bundle_dir) / MANIFEST_NAME} fails its checksum: sha256 {actual[:16]}..., "
                          f"{CHECKSUM_NAME} says {expected[:16]!r}...; the manifest was changed or damaged. "
                          f"Re-copy the bundle.")


def check_graph_size(bundle_dir: Path, spec: GraphSpec) -> Path:
    """The graph's real path inside the bundle, after checking that it exists with the manifest's size."""
    return _check_size(bundle_dir, spec, spec.file, spec.bytes)


def verify_graph(bundle_dir: Path, spec: GraphSpec) -> Path:
    """The graph's real path inside the bundle, after checking its size and sha256 against the manifest."""
    return _verify_file(bundle_dir, spec, spec.file, spec.bytes, spec.sha256)


def verify_bucket_files(bundle_dir: Path, spec: GraphSpec, hashes: bool = True) -> dict[int, Path]:
    """{bucket frames: real path} of a graph written one file per bucket, each file's size (and, with
    `hashes`, sha256) checked against the manifest; {} for a graph of one file."""
    return {frames: (_verify_file(bundle_dir, spec, entry["file"], entry["bytes"], entry["sha256"]) if hashes
                     else _check_size(bundle_dir, spec, entry["file"], entry["bytes"]))
            for frames, entry in zip(spec.frame_buckets or [], spec.bucket_files or [])}


def _check_size(bundle_dir: Path, spec: GraphSpec, name: str, expected_bytes: int) -> Path:
    what = f"{spec.format} {spec.precision} {spec.role} graph"
    try:
        path = bundle_file(bundle_dir, name, what)
    except BundleError:
        if os.path.lexists(Path(bundle_dir) / name):
            raise
        raise BundleError(f"bundle {bundle_dir} is missing its {what} {name} (the manifest says "
                          f"{expected_bytes} bytes, found no file); the copy is incomplete. Re-copy or re-export "
                          f"the bundle.") from None
    size = path.stat().st_size
    if size != expected_bytes:
        raise BundleError(f"{path} is {size} bytes, the manifest says {expected_bytes}; the file was changed "
                          f"or damaged. Re-copy the bundle.")
    return path


def _verify_file(bundle_dir: Path, spec: GraphSpec, name: str, expected_bytes: int, expected_sha256: str) -> Path:
    path = _check_size(bundle_dir, spec, name, expected_bytes)
    actual, external = _sha256_finding(path, _ONNX_EXTERNAL_DATA_MARK if spec.format == "onnx" else b"")
    if actual != expected_sha256:
        raise BundleError(f"{path} fails its hash: sha256 {actual[:16]}..., the manifest says "
                          f"{expected_sha256[:16]}...; the file was changed or damaged. Re-copy the bundle.")
    if external:
        raise BundleError(f"{path} refers to external data files; hear-edge bundles carry their weights "
                          f"inside each graph, and an external reference could name a file outside the "
                          f"bundle. Re-export the bundle with `hear-edge export`.")
    return path
