"""A graph written one file per length bucket (the compat export for old TFLite runtimes), run as one graph."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from hear_edge.bundle.manifest import GraphSpec, signature_name, verify_bucket_files, verify_graph
from hear_edge.errors import BundleError


def open_spec_graph(backend: str, bundle_dir: str | Path, spec: GraphSpec, num_threads: int):
    """Open the graph `spec` describes: its one file, or its file per bucket (`BucketFilesGraph`)."""
    from hear_edge.runtimes.base import open_graph

    if spec.bucket_files:
        return BucketFilesGraph(backend, verify_bucket_files(Path(bundle_dir), spec), spec, num_threads)
    return open_graph(backend, verify_graph(Path(bundle_dir), spec), spec.input_names, spec.output_names,
                      num_threads)


class BucketFilesGraph:
    """The GraphSession interface over one single-signature file per bucket.

    The first bucket's file opens at once (a file the runtime refuses fails the load); each other
    opens when a clip first needs its bucket, so a run of short clips never loads the long ones.
    """

    def __init__(self, backend: str, paths: dict[int, Path], spec: GraphSpec, num_threads: int):
        self.backend, self.num_threads = backend, num_threads
        self.input_names, self.output_names = spec.input_names, spec.output_names
        self.paths = {signature_name(spec.role, frames): path for frames, path in paths.items()}
        self.path = next(iter(paths.values()))
        self._first = next(iter(self.paths))  # the first bucket's signature: opened at load
        self._sessions = {}
        self._lock = threading.Lock()
        self._session(self._first)

    def _session(self, signature: str):
        with self._lock:
            if signature not in self._sessions:
                from hear_edge.runtimes.base import open_graph

                if signature not in self.paths:
                    raise BundleError(f"{self.path.parent} has no file for bucket {signature!r}; it has "
                                      f"{sorted(self.paths)}.")
                self._sessions[signature] = open_graph(self.backend, self.paths[signature], self.input_names,
                                                       self.output_names, self.num_threads)
            return self._sessions[signature]

    def output_shape(self, name: str) -> list:
        return self._session(self._first).output_shape(name)

    @property
    def runtime(self) -> str:
        """The runtime package and its version (the self-test names it), as its buckets' sessions say."""
        return self._session(self._first).runtime

    def run(self, inputs: dict[str, np.ndarray], signature: str | None = None,
            transient: bool = False) -> dict[str, np.ndarray]:
        signature = signature or self._first
        return self._session(signature).run(inputs, signature, transient)
