"""prepare and tokenize on a real local Ray cluster (a head with no CPUs and 2 one-CPU workers, on this machine).

A Ray run is driven from the `flm` process until its tasks finish, so there is no queue to meet on a
rerun; what applies: the output is byte-identical to the local executor's, the accounting balances,
a run stopped mid-way (the driver killed, its tasks with it) is finished by a rerun that keeps the
tasks already done, and a rerun of a finished run changes nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_runs import (
    FLM,
    PREPARE,
    SAMPLE,
    assert_same_clean,
    assert_same_tokens,
    flm_json,
    reference,
    unavailable,
    wait_for,
)

pytestmark = pytest.mark.cluster


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, str]]:
    """The cluster's address, for RAY_ADDRESS; stopped (every Ray process it started) afterwards."""
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        unavailable("Ray is not installed: pip install 'flm[ray]'")
    node = {"object_store_memory": 100 << 20}
    cluster = Cluster()
    try:
        # Each node's metrics agent gets its port up front: a raylet left to read it from the agent's file gives up
        # after 30 s, and on a busy 2-core machine the agent's Python takes longer than that to start.
        cluster.add_node(**node, num_cpus=0, include_dashboard=False, metrics_agent_port=_free_port())  # the head
        for _ in range(2):
            cluster.add_node(**node, num_cpus=1, metrics_agent_port=_free_port())
        yield {"RAY_ADDRESS": cluster.address}
    finally:
        cluster.shutdown()


def test_prepare_on_ray_matches_local(ray_cluster: dict[str, str], tmp_path: Path,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    want = reference(tmp_path_factory)
    out = tmp_path / "clean"
    args: list[object] = ["data", "prepare", "--input", SAMPLE, "--out", out, *PREPARE, "--executor", "ray"]
    # Stop the first run (the driver and so its tasks) once the filter stage is done; the rerun keeps that stage.
    first = subprocess.Popen([FLM, *map(str, args)], env={**os.environ, **ray_cluster}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    stages = out / ".datatrove" / "pile" / "stages"
    try:
        wait_for(lambda: len(list(stages.glob("filter/completions/*"))) == 2 or first.poll() is not None, 300,
                 "the filter stage to complete")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not list(stages.glob("write/completions/*")), "the run was to be stopped before its last stage"
    kept = {p: p.stat().st_mtime_ns for p in stages.glob("filter/completions/*")}
    assert len(kept) == 2
    done = flm_json(*args, env=ray_cluster)
    assert done["executor"] == "ray" and done["sources"]["pile"]["balanced"]
    assert_same_clean(out, want / "clean")
    assert {p: p.stat().st_mtime_ns for p in stages.glob("filter/completions/*")} == kept
    before = {p: p.stat().st_mtime_ns for p in (out / "pile").glob("*.jsonl.zst")}
    flm_json(*args, env=ray_cluster)
    assert {p: p.stat().st_mtime_ns for p in (out / "pile").glob("*.jsonl.zst")} == before


def test_tokenize_on_ray_matches_local(ray_cluster: dict[str, str], tmp_path: Path,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    want = reference(tmp_path_factory)
    out = tmp_path / "tokens"
    result = flm_json("data", "tokenize", "--input", want / "clean", "--out", out, "--tokenizer", want / "tokenizer",
                      "--executor", "ray", env=ray_cluster)["tokenize"]
    assert result["executor"] == "ray" and result["submitted_jobs"] == [] and result["shards_written"] == 1
    assert_same_tokens(out, want / "tokens")
