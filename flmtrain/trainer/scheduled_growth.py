"""What the training loop needs from growth: scheduled in-place growth, the stage a resumed run is
in, masks on resume, and the LR schedule of the stage that growth switched to.

A stage's `growth` list schedules growth at a token count; once grown, the run continues in the
target stage (its LR schedule restarts at the growth step, warmup included, as FLM-101B's stages
do), and the target's own `growth` list schedules the next one.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from flm.config import find_config, load_config
from flm.train.checkpoint import CheckpointMeta
from flm.train.config import GrowthStepConfig, StageConfig
from flm.train.growth.grow import Grown, grow_model_and_optimizer
from flm.train.growth.grow_checkpoint import grow_checkpoint
from flm.train.growth.ramp import stage_start_step
from flm.train.growth.spec import GrowthError, check_growth
from flm.train.trainer.lr_schedule import LRSchedule

GROWN_DIR = "grown"
"""Under the run directory: the checkpoints that in-place growth on GPUs grows and then loads."""


def due_growth(stage: StageConfig, tokens_seen: int) -> GrowthStepConfig | None:
    """The current stage's first scheduled growth whose token count has been reached, if any."""
    return next((entry for entry in stage.growth if tokens_seen >= entry.at_tokens), None)


def fitted_target(entry: GrowthStepConfig, stage: StageConfig) -> StageConfig:
    """The target stage of `entry` on the running stage's data: same vocabulary and sequence length."""
    target = load_config(StageConfig, find_config(entry.to, "stages"))
    target.model.vocab_size = stage.model.vocab_size
    target.model.vocab_pad_multiple = stage.model.vocab_pad_multiple
    target.model.seq_len = stage.model.seq_len
    target.train.steps = stage.train.steps
    return target


def check_schedule(stage: StageConfig) -> None:
    """Fail before training when a scheduled growth (or one its target schedules) is impossible.

    Each growth strictly adds structure, so the chain of targets cannot loop."""
    while stage.growth:
        target = fitted_target(stage.growth[0], stage)
        check_growth(stage.model, target.model)
        stage = target


def resume_stage(stage: StageConfig, meta: CheckpointMeta) -> StageConfig:
    """The stage a run resumes in: the checkpoint's own when the run grew into another stage."""
    if meta.growth_history and meta.stage != stage.name and meta.stage_config:
        grown = meta.load_stage()
        grown.train.steps = stage.train.steps
        return grown
    return stage


def stage_schedule(stage: StageConfig, target_steps: int, history: list[dict[str, Any]]) -> tuple[LRSchedule, int]:
    """The stage's LR schedule and its step offset: apply it at `step - offset` (0 without growth)."""
    offset = stage_start_step(history)
    return LRSchedule.from_config(stage.optim, max(target_steps - offset, 1)), offset


def grow_engine(engine: Any, stage: StageConfig, entry: GrowthStepConfig, *, step: int, tokens_seen: int,
                make_engine: Callable[[StageConfig, int], Any]) -> tuple[Any, StageConfig, Grown]:
    """Grow a training engine (module + torch optimizer) into `entry`'s stage; returns the new engine,
    the target stage and the growth (record for growth_history, ramp to update every step)."""
    if not isinstance(getattr(engine, "optimizer", None), torch.optim.Optimizer):
        raise GrowthError("growing a live engine needs the CPU engine's torch optimizer; on GPUs use "
                          "grow_saved_checkpoint")
    target = fitted_target(entry, stage)
    with torch.random.fork_rng():  # new entries' init is seeded and leaves the training RNG untouched
        torch.manual_seed(target.train.seed + step)
        new = make_engine(copy.deepcopy(target), target.model.vocab_size)
    grown = grow_model_and_optimizer(engine.module, engine.optimizer, new.module, new.optimizer, stage.model,
                                     target.model, step=step, ramp_steps=entry.ramp_steps, tokens_seen=tokens_seen,
                                     from_stage=stage.name, to_stage=target.name)
    return new, target, grown


def grow_saved_checkpoint(path: Path, stage: StageConfig, entry: GrowthStepConfig, out: Path) -> StageConfig:
    """In-place growth on GPUs: grow the checkpoint just saved at `path` into `entry`'s stage at `out` (rank 0
    writes it, streaming; every rank waits) and return the target stage in the running TP/PP/DP layout,
    whose engine then loads `out`. A folder left at `out` by an interrupted attempt is flm's own: replaced."""
    target = fitted_target(entry, stage)
    target.parallel = copy.deepcopy(stage.parallel)
    if not dist.is_initialized() or dist.get_rank() == 0:
        if out.exists():
            shutil.rmtree(out)
        grow_checkpoint(path, target, out, ramp_steps=entry.ramp_steps)
    if dist.is_initialized():
        dist.barrier()
    return target
