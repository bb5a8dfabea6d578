"""The teacher signal's part of a mixture YAML: proposition sources and how their steps interleave.

    teacher:
      every: 2                 # every 2nd optimizer step is a teacher step (FreeLM alternates the two signals)
      batch: 32                # propositions per teacher step (global, over data-parallel ranks)
      micro_batch: 16
      sources:
        - {name: tasks, path: work/propositions/train, weight: 1.0}

No sources (the default): no teacher steps, the run is language-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TeacherSourceConfig:
    name: str
    """Names the source in the checkpoint's teacher state (a resume with other names is refused) and the model
    card."""
    path: Path
    """A proposition-shard directory (`flm data propositions` OUT/train)."""
    weight: float = 1.0
    """Relative share of teacher propositions drawn from this source (weights need not sum to 1)."""

    def validate(self) -> None:
        if not self.name:
            raise ValueError("a teacher source needs a non-empty name")
        if not 0 < self.weight <= 1e6:
            raise ValueError(f"teacher source {self.name!r}: weight must be in (0, 1e6], got {self.weight}")


@dataclass
class TeacherConfig:
    sources: list[TeacherSourceConfig] = field(default_factory=list)
    """Proposition sources; none (the default) means no teacher steps: the run is language-only."""
    every: int = 2
    """Step s is a teacher step when s % every == 0: 2 (the default) alternates one language step and one teacher
    step, as FreeLM does; a larger k spends fewer steps on the teacher signal."""
    batch: int = 32
    """Propositions per teacher step, over all data-parallel ranks (a teacher step is one optimizer step)."""
    micro_batch: int = 16
    """Propositions per forward/backward pass on one rank; batch must be a multiple of micro_batch x DP size.
    Lower it to bound activation memory, not to change what is learned."""

    def validate(self) -> None:
        if self.every < 2:
            raise ValueError(f"teacher.every must be at least 2 (a language step between teacher steps), "
                             f"got {self.every}")
        if self.batch < 1 or self.micro_batch < 1:
            raise ValueError("teacher.batch and teacher.micro_batch must be positive")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher source names must be unique: {', '.join(names)}")

    @property
    def enabled(self) -> bool:
        return bool(self.sources)
