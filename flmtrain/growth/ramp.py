"""Growth records (meta.json's growth_history) and the mask ramp that follows a growth in training.

A record holds both model configs, so the masks of a growth still ramping can be rebuilt on resume:
the mask value is a pure function of the step (0 at the growth step, 1 after `ramp_steps`), and
the masks are folded away (hooks removed) at the first step where it reaches 1.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from flm.config import config_to_dict, load_config
from flm.train.config import ModelConfig
from flm.train.growth.masks import GrowthMasks, ramp
from flm.train.growth.spec import GrowthError, GrowthSpec, check_growth


class MaskRamp:
    """Drives one growth's masks over training steps: call `update(step)` before each step."""

    def __init__(self, masks: GrowthMasks, start_step: int, ramp_steps: int) -> None:
        self.masks = masks
        self.start_step = start_step
        self.ramp_steps = ramp_steps

    @property
    def active(self) -> bool:
        return self.masks.active

    @property
    def end_step(self) -> int:
        return self.start_step + self.ramp_steps

    def update(self, step: int) -> float:
        """Set the masks for optimizer step `step` (0-based); folds them once they reach 1."""
        alpha = ramp(step, self.start_step, self.ramp_steps)
        if self.masks.active:
            self.masks.set_alpha(alpha)
            if alpha >= 1.0:
                self.masks.fold()
        return alpha


def growth_record(spec: GrowthSpec, *, src: ModelConfig, dst: ModelConfig, from_stage: str, to_stage: str,
                  step: int, tokens_seen: int, ramp_steps: int, params_before: int, params_after: int,
                  optimizer: dict[str, int]) -> dict[str, Any]:
    """One growth_history entry."""
    if ramp_steps <= 0:
        raise GrowthError(f"ramp_steps must be >= 1, got {ramp_steps}")
    return {"from_stage": from_stage, "to_stage": to_stage, "operators": spec.operators,
            "from_shape": spec.src.as_dict(), "to_shape": spec.dst.as_dict(),
            "step": step, "tokens_seen": tokens_seen, "ramp_steps": ramp_steps,
            "params_before": params_before, "params_after": params_after, "logit_scale": spec.logit_scale,
            "optimizer_params": optimizer, "from_model": config_to_dict(src), "to_model": config_to_dict(dst),
            "grown_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def ramping(history: list[dict[str, Any]], step: int) -> dict[str, Any] | None:
    """The growth whose masks are still below 1 at `step`, if any (only the latest one can be)."""
    if history and step < history[-1]["step"] + history[-1]["ramp_steps"]:
        return history[-1]
    return None


def resume_ramp(model: torch.nn.Module, history: list[dict[str, Any]], step: int) -> MaskRamp | None:
    """Reinstall the masks of a growth still ramping at `step` (after loading a checkpoint), else None."""
    record = ramping(history, step)
    if record is None:
        return None
    src = load_config(ModelConfig, record["from_model"])
    dst = load_config(ModelConfig, record["to_model"])
    spec = check_growth(src, dst)
    ramp_ = MaskRamp(GrowthMasks(model, spec), record["step"], record["ramp_steps"])
    ramp_.update(step)
    return ramp_


def stage_start_step(history: list[dict[str, Any]]) -> int:
    """The step at which the current stage began (its last growth; 0 if it never grew), for its LR schedule."""
    return history[-1]["step"] if history else 0
