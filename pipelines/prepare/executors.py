"""Run the stages with a datatrove executor: LocalPipelineExecutor, SlurmPipelineExecutor or RayPipelineExecutor.

Local and Ray run the stages one after the other here. Completed tasks are skipped (datatrove
completions); when a stage has tasks left to run, the stages after it are cleared first, since
they consumed its earlier output. Slurm submits the whole chain at once with job dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.executor.base import PipelineExecutor
from datatrove.utils.stats import PipelineStats

from flm.pipelines.config import ExecutorConfig
from flm.pipelines.prepare.assembly import Stage
from flm.pipelines.prepare.source_plan import PrepareError


class SlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor without its merge-stats job per stage: flm sums the per-task stats itself,
    and that extra job, left waiting on a cancelled stage, would never run nor leave the queue."""

    def launch_merge_stats(self) -> None:
        return None


class SerialExecutor(LocalPipelineExecutor):
    """datatrove's local executor for one worker: the tasks run here, one after the other.

    datatrove starts a multiprocess Manager (a server process, to hand out worker slots) for every
    stage even when one worker runs everything in-process: about 15 ms a stage, five stages a source.
    """

    def run(self) -> PipelineStats:
        self._launched = True
        self.save_executor_as_json()
        pipeline, stats = self.pipeline, PipelineStats()
        try:
            for rank in self.get_incomplete_ranks():
                self.pipeline = deepcopy(pipeline)  # every task starts from the steps as configured
                stats = stats + self._run_for_rank(rank)
        finally:
            self.pipeline = pipeline
        with self.logging_dir.open("stats.json", "wt") as statsfile:
            stats.save_to_disk(statsfile)
        return stats


def make_executor(stage: Stage, cfg: ExecutorConfig, job_name: str,
                  depends: PipelineExecutor | None = None) -> PipelineExecutor:
    if cfg.kind == "local":
        executor = SerialExecutor if stage.workers == 1 else LocalPipelineExecutor
        return executor(stage.pipeline, tasks=stage.tasks, workers=stage.workers,
                                     logging_dir=stage.logging_dir)
    if cfg.kind == "slurm":
        s = cfg.slurm
        return SlurmExecutor(stage.pipeline, tasks=stage.tasks, time=s.time, partition=s.partition,
                                     cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb, qos=s.qos,
                                     job_name=job_name,
                                     venv_path=s.venv_path or str(Path(sys.prefix) / "bin" / "activate"),
                                     sbatch_args=dict(s.sbatch_args) or None, logging_dir=stage.logging_dir,
                                     slurm_logs_folder=f"{stage.logging_dir}/slurm_logs", depends=depends)
    connect_ray()
    from datatrove.executor.ray import RayPipelineExecutor

    return RayPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=stage.workers,
                               logging_dir=stage.logging_dir, cpus_per_task=cfg.ray.cpus_per_task,
                               mem_per_cpu_gb=cfg.ray.mem_per_cpu_gb)


def connect_ray() -> None:
    """Join the running Ray cluster (RAY_ADDRESS, or the one `ray start` left on this machine), never a new one:
    tasks must run where the cluster's workers, and the shared folders, are."""
    try:
        import ray
    except ImportError as err:
        raise PrepareError("--executor ray needs Ray: pip install 'flm[ray]'") from err
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError) as err:
        raise PrepareError(f"--executor ray found no running Ray cluster at {address!r} ({err}); start one "
                           "(ray start --head) or set RAY_ADDRESS=host:port") from err


def clear(stage: Stage) -> None:
    """Forget a stage's completed tasks and what they wrote."""
    for folder in [stage.logging_dir, *stage.outputs]:
        shutil.rmtree(folder, ignore_errors=True)


def completed_tasks(stage: Stage) -> int:
    folder = Path(stage.logging_dir) / "completions"
    return len(os.listdir(folder)) if folder.is_dir() else 0


SLURM_JOBS = "slurm-jobs.json"
"""The job ids of the last Slurm submission, next to the stages' logs: a rerun checks them first."""


