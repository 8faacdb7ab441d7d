"""Batch classification past one machine, on a Dask distributed cluster (`pip install '.[cluster]'`).

The client splits the file list into partitions and maps them over the cluster's workers; each
worker process loads the bundle once (kept for its later partitions) and classifies its partitions;
the client appends every record to the same resumable results file as `hear_edge.tools.batch`. The
files and the bundle must be at the same paths on every worker (a shared filesystem, or a copy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hear_edge.errors import BackendUnavailableError, HearEdgeError, InvalidArgumentError
from hear_edge.run.classifier import DEFAULT_MAX_RESULTS
from .batch import open_run, result_record

logger = logging.getLogger("hear_edge")

# In each worker process: the models it loaded, and how many times it loaded one (for the tests).
_MODELS: dict = {}
_LOADS = {"count": 0}


def _model(bundle, backend, precision, threads):
    key = (bundle, backend, precision, threads)
    if key not in _MODELS:
        from hear_edge.run.classifier import HearEdge

        _MODELS[key] = HearEdge.load(bundle, backend=backend, precision=precision, num_threads=threads)
        _LOADS["count"] += 1
    return _MODELS[key]


def classify_partition(files: list[str], bundle, backend, precision, threads, top_k) -> dict:
    """Runs on a worker: {"records": [...], "failures": [(file, error)], "worker_pid": ..., "loads": ...}."""
    import os

    model = _model(bundle, backend, precision, threads)
    records, failures = [], []
    for path in files:
        try:
            records.append(result_record(path, model.classify(path, max_results=top_k)))
        except HearEdgeError as error:
            failures.append((path, str(error)))
    return {"records": records, "failures": failures, "worker_pid": os.getpid(), "loads": _LOADS["count"]}


def _client(scheduler):
    try:
        from distributed import Client
    except ModuleNotFoundError:
        raise BackendUnavailableError("running on a cluster needs Dask distributed, which is not installed: "
                                      "pip install '.[cluster]' in a hear-edge checkout (or "
                                      "'dask[distributed]').") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    try:
        return Client(scheduler, timeout="30s"), True
    except (OSError, TimeoutError) as error:
        raise InvalidArgumentError(f"cannot reach the Dask scheduler at {scheduler!r} ({error}); start one with "
                                   f"`dask scheduler` and workers with `dask worker {scheduler}`.") from None


def run_on_cluster(files: list[str], output, scheduler, bundle=None, backend: str = "auto",
                   precision: str = "auto", threads: int = 1, top_k: int | None = DEFAULT_MAX_RESULTS,
                   partition_size: int | None = None,
                   on_progress: Callable[[int, int, str], None] | None = None) -> tuple[int, int, list, list[dict]]:
    """Classify `files` into `output` on the cluster at `scheduler` (an address, or a distributed.Client).

    Returns (classified now, skipped as already done, [(file, error)], per-partition worker reports).
    """
    model, results, todo, skipped = open_run(files, output, bundle, backend, precision, threads)
    client, owned = _client(scheduler)
    try:
        from distributed import as_completed

        workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = partition_size or max(1, -(-len(todo) // (4 * workers)))  # ~4 partitions a worker
        partitions = [todo[i:i + size] for i in range(0, len(todo), size)]
        # None: each worker's own shipped bundle; else the same path on every worker.
        shared = None if bundle is None else str(model.bundle_dir)
        futures = client.map(classify_partition, partitions, bundle=shared, backend=model.backend,
                             precision=model.precision, threads=threads, top_k=top_k, pure=False)
        failures, reports, finished = [], [], 0
        try:
            for _, report in as_completed(futures, with_results=True):
                for record in report["records"]:
                    results.write(record)
                failures += report["failures"]
                finished += len(report["records"]) + len(report["failures"])
                reports.append({"worker_pid": report["worker_pid"], "loads": report["loads"]})
                if on_progress:
                    on_progress(finished, len(todo), report["records"][-1]["file"] if report["records"] else "")
        finally:
            results.close()
    finally:
        if owned:
            client.close()
    return finished - len(failures), skipped, failures, reports
