"""A rerun on a work folder that an earlier run left inconsistent: redone from the start, or one clear error.

A run killed mid-stage, two runs that wrote into one folder before the lock existed, or an older
flm can leave a stage marked complete whose outputs are missing, truncated or doubled. The next
stage then fails deep inside datatrove (`KeyError: (0, 780)` in MinHash clustering, from a
signature read twice) or quietly loses documents, and every rerun, trusting the completion
markers, fails the same way. So a run that reused earlier work and then failed, or whose
accounting does not balance, clears every stage of its source and runs once more from the start;
if that fails too, the error names the work folder and what to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flm.pipelines.config import PipelineConfig
from flm.pipelines.prepare.accounting import collect
from flm.pipelines.prepare.assembly import Stage
from flm.pipelines.prepare.executors import clear, completed_tasks, run_stages
from flm.pipelines.prepare.source_plan import DATA_REMOVED, PrepareError, SourcePlan

log = logging.getLogger(__name__)


def inconsistency(plan: SourcePlan) -> str | None:
    """Why the finished stages' accounting cannot be trusted (docs in != kept + dropped), or None."""
    try:
        subsets = collect(Path(plan.work_dir, "stages").glob("*/stats/*.json")).get(plan.source, {})
    except (OSError, ValueError) as err:
        return f"unreadable task stats: {err}"
    unbalanced = sorted(name or "(unreadable)" for name, t in subsets.items() if not t.balanced)
    return f"accounting does not balance for subsets {', '.join(unbalanced)}" if unbalanced else None


def run_source(cfg: PipelineConfig, plan: SourcePlan, stages: list[Stage]) -> list[str]:
    """Run (or submit) one source's stages; see the module doc for what a failed resume does."""
    job_prefix = f"{cfg.executor.slurm.job_name}-{plan.source}"
    removed = Path(plan.work_dir, DATA_REMOVED)
    if removed.exists() and any(completed_tasks(s) < s.tasks for s in stages):
        restart(stages)  # the intermediate files later stages read are gone
        removed.unlink()
    if cfg.executor.kind == "slurm":
        return run_stages(stages, cfg.executor, job_prefix)
    resumed = any(completed_tasks(s) for s in stages)
    try:
        job_ids = run_stages(stages, cfg.executor, job_prefix)
        problem = inconsistency(plan) if resumed else None
    except PrepareError as err:
        if not resumed:
            raise
        problem = str(err)
    if problem is None:
        return job_ids
    log.warning("%s: the work folder an earlier run left is inconsistent (%s); redoing every stage",
                plan.work_dir, problem)
    restart(stages)
    try:
        return run_stages(stages, cfg.executor, job_prefix)
    except PrepareError as err:
        raise PrepareError(f"{plan.work_dir} was left inconsistent by an earlier run ({problem}) and redoing every "
                           f"stage failed too: {err}; delete {plan.work_dir} and {plan.clean_dir}, or prepare into "
                           "a new --out folder") from err


def restart(stages: list[Stage]) -> None:
    for stage in stages:
        clear(stage)
