"""What resuming a run directory would mean, worked out before any weight is loaded.

A resumed run must be the model its checkpoint holds: another stage (or a `--set` that changes the model's
shape) is refused naming the stage the run was trained as, instead of failing deep inside a state-dict load.
A resume whose `--steps` or `--set optim.*` change the LR schedule is allowed (it is how a run is extended)
but reported: which settings changed, and the LR at the resume step before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flm.train.checkpoint import CheckpointError, read_meta, read_state, resolve_resume
from flm.train.config import StageConfig
from flm.train.trainer.lr_schedule import LRSchedule
from flm.train.trainer.scheduled_growth import resume_stage, stage_schedule

SHAPE_KEYS = ("layers", "hidden", "heads", "kv_heads", "ffn_size", "norm", "activation", "bias", "tie_embeddings",
              "position")
"""Model settings a checkpoint's weights fix (vocab_size and seq_len are fitted to the data, so not here)."""


@dataclass
class ResumeInfo:
    checkpoint: str
    step: int
    stage: str
    schedule_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """LR-schedule setting -> (as saved, as it will be), for those that differ."""
    schedule: dict[str, Any] = field(default_factory=dict)
    """The schedule the resumed run follows (LRSchedule.state_dict), in steps of the stage."""
    lr_saved: float | None = None
    """The LR the saved schedule gives at the resume step."""
    lr_now: float | None = None
    """The LR the new schedule gives at the resume step."""


def _shape(stage: StageConfig) -> dict[str, Any]:
    return {key: getattr(stage.model, key) for key in SHAPE_KEYS}


def check_resume(stage: StageConfig, run_dir: Path | str, resume: str = "latest",
                 steps: int | None = None) -> ResumeInfo | None:
    """The checkpoint `flm train` would resume from and what changes; None when it starts from scratch.

    CheckpointError when the checkpoint holds another model than `stage` (a run trained as another stage)."""
    path = resolve_resume(Path(run_dir), resume)
    if path is None:
        return None
    meta = read_meta(path)
    resumed = resume_stage(stage, meta)
    if meta.stage_config:
        saved = meta.load_stage()
        differs = {k: (v, _shape(resumed)[k]) for k, v in _shape(saved).items() if _shape(resumed)[k] != v}
        if differs:
            what = ", ".join(f"model.{k} {old} -> {new}" for k, (old, new) in differs.items())
            if saved.name != stage.name:
                raise CheckpointError(f"{path}: this run was trained as stage {saved.name!r}, not {stage.name!r} "
                                      f"({what}); resume it with --stage {saved.name}, or train {stage.name} in "
                                      "another --run-dir (or start from it with flm grow)")
            raise CheckpointError(f"{path}: the checkpoint's model differs from stage {stage.name!r} as given ({what});"
                                  " drop the --set that changes the shape, or train it in another --run-dir")
    target = steps if steps is not None else stage.train.steps
    schedule, offset = stage_schedule(resumed, target, meta.growth_history)
    info = ResumeInfo(checkpoint=str(path), step=meta.step, stage=resumed.name, schedule=schedule.state_dict())
    old = read_state(path).get("scheduler")
    if old:
        now = schedule.state_dict()
        info.schedule_changes = {k: (old.get(k), v) for k, v in now.items() if old.get(k) != v}
        if info.schedule_changes:
            info.lr_saved = LRSchedule(**{**now, **{k: old[k] for k in now if k in old}})(meta.step - offset)
            info.lr_now = schedule(meta.step - offset)
    return info
