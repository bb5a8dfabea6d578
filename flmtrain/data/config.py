"""Mixture configuration: which token-shard directories to train on, in what proportions.

A mixture is one YAML file under configs/mixtures/ loaded into `MixtureConfig` by flmconfig's
generic loader. Shape:

    seq_len: 2048            # optional: without it the stage's sequence length applies
    seed: 1234
    valid_fraction: 0.01
    sources:
      - {name: pile, path: work/tokens/pile, weight: 0.7, subsets: {Pile-CC: 2.0, Github: 1.0}}
      - {name: wudao, path: work/tokens/wudao, weight: 0.3}

Semantics (the loader in flm.train.data implements them):
- `weight`: a source's share of training samples (= tokens, samples are fixed-length); weights are
  normalised, so they need not sum to 1.
- `subsets`: multipliers on a subset's natural size inside its source (the Pile's "epochs" column):
  a subset's share of its source is proportional to `multiplier x its tokens`; subsets not listed keep
  multiplier 1.0. Listing any subset makes every subset of that source its own blended stream, so
  subset shares are exact too.
- `path`: absolute, or relative to the current working directory (where `flm` runs), like every
  other path given to `flm` on the command line.

Checks that need no data (weights, names, ranges) run at load time; checks that need the shards
(paths exist, subsets exist, tokenizers agree) run when `flm.train.data.Mixture` opens them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flm.config import config_to_dict, load_config
from flm.train.teacher.config import TeacherConfig

MAX_WEIGHT = 1e6
"""Weights are relative; beyond this ratio (inf, 1e308) their sum overflows or a source never appears."""

DEFAULT_SEQ_LEN = 2048
"""FLM-101B's context length."""


@dataclass
class SourceConfig:
    name: str
    """The source's name in reports and per-source evaluation (e.g. pile, wudao); unique in the mixture."""
    path: Path
    """A token-shard directory (manifest.json + *.arrow); relative paths resolve against the cwd."""
    weight: float = 1.0
    """The source's share of training samples, relative to the other sources' weights (need not sum to 1)."""
    subsets: dict[str, float] = field(default_factory=dict)
    """Per-subset multipliers on natural size (Pile's pile_set_name, WuDao's dataType); unlisted = 1.0."""

    def validate(self) -> None:
        if not self.name:
            raise ValueError("a source needs a non-empty name")
        if not 0 < self.weight <= MAX_WEIGHT:
            raise ValueError(f"source {self.name!r}: weight must be in (0, {MAX_WEIGHT:g}], got {self.weight}")
        for subset, multiplier in self.subsets.items():
            if not 0 < multiplier <= MAX_WEIGHT:
                raise ValueError(f"source {self.name!r}: subset {subset!r} weight must be in (0, {MAX_WEIGHT:g}], "
                                 f"got {multiplier}")


@dataclass
class MixtureConfig:
    seq_len: int | None = None
    """Tokens per training sample (each carries seq_len + 1: inputs and shifted labels). None: the
    trainer's (the stage's) sequence length, or DEFAULT_SEQ_LEN where nothing else says. Set, it wins over
    the stage's model.seq_len, with a warning where the two differ."""
    seed: int = 1234
    """Seeds the per-epoch document shuffles; the validation hold-out does not depend on it."""
    valid_fraction: float = 0.01
    """Fraction of each stream's documents held out for validation (at least one where it has two)."""
    sources: list[SourceConfig] = field(default_factory=list)
    """The token-shard directories blended, each with its weight."""
    reset_position_ids: bool = False
    """Restart position ids after every EOS (a `position_ids` tensor is returned); off like FLM-101B."""
    reset_attention_mask: bool = False
    """Block attention across documents (an `attention_mask` tensor is returned); off like FLM-101B."""
    cache_dir: Path | None = None
    """Where the document index is cached; None: $FLM_CACHE_DIR or ~/.cache/flm, under mixture-index/."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """FreeLM's teacher signal: proposition sources and the step schedule (flm.train.teacher.config)."""

    def validate(self) -> None:
        if self.seq_len is not None and self.seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {self.seq_len}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")

    @property
    def weights(self) -> dict[str, float]:
        """Normalised source weights, by name."""
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}


def mixture_record(mixture_cfg: MixtureConfig) -> dict[str, Any]:
    """The resolved mixture config with absolute source paths, so a checkpoint can find its data again."""
    record = config_to_dict(mixture_cfg)
    for source in [*record["sources"], *record["teacher"]["sources"]]:
        source["path"] = str(Path(source["path"]).resolve())
    return record


def mixture_from_record(record: dict[str, Any]) -> MixtureConfig:
    """The mixture a checkpoint recorded (see mixture_record)."""
    return load_config(MixtureConfig, record)
