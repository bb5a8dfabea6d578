"""Run the stages with a datatrove executor: LocalPipelineExecutor, SlurmPipelineExecutor or RayPipelineExecutor.

Local and Ray run the stages one after the other here. Completed tasks are skipped (datatrove
completions); when a stage has tasks left to run, the stages after it are cleared first, since
they consumed its earlier output. Slurm submits the whole chain at once with job dependencies.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.executor.base import PipelineExecutor

from pipelines.config import ExecutorConfig
from pipelines.prepare.assembly import Stage
from pipelines.prepare.plan import PrepareError


def make_executor(stage: Stage, cfg: ExecutorConfig, job_name: str,
                  depends: PipelineExecutor | None = None) -> PipelineExecutor:
    if cfg.kind == "local":
        return LocalPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=stage.workers,
                                     logging_dir=stage.logging_dir)
    if cfg.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = cfg.slurm
        return SlurmPipelineExecutor(stage.pipeline, tasks=stage.tasks, time=s.time, partition=s.partition,
                                     cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb, qos=s.qos,
                                     job_name=job_name,
                                     venv_path=s.venv_path or str(Path(sys.prefix) / "bin" / "activate"),
                                     sbatch_args=dict(s.sbatch_args) or None, logging_dir=stage.logging_dir,
                                     slurm_logs_folder=f"{stage.logging_dir}/slurm_logs", depends=depends)
    try:
        import ray  # noqa: F401
    except ImportError as err:
        raise PrepareError("--executor ray needs the `ray` package (pip install ray) and a running cluster") from err
    from datatrove.executor.ray import RayPipelineExecutor

    return RayPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=stage.workers,
                               logging_dir=stage.logging_dir, cpus_per_task=cfg.ray.cpus_per_task,
                               mem_per_cpu_gb=cfg.ray.mem_per_cpu_gb)


def clear(stage: Stage) -> None:
    """Forget a stage's completed tasks and what they wrote."""
    for folder in [stage.logging_dir, *stage.outputs]:
        shutil.rmtree(folder, ignore_errors=True)


def run_stages(stages: list[Stage], cfg: ExecutorConfig, job_prefix: str) -> list[str]:
    """Run (local, Ray) or submit (Slurm) the stages in order; returns the Slurm jobs submitted ([] otherwise)."""
    if cfg.kind == "slurm":
        chain: list[PipelineExecutor] = []
        for stage in stages:
            chain.append(make_executor(stage, cfg, f"{job_prefix}-{stage.name}", depends=chain[-1] if chain else None))
        chain[-1].run()  # submits the dependencies first; a stage with nothing left to run gets job id -1
        return [str(executor.job_id) for executor in chain if str(executor.job_id) != "-1"]
    for i, stage in enumerate(stages):
        executor = make_executor(stage, cfg, f"{job_prefix}-{stage.name}")
        if executor.get_incomplete_ranks():
            for later in stages[i + 1:]:
                clear(later)
            executor.run()
        if missing := executor.get_incomplete_ranks():
            raise PrepareError(f"stage {stage.name!r}: tasks {missing} did not complete; "
                               f"see {Path(stage.logging_dir) / 'logs'}")
    return []
