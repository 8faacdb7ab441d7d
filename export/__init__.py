"""Export HEAR checkpoints into bundles of ONNX and TFLite graphs (needs the `export` extra: torch)."""

from .api import export_bundle, load_labels

__all__ = ["export_bundle", "load_labels"]