ACTIVE_STATES = "PENDING,CONFIGURING,RUNNING,COMPLETING,SUSPENDED,REQUEUED,REQUEUE_HOLD,RESIZING,SIGNALING"
"""Job states that may still run tasks (squeue -j also lists finished jobs until the cluster forgets them)."""
NEVER_SATISFIED = "DependencyNeverSatisfied"


def still_queued(job_ids: list[str]) -> list[str]:
    """Those of `job_ids` (a chain, each after the one before) that Slurm still lists as able to run; [] when
    squeue cannot tell.

    A job waiting on a dependency that can never be met (a task of an earlier stage was cancelled or
    failed), and every job of the chain waiting behind it, would wait forever: they are cancelled here,
    since the rerun submits their tasks again.
    """
    command = ["squeue", "-h", "-o", "%i %r", "-t", ACTIVE_STATES, "-j", ",".join(job_ids)]
    try:
        for _ in range(5):  # squeue dies of SIGPIPE now and then when slurmctld drops its connection: ask again
            proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            if proc.returncode >= 0:
                break
            time.sleep(1)
    except (OSError, subprocess.TimeoutExpired):
        return []
    listed = proc.stdout.splitlines()
    reasons: dict[str, set[str]] = {}
    for line in listed:
        entry, _, reason = line.partition(" ")
        reasons.setdefault(entry.split("_")[0], set()).add(reason.strip())  # array tasks: <id>_<task>, <id>_[...]
    active, stuck = [], []
    for job in (j for j in job_ids if j in reasons):
        if NEVER_SATISFIED in reasons[job] or (stuck and reasons[job] == {"Dependency"}):
            stuck.append(job)
        else:
            active.append(job)
    if stuck:
        subprocess.run(["scancel", *stuck], capture_output=True, timeout=60, check=False)
    return active


def refuse_if_queued(folder: Path) -> None:
    """Fail, naming the jobs, while the Slurm submission recorded in `folder` is still queued or running
    (a second submission would run the same tasks at the same time)."""
    record = Path(folder) / SLURM_JOBS
    if record.is_file() and (queued := still_queued(json.loads(record.read_text(encoding="utf-8")))):
        raise PrepareError(f"Slurm jobs {', '.join(queued)} of the previous submission (recorded in {record}) are "
                           f"still queued or running; wait for them (squeue) or cancel them "
                           f"(scancel {' '.join(queued)}), then rerun")


def submit_slurm(stages: list[Stage], cfg: ExecutorConfig, job_prefix: str) -> list[str]:
    """Submit the stage chain with afterok dependencies, unless the previous submission is still queued."""
    record = Path(stages[0].logging_dir).parent / SLURM_JOBS
    refuse_if_queued(record.parent)
    chain: list[PipelineExecutor] = []
    for stage in stages:
        chain.append(make_executor(stage, cfg, f"{job_prefix}-{stage.name}", depends=chain[-1] if chain else None))
    chain[-1].run()  # submits the dependencies first; a stage with nothing left to run gets job id -1
    job_ids = [str(executor.job_id) for executor in chain if str(executor.job_id) != "-1"]
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(job_ids), encoding="utf-8")
    return job_ids


def run_stages(stages: list[Stage], cfg: ExecutorConfig, job_prefix: str) -> list[str]:
    """Run (local, Ray) or submit (Slurm) the stages in order; returns the Slurm jobs submitted ([] otherwise)."""
    if cfg.kind == "slurm":
        return submit_slurm(stages, cfg, job_prefix)
    for i, stage in enumerate(stages):
        executor = make_executor(stage, cfg, f"{job_prefix}-{stage.name}")
        if executor.get_incomplete_ranks():
            for later in stages[i + 1:]:
                clear(later)
            try:
                executor.run()
            except Exception as err:  # one line for the user; the traceback is in the stage's logs
                raise PrepareError(f"stage {stage.name!r} failed: {type(err).__name__}: {err}; "
                                   f"see {Path(stage.logging_dir) / 'logs'}") from err
        if missing := executor.get_incomplete_ranks():
            raise PrepareError(f"stage {stage.name!r}: tasks {missing} did not complete; "
                               f"see {Path(stage.logging_dir) / 'logs'}")
    return []
