"""The bundle schema's vocabulary: versions, graph formats, precisions and roles; read by the manifest and its checker."""

from __future__ import annotations

from hear_edge.errors import BundleError
from hear_edge.runtimes.base import FORMAT_BACKENDS

# 2: free-length ONNX graphs, LiteRT window buckets, the `streaming` defaults, manifest.json.sha256.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
FORMATS = tuple(FORMAT_BACKENDS)  # ("onnx", "tflite"): the formats some backend runs
PRECISIONS = ("fp32", "int8")
ROLES = ("acoustic_window", "task")
# The graphs' tensor names: export names them, the manifest records them, the engine feeds and reads them.
LOG_MEL, ACOUSTIC, SPECTRUM_PAIRS, LOGITS, POOLED = "log_mel", "acoustic", "spectrum_pairs", "logits", "pooled"
VALID_FRAMES = "valid_frames"  # the masked (bucketed) graphs' extra input: how many frames are real
WINDOW_INPUTS, WINDOW_OUTPUTS = (LOG_MEL,), (ACOUSTIC,)
TASK_INPUTS, TASK_OUTPUTS = (ACOUSTIC, SPECTRUM_PAIRS), (LOGITS, POOLED)


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
