"""A bundle: a `NAME.hearedge/` folder of graphs and the `manifest.json` that describes them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError
from .frontend import FrontendParams

SCHEMA_VERSION = 1
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
    # Task graphs: None when the frame axis is free; else the static lengths, one signature each.
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
    schema_version: int = SCHEMA_VERSION

    @property
    def sample_rate_hz(self) -> int:
        return self.frontend.sample_rate_hz

    @property
    def embedding_size(self) -> int:
        return 3 * self.task_hidden_size

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
        if version != SCHEMA_VERSION:
            raise BundleError(f"{source}: manifest schema_version {version!r} is not one this hear-edge "
                              f"reads (it reads {SCHEMA_VERSION}). Upgrade hear-edge, or re-export the "
                              f"bundle with this version's `hear-edge export`.")
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
