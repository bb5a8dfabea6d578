"""The sbatch script of a training run: one srun task per node, each a torchrun agent; requeued on preemption.

Slurm sends the batch shell SIGUSR1 `signal_lead_s` seconds before the time limit (or when the job is
preempted, where the cluster is configured so); the script sends SIGTERM to the job's steps (not to srun,
which would end the step after KillWait seconds): torchrun passes it to every rank, and training saves a
checkpoint and exits; then the script requeues the job. The requeued
job runs the same script, and `flm train --resume latest` continues from that checkpoint.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

from flm.train.config import StageConfig

RDZV_PORT = 29500


def sbatch_script(stage: StageConfig, stage_arg: str, mixture: Path, run_dir: Path, overrides: list[str], *,
                  partition: str = "", time: str = "", signal_lead_s: int = 120, venv: Path | None = None) -> str:
    """The script for `sbatch`; `stage_arg` and `overrides` are passed on to every `flm train` as given."""
    par = stage.parallel
    per_node = min(par.world_size, par.gpus_per_node)
    nodes = math.ceil(par.world_size / per_node)
    on_gpu = stage.train.device != "cpu"
    run_dir = run_dir.resolve()
    venv = venv or Path(sys.prefix)
    train = ["flm", "train", "--stage", stage_arg, "--mixture", str(mixture.resolve()), "--run-dir", str(run_dir),
             "--resume", "latest"]
    for item in overrides:
        train += ["--set", item]
    directives = [f"--job-name=flm-{stage.name}", f"--nodes={nodes}", "--ntasks-per-node=1",
                  *([f"--gpus-per-node={per_node}"] if on_gpu else []),
                  *([f"--partition={partition}"] if partition else []), *([f"--time={time}"] if time else []),
                  "--requeue", f"--signal=B:USR1@{signal_lead_s}", "--open-mode=append",
                  f"--output={run_dir}/slurm-%j.out"]
    rendezvous = ("--standalone" if nodes == 1 else  # one node: a free local port, no rendezvous server
                  f'--nnodes "$SLURM_NNODES" --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d '
                  f'--rdzv-endpoint "$MASTER_ADDR:{RDZV_PORT}"')
    torchrun = f"torchrun {rendezvous} --nproc-per-node {per_node} --no-python {shlex.join(train)}"
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives),
             f"# Written by `flm train --stage {stage_arg} --dry-run --launcher slurm`; submit: sbatch <this file>",
             "set -uo pipefail",
             f"source {shlex.quote(str(venv / 'bin' / 'activate'))}",
             'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
             "export MASTER_ADDR",
             'echo "flm: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST"',
             "requeue() {  # the time limit or a preemption is near: save, stop, and come back",
             '  echo "flm: SIGUSR1: stopping training at a checkpoint, then requeueing job $SLURM_JOB_ID"',
             '  scancel --signal=TERM "$SLURM_JOB_ID"  # every step but this shell: torchrun, which passes it on',
             '  wait "$train_pid"',
             '  scontrol requeue "$SLURM_JOB_ID"',
             "  exit 0",
             "}",
             "trap requeue USR1",
             f"srun --kill-on-bad-exit=1 {torchrun} &",
             "train_pid=$!",
             'wait "$train_pid"',
             ""]
    return "\n".join(lines)


def write_sbatch_script(path: Path, script: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path
