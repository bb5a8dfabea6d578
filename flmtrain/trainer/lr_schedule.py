"""Learning-rate schedule: linear warmup, then cosine, linear or constant decay to min_lr.

A pure function of the step, so resuming needs only the step counter; the optimizer's groups carry
their own `lr_mult` (μP, per-group scaling), which `apply` multiplies in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flm.train.config import OptimConfig


@dataclass(frozen=True)
class LRSchedule:
    lr: float
    min_lr: float
    warmup_steps: int
    decay_steps: int
    style: str = "cosine"

    @classmethod
    def from_config(cls, cfg: OptimConfig, total_steps: int) -> LRSchedule:
        """`decay_steps` defaults to the run's total steps (warmup included)."""
        decay = cfg.decay_steps if cfg.decay_steps is not None else total_steps
        return cls(lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                   decay_steps=max(decay, cfg.warmup_steps), style=cfg.schedule)

    def __call__(self, step: int) -> float:
        """LR for optimizer step `step` (0-based): warmup reaches `lr` at step warmup_steps - 1."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.style == "constant":
            return self.lr
        span = self.decay_steps - self.warmup_steps
        if span <= 0 or step >= self.decay_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / span
        if self.style == "linear":
            factor = 1.0 - progress
        elif self.style == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            raise ValueError(f"unknown LR schedule {self.style!r}; allowed: cosine, linear, constant")
        return self.min_lr + (self.lr - self.min_lr) * factor

    def apply(self, param_groups: list[dict[str, Any]], step: int) -> float:
        """Set every group's LR for `step` (scaled by its `lr_mult`); returns the base LR."""
        lr = self(step)
        for group in param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "min_lr": self.min_lr, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps, "style": self.style}
