"""`meta.json`: what a checkpoint is (stage, shapes, data, growth history), as one typed record.

Every reader of a checkpoint (training, evaluation, generation, growth, export, loss prediction) goes
through `read_meta`, so a missing or malformed field is one clear error naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flm.config import load_config
from flm.config.errors import FlmError
from flm.train.config import StageConfig
from flm.train.data.config import MixtureConfig, mixture_from_record

META_NAME = "meta.json"


class CheckpointError(FlmError, RuntimeError):
    """A checkpoint is missing, incomplete, or does not match the model being loaded."""


@dataclass
class CheckpointMeta:
    step: int
    format: str
    """"torch" (the CPU engine: model.pt + optimizer.pt) or "megatron" (dist_checkpointing shards)."""
    stage: str
    stage_config: dict[str, Any] = field(default_factory=dict)
    """The stage as trained (shapes fitted to the data), as `flm config show --json` prints it."""
    mixture: dict[str, Any] | None = None
    """The mixture config with absolute source paths (flm.train.data.config.mixture_record)."""
    tokenizer_hash: str | None = None
    tokens_seen: int = 0
    consumed_samples: int = 0
    growth_history: list[dict[str, Any]] = field(default_factory=list)
    """One record per growth (flm.train.growth.ramp.growth_record): from/to stage, step, ramp, tokens seen."""
    device: str = "cpu"
    world: dict[str, int] = field(default_factory=dict)
    """The parallel layout that wrote it: tp, pp, dp."""
    param_shapes: dict[str, list[int]] = field(default_factory=dict)
    saved_at: str = ""

    def load_stage(self) -> StageConfig:
        """The stage config the checkpoint was trained with."""
        if not self.stage_config:
            raise CheckpointError(f"checkpoint of stage {self.stage!r} at step {self.step} records no stage_config; "
                                  "cannot tell the model's shape")
        return load_config(StageConfig, self.stage_config)

    def load_mixture(self) -> MixtureConfig:
        """The mixture the checkpoint was trained on."""
        if not self.mixture:
            raise CheckpointError(f"checkpoint of stage {self.stage!r} at step {self.step} records no mixture; "
                                  "pass --mixture")
        return mixture_from_record(self.mixture)

    def tokenizer_dir(self) -> Path:
        """The tokenizer that made the training data, from the first source's token-shard manifest."""
        from flm.pipelines.token_shards import Manifest  # pyarrow: only when asked

        sources = (self.mixture or {}).get("sources") or []
        if not sources:
            raise CheckpointError("the checkpoint records no mixture; pass the tokenizer directory explicitly")
        manifest = Manifest.load(Path(sources[0]["path"]))
        directory = manifest.extra.get("tokenizer_dir")
        if not directory:
            raise CheckpointError(f"{sources[0]['path']}: manifest names no tokenizer_dir; pass the tokenizer "
                                  "explicitly")
        return Path(directory)

    def check_tokenizer(self, content_hash: str, what: str) -> None:
        """Refuse data or a tokenizer (`what`) made by another tokenizer than the one this checkpoint learnt."""
        if self.tokenizer_hash is not None and content_hash != self.tokenizer_hash:
            raise CheckpointError(f"the checkpoint of stage {self.stage!r} at step {self.step} was trained on "
                                  f"tokenizer {self.tokenizer_hash[:12]}, not {content_hash[:12]} ({what})")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_meta(path: Path) -> CheckpointMeta:
    """The checkpoint directory's meta.json as a CheckpointMeta."""
    meta_path = Path(path) / META_NAME
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: not a checkpoint directory (no {META_NAME})") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path}: malformed JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object")
    names = {f.name for f in dataclasses.fields(CheckpointMeta)}
    missing = [f.name for f in dataclasses.fields(CheckpointMeta)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data]
    if missing:
        raise CheckpointError(f"{meta_path}: missing field(s) {', '.join(missing)}")
    return CheckpointMeta(**{k: v for k, v in data.items() if k in names})


def write_meta(directory: Path, meta: CheckpointMeta) -> None:
    (Path(directory) / META_NAME).write_text(json.dumps(meta.to_json(), indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
