"""Batch classification on a Dask distributed cluster: a local cluster of worker processes."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from hear_edge.tools.batch import expand_inputs, run_batch

distributed = pytest.importorskip("distributed")

BUNDLE = REPO_ROOT / "tests" / "data" / "tiny-golden.hearedge"
CLIPS = REPO_ROOT / "examples" / "clips"


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as local:
        yield local


@pytest.fixture
def files(tmp_path):
    for copy in range(3):
        for clip in sorted(CLIPS.glob("*.wav")):
            shutil.copy(clip, tmp_path / f"{copy}-{clip.name}")
    return expand_inputs([tmp_path])


def test_workers_load_the_bundle_once_and_match_the_local_batch(cluster, files, tmp_path):
    from hear_edge.tools.cluster import run_on_cluster

    out = tmp_path / "cluster.jsonl"
    with distributed.Client(cluster) as client:
        done, skipped, failures, reports = run_on_cluster(files, out, client, bundle=BUNDLE, partition_size=2)
    assert (done, skipped, failures) == (12, 0, [])
    assert len(reports) == 6  # 12 files in partitions of 2
    assert all(r["loads"] == 1 for r in reports)  # however many partitions a worker ran, one load
    assert len({r["worker_pid"] for r in reports}) >= 1
    local = tmp_path / "local.jsonl"
    run_batch(files, local, bundle=BUNDLE)
    on_cluster = {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
    here = {r["file"]: r for r in map(json.loads, local.read_text().splitlines())}
    assert on_cluster == here


def test_a_cluster_run_resumes_and_the_cli_takes_a_scheduler(cluster, files, tmp_path):
    out = tmp_path / "cluster.jsonl"
    run_batch(files[:5], out, bundle=BUNDLE)
    result = subprocess.run([sys.executable, "-m", "hear_edge.cli", "classify", *files, "--bundle", str(BUNDLE),
                             "--output", str(out), "--scheduler", cluster.scheduler_address],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{out}: 7 classified, 5 already there" in result.stderr
    assert sorted(json.loads(line)["file"] for line in out.read_text().splitlines()) == files
