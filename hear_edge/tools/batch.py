"""Classify many files into one resumable results file (.jsonl or .csv), with a pool of worker processes.

Each worker loads the bundle once. Results are appended and flushed one file at a time, so a run
that stops (Ctrl-C, a crash, a full disk) leaves a valid file, and rerunning the same command skips
the files already in it. Files that fail are reported, not written, and so are retried by a rerun.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from hear_edge.errors import HearEdgeError, InvalidArgumentError, InvalidAudioError
from hear_edge.run.classifier import DEFAULT_MAX_RESULTS
from hear_edge.signal.audio import AUDIO_SUFFIXES

logger = logging.getLogger("hear_edge")

OUTPUT_FORMATS = (".jsonl", ".csv")


def expand_inputs(paths: Iterable[str | Path]) -> list[str]:
    """Files as given, and the audio files under each folder (recursively, sorted by path)."""
    files = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise InvalidAudioError(f"folder {path} holds no audio files (looked for "
                                        f"{', '.join(sorted(AUDIO_SUFFIXES))}).")
            files += [str(p) for p in found]
        else:
            files.append(str(given))
    return files


def result_record(path: str, result) -> dict:
    """One results-file entry: the file and `ClassificationResult.to_dict` (what `classify --json` prints)."""
    return {"file": path, **result.to_dict()}


class ResultsFile:
    """A .jsonl (one record a line) or .csv (file, span, top label, one score column per label) file
    that is appended to, and read back to know which files are done."""

    def __init__(self, path: str | Path, labels: list[str]):
        self.path = Path(path)
        self.format = self.path.suffix.lower()
        if self.format not in OUTPUT_FORMATS:
            raise InvalidArgumentError(f"--output must end in .jsonl or .csv, got {self.path.name!r}.")
        self.labels = labels
        self.columns = ["file", "start_s", "end_s", "top_label", "top_score", *(f"score_{x}" for x in labels)]
        self.done = self._read_done()
        self._handle = None

    def _read_done(self) -> set[str]:
        if not self.path.is_file():
            return set()
        text = self.path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            # A run stopped mid-line: drop the partial entry, it will be redone.
            text = text[:text.rfind("\n") + 1]
            self.path.write_text(text, encoding="utf-8")
        if self.format == ".jsonl":
            done = set()
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    done.add(json.loads(line)["file"])
                except (ValueError, KeyError, TypeError):
                    raise InvalidArgumentError(f"{self.path} line {number} is not a results entry; pass a new "
                                               f"--output or fix that line.") from None
            return done
        rows = list(csv.reader(text.splitlines()))
        if rows and rows[0] != self.columns:
            raise InvalidArgumentError(f"{self.path} has columns {rows[0][:5]}..., not those of this model's "
                                       f"results ({self.columns[:5]}...); pass a new --output.")
        return {row[0] for row in rows[1:] if row}

    def write(self, record: dict) -> None:
        if self._handle is None:
            new = not self.path.is_file() or self.path.stat().st_size == 0
            self._handle = open(self.path, "a", encoding="utf-8", newline="")
            if self.format == ".csv" and new:
                csv.writer(self._handle, lineterminator="\n").writerow(self.columns)
        if self.format == ".jsonl":
            self._handle.write(json.dumps(record) + "\n")
        else:
            top = record["categories"][0] if record["categories"] else {"label": "", "score": ""}
            row = [record["file"], record["start_s"], record["end_s"], top["label"], top["score"],
                   *(record["scores"][x] for x in self.labels)]
            csv.writer(self._handle, lineterminator="\n").writerow(row)
        self._handle.flush()
        self.done.add(record["file"])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# ---- the worker side: one model per process ----

_WORKER_MODEL = None


def _init_worker(bundle, backend, precision, threads) -> None:
    global _WORKER_MODEL
    from hear_edge.run.classifier import HearEdge

    _WORKER_MODEL = HearEdge.load(bundle, backend=backend, precision=precision, num_threads=threads)


def _classify_one(path: str, top_k) -> tuple[str, dict | None, str | None]:
    try:
        return path, result_record(path, _WORKER_MODEL.classify(path, max_results=top_k)), None
    except HearEdgeError as error:
        return path, None, str(error)


def open_run(files: list[str], output, bundle, backend: str, precision: str, threads: int):
    """What a batch run and a cluster run start with: (the model, loaded here first so a bad bundle or
    option fails before any work; the results file; the files not in it yet, each once; how many of
    `files` are skipped as done or repeated)."""
    from hear_edge.run.classifier import HearEdge

    model = HearEdge.load(bundle, backend=backend, precision=precision, num_threads=threads)
    results = ResultsFile(output, model.labels)
    todo = list(dict.fromkeys(f for f in files if f not in results.done))
    return model, results, todo, len(files) - len(todo)


def run_batch(files: list[str], output: str | Path, bundle=None, backend: str = "auto", precision: str = "auto",
              threads: int = 1, top_k: int | None = DEFAULT_MAX_RESULTS, jobs: int = 1,
              on_progress: Callable[[int, int, str], None] | None = None) -> tuple[int, int, list[tuple[str, str]]]:
    """Classify `files` into `output`, skipping those already there.

    Returns (classified now, skipped as already done, [(file, error)] for those that failed).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidArgumentError(f"jobs must be a positive int, got {jobs!r}.")
    model, results, todo, skipped = open_run(files, output, bundle, backend, precision, threads)
    failures, finished = [], 0
    try:
        for path, record, error in _results(todo, model, bundle, backend, precision, threads, top_k, jobs):
            finished += 1
            if record is None:
                failures.append((path, error))
            else:
                results.write(record)
            if on_progress:
                on_progress(finished, len(todo), path)
    finally:
        results.close()
    return finished - len(failures), skipped, failures


def _results(todo, model, bundle, backend, precision, threads, top_k, jobs) -> Iterator[tuple]:
    global _WORKER_MODEL
    if jobs == 1 or len(todo) < 2:
        _WORKER_MODEL = model
        for path in todo:
            yield _classify_one(path, top_k)
        return
    context = multiprocessing.get_context("spawn")  # no forked copies of a runtime's threads
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context, initializer=_init_worker,
                             initargs=(str(model.bundle_dir), model.backend, model.precision, threads)) as pool:
        futures = [pool.submit(_classify_one, path, top_k) for path in todo]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def stderr_progress(done: int, total: int, path: str) -> None:
    """A one-line progress display on a terminal; nothing when stderr is not one."""
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        print(f"\r[{done}/{total}] {path[-60:]:<60}", end=end, file=sys.stderr, flush=True)
