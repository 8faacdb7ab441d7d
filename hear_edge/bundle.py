"""A bundle: a `NAME.hearedge/` folder of graphs and the `manifest.json` that describes them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError
from .frontend import FrontendParams

# 2: free-length ONNX acoustic windows, LiteRT window buckets, the `streaming` defaults.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "int8")
FORMAT_BACKEND = {"onnx": "onnx", "tflite": "litert"}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

    @classmethod
    def from_dict(cls, data: dict) -> "GraphSpec":
        data = dict(data)
        data["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
        data["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
        return cls(**data)

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
    # unknown), "context_seconds", "hop_seconds"}; empty in bundles older than schema 2.
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
    def stream_defaults(self) -> dict[str, float]:
        """The context and hop a stream takes when not told (older bundles: one window, 1 s hop)."""
        settings = self.streaming or stream_settings(None, self.window_seconds)
        return {"context_seconds": float(settings["context_seconds"]), "hop_seconds": float(settings["hop_seconds"])}

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
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> "Manifest":
        if not isinstance(data, dict):
            raise BundleError(f"{source}: the manifest is not a JSON object.")
        version = data.get("schema_version")
        if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
            raise BundleError(f"{source}: manifest schema_version {version!r} is not one this hear-edge "
                              f"reads (it reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}). Upgrade "
                              f"hear-edge, or re-export the bundle with this version's `hear-edge export`.")
        try:
            data = dict(data)
            data.pop("sample_rate_hz", None)
            data["frontend"] = FrontendParams(**data["frontend"])
            data["graphs"] = [GraphSpec.from_dict(g) for g in data["graphs"]]
            return cls(**data)
        except (KeyError, TypeError) as error:
            raise BundleError(f"{source}: the manifest is malformed ({type(error).__name__}: {error}).") from None

    def write(self, bundle_dir: Path) -> Path:
        path = Path(bundle_dir) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def stream_settings(clip_seconds: float | None, window_seconds: float) -> dict[str, Any]:
    """How to stream a head trained on clips of `clip_seconds`: a context of one training clip
    (at most one acoustic window), four results per context and at least one a second. A head
    trained on 1 s words and shown 6 s of context hears mostly audio unlike its training."""
    context = window_seconds if clip_seconds is None else min(window_seconds, max(0.1, round(clip_seconds, 2)))
    return {"clip_seconds": clip_seconds, "context_seconds": context, "hop_seconds": min(1.0, round(context / 4, 2))}


def read_manifest(bundle_dir: str | Path, verify_hashes: bool = True) -> Manifest:
    """Read a bundle's manifest; with `verify_hashes`, check every graph file's size and sha256."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle {bundle_dir} does not exist or is not a folder (a bundle is a "
                          f"NAME.hearedge/ folder made by `hear-edge export`).")
    if not path.is_file():
        raise BundleError(f"bundle {bundle_dir} has no {MANIFEST_NAME}; it is not a hear-edge bundle.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON ({error}); the bundle is corrupt.") from None
    manifest = Manifest.from_dict(data, source=str(path))
    if verify_hashes:
        for spec in manifest.graphs:
            verify_graph(bundle_dir, spec)
    return manifest


def verify_graph(bundle_dir: Path, spec: GraphSpec) -> Path:
    path = Path(bundle_dir) / spec.file
    if not path.is_file():
        raise BundleError(f"bundle {bundle_dir} is missing its {spec.format} {spec.precision} {spec.role} "
                          f"graph {spec.file}; re-export or re-copy the bundle.")
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise BundleError(f"{path} fails its hash: sha256 {actual[:16]}..., the manifest says "
                          f"{spec.sha256[:16]}...; the file was changed or damaged. Re-copy the bundle.")
    return path
