"""The bundle schema's vocabulary: versions, graph formats, precisions and roles; read by the manifest and its checker."""

from __future__ import annotations

from .errors import BundleError
from .runtimes.base import FORMAT_BACKENDS

# 2: free-length ONNX graphs, LiteRT window buckets, the `streaming` defaults, manifest.json.sha256.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
FORMATS = tuple(FORMAT_BACKENDS)  # ("onnx", "tflite"): the formats some backend runs
PRECISIONS = ("fp32", "int8")
ROLES = ("acoustic_window", "task")


def check_schema_version(data, source: str) -> int:
    """The manifest's schema version, after checking that this hear-edge reads it."""
    if not isinstance(data, dict):
        raise BundleError(f"{source}: the manifest is not a JSON object; the bundle is corrupt.")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        raise BundleError(f"{source}: manifest schema_version {version!r} is not one this hear-edge "
                          f"reads (it reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}). Upgrade "
                          f"hear-edge, or re-export the bundle with this version's `hear-edge export`.")
    return version
