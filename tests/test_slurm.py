"""prepare and tokenize through a real single-node Slurm cluster (scripts/slurm_cluster.sh), against the local run.

Each run is submitted, then the same command is run again while the jobs are queued (it must submit
nothing), one task is cancelled with scancel, and the next runs must redo exactly that task and finish
with output byte-identical to the local executor's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_runs import (
    PREPARE,
    REPO,
    SAMPLE,
    assert_same_clean,
    assert_same_tokens,
    flm,
    flm_json,
    reference,
    unavailable,
    wait_for,
)

pytestmark = pytest.mark.cluster
SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
ON_SLURM = ["--executor", "slurm", "--set", "executor.slurm.partition=debug"]


def _free_port_pair() -> int:
    """A port p with p and p + 1 free on 127.0.0.1 (slurmctld and slurmd)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running single-node cluster of this machine; its environment (SLURM_CONF) for the clients."""
    missing = [cmd for cmd in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(cmd) is None]
    if missing:
        unavailable(f"Slurm is not installed ({', '.join(missing)} missing): bash scripts/slurm_cluster.sh install")
    if os.geteuid() != 0:
        unavailable("the single-node Slurm cluster runs its daemons as root")
    env = {**os.environ, "FLM_SLURM_DIR": str(tmp_path_factory.mktemp("slurm")),
           "FLM_SLURM_PORT": str(_free_port_pair())}
    start = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, check=False)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield {"SLURM_CONF": f"{env['FLM_SLURM_DIR']}/slurm.conf"}
    finally:
        stop = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, check=False)
        assert stop.returncode == 0, stop.stdout + stop.stderr


def _client(env: dict[str, str], *command: str) -> str:
    """Run a Slurm client command; its stdout."""
    for _ in range(5):  # a client dies of SIGPIPE now and then when slurmctld, under load, drops its connection
        proc = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=False)
        if proc.returncode >= 0:
            break
        time.sleep(1)
    assert proc.returncode == 0, f"{' '.join(command)}: {proc.stderr}"
    return proc.stdout


def _squeue(env: dict[str, str], *args: str) -> list[str]:
    return _client(env, "squeue", "-h", *args).splitlines()


def _job_ids(env: dict[str, str]) -> set[str]:
    return {line.split("_")[0] for line in _squeue(env, "-o", "%i")}


def _idle(env: dict[str, str]) -> bool:
    """Nothing left that can run: the queue holds only jobs waiting on a dependency, and slurmctld has marked
    the first of them as never satisfied (until it re-evaluates the dependencies after the cancel, a job
    behind the cancelled task shows plain "Dependency", as a job about to start does)."""
    reasons = [line.split()[-1] for line in _squeue(env, "-t", "PD,R,CG", "-o", "%i %r")]
    return all(r.startswith("Dependency") for r in reasons) and (
        not reasons or "DependencyNeverSatisfied" in reasons)


def _node(env: dict[str, str], state: str) -> None:
    """Drain the node (jobs stay queued, so a rerun meets them queued) or resume it."""
    _client(env, "scontrol", "update", "NodeName=flm-node", f"State={state}", "Reason=flm-test")


def _daemon_log(env: dict[str, str], job: str) -> str:
    """What slurmctld and slurmd logged of `job`, for a failure message."""
    folder = Path(env["SLURM_CONF"]).parent
    lines = [f"{name}: {line}" for name in ("slurmctld.log", "slurmd.log")
             for line in (folder / name).read_text(errors="replace").splitlines()
             if re.search(rf"\b{job}\b", line)]
    return "\n".join(lines[-60:])


def _cancel_first_task_once_running(env: dict[str, str], job: str) -> None:
    """Let the drained node run again and cancel task 0 of `job` as soon as it starts (seconds before its
    Python has even imported datatrove)."""
    task = f"{job}_0"
    _node(env, "RESUME")
    wait_for(lambda: task in _squeue(env, "-t", "RUNNING", "-o", "%i"), 120, f"task {task} to start", poll=0.05)
    _client(env, "scancel", task)


def _rerun_while_queued_submits_nothing(args: list[object], env: dict[str, str], submitted: list[str]) -> None:
    proc = flm(*args, env=env, check=False)
    assert proc.returncode == 1 and "still queued or running" in " ".join((proc.stdout + proc.stderr).split())
    assert _job_ids(env) <= set(submitted), "a rerun while the jobs are queued submitted new jobs"


def test_prepare_on_slurm_matches_local(slurm: dict[str, str], tmp_path: Path,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    want = reference(tmp_path_factory)
    out = tmp_path / "clean"
    args: list[object] = ["data", "prepare", "--input", SAMPLE, "--out", out, *PREPARE, *ON_SLURM]
    _node(slurm, "DRAIN")
    jobs = flm_json(*args, env=slurm)["submitted_jobs"]["pile"]
    assert len(jobs) == 5  # filter, exact find, MinHash buckets, MinHash cluster, write
    _rerun_while_queued_submits_nothing(args, slurm, jobs)
    _cancel_first_task_once_running(slurm, jobs[0])
    wait_for(lambda: _idle(slurm), 300, "the first submission to run what it can")
    filter_stage = out / ".datatrove" / "pile" / "stages" / "filter"
    assert not (filter_stage / "completions" / "00000").exists(), "the cancelled task finished before scancel"
    # The rerun cancels the chain left waiting on the cancelled task and submits again: of the filter
    # stage, only the cancelled task.
    again = flm_json(*args, env=slurm)["submitted_jobs"]["pile"]
    assert len(again) == 5 and not set(again) & set(jobs)
    assert json.loads((filter_stage / "ranks_to_run.json").read_text()) == [0]
    wait_for(lambda: not _squeue(slurm), 300, "the second submission to finish")
    done = flm_json(*args, env=slurm)
    assert done["submitted_jobs"] == {} and done["sources"]["pile"]["balanced"]
    assert_same_clean(out, want / "clean")


def test_tokenize_on_slurm_matches_local(slurm: dict[str, str], tmp_path: Path,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    want = reference(tmp_path_factory)
    out = tmp_path / "tokens"
    args: list[object] = ["data", "tokenize", "--input", want / "clean", "--out", out, "--tokenizer",
                          want / "tokenizer", *ON_SLURM]
    _node(slurm, "DRAIN")
    first = flm_json(*args, env=slurm)["tokenize"]
    assert first["executor"] == "slurm" and len(first["submitted_jobs"]) == 1 and first["shards_written"] == 0
    _rerun_while_queued_submits_nothing(args, slurm, first["submitted_jobs"])
    _cancel_first_task_once_running(slurm, first["submitted_jobs"][0])
    wait_for(lambda: not _squeue(slurm), 120, "the other task to finish")
    # The rerun records the finished piece and submits only the cancelled one (one task per input file).
    second = flm_json(*args, env=slurm)["tokenize"]
    assert len(second["submitted_jobs"]) == 1
    work = json.loads((out / ".tokenize" / "work.json").read_text())
    assert [Path(path).name for _, path, _ in work] == ["00000_00000.jsonl.zst"]
    wait_for(lambda: not _squeue(slurm), 120, "the resubmitted task to finish")
    done = flm_json(*args, env=slurm)["tokenize"]
    assert done["submitted_jobs"] == [] and done["shards_written"] == 1
    assert_same_tokens(out, want / "tokens")


def test_train_sbatch_script_runs_and_resumes_after_requeue(slurm: dict[str, str], tmp_path: Path,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """The script of `flm train --dry-run --launcher slurm` trains the tiny stage on CPU through Slurm; the
    warning signal mid-run (SIGUSR1, as before a time limit or preemption) saves, requeues, and the requeued
    job resumes from that checkpoint and finishes."""
    want = reference(tmp_path_factory)
    mixture = tmp_path / "mixture.yaml"
    mixture.write_text(json.dumps({"seq_len": 32, "seed": 7, "valid_fraction": 0.02,
                                   "cache_dir": str(tmp_path / "index"),
                                   "sources": [{"name": "pile", "path": str(want / "tokens" / "pile")}]}))
    run_dir, steps = tmp_path / "run", 120  # long enough that the signal lands mid-run on a quiet machine
    overrides = ["train.device=cpu", f"train.steps={steps}", "train.global_batch=4", "train.micro_batch=2",
                 "train.save_every=5", "train.keep_last=2", "train.eval_every=0", "train.log_every=1",
                 "optim.warmup_steps=2"]
    written = flm_json("train", "--stage", "tiny", "--dry-run", "--launcher", "slurm", "--mixture", mixture,
                       "--run-dir", run_dir, *[a for kv in overrides for a in ("--set", kv)])
    script = Path(written["sbatch_script"])
    text = script.read_text()
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@120" in text and "srun" in text
    assert "--gpus-per-node" not in text  # train.device=cpu asks for no GPU
    job = _client(slurm, "sbatch", "--parsable", str(script)).strip()
    checkpoints = run_dir / "checkpoints"
    wait_for(lambda: list(checkpoints.glob("step-*")), 300, "the first checkpoint")
    _client(slurm, "scancel", "--batch", "--signal=USR1", job)
    # Slurm holds a requeued job for the credential lifetime (AuthInfo cred_expire: 20 s on the test cluster,
    # 120 s by default) and then starts it on its own. Forcing it to start sooner (scontrol update StartTime=now)
    # can launch it while slurmd still holds the first run's credential as revoked: the launch fails and the job
    # leaves the queue without running again.
    wait_for(lambda: _squeue(slurm, "-o", "%T %r") == ["PENDING BeginTime"], 120, "the job to be requeued")
    wait_for(lambda: not _squeue(slurm), 600, "the requeued job to finish")
    log = (run_dir / f"slurm-{job}.out").read_text()
    first, marker, second = log.partition(f"flm: job {job} (restart 1)")
    assert marker and "flm: SIGUSR1" in first, f"{log}\n--- the daemons' log of job {job}:\n{_daemon_log(slurm, job)}"
    saved = re.search(r"interrupted; saved step (\d+)/", first)
    finished = re.search(rf"trained step {steps}/{steps} \(from (\d+)\)", second)
    assert saved and finished and finished.group(1) == saved.group(1) != "0", f"no resume from the saved step: {log}"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))[-1] == f"step-{steps}"
