"""meta.json: the facts about a trained tokenizer that other stages check (size, special ids, hash)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from flm.config.atomic import atomic_write_text
from flm.config.errors import FlmError

META_NAME = "meta.json"
META_VERSION = 1
Backend = Literal["hf", "sentencepiece"]
MODEL_FILES: dict[str, str] = {"hf": "tokenizer.json", "sentencepiece": "tokenizer.model"}


class TokenizerError(FlmError, ValueError):
    """A tokenizer cannot be trained, saved or loaded as asked; the message says why and what to do."""


@dataclass
class TokenizerMeta:
    backend: Backend
    vocab_size: int
    """Every id the tokenizer can produce, special tokens included."""
    special_ids: dict[str, int]
    eos_id: int
    pad_id: int
    content_hash: str
    """sha256 of the model file (tokenizer.json or tokenizer.model); token shards record it."""
    model_file: str
    split_pattern: str = ""
    corpus: dict = field(default_factory=dict)
    """Training sample summary: documents and bytes per source, byte budget, seed, files read."""
    trainer: dict = field(default_factory=dict)
    """Trainer settings and library versions, so a run can be reproduced."""
    version: int = META_VERSION

    def save(self, directory: Path) -> Path:
        path = Path(directory) / META_NAME
        atomic_write_text(path, json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path) -> TokenizerMeta:
        path = Path(directory) / META_NAME
        if not path.exists():
            raise TokenizerError(f"{directory}: no {META_NAME}; not a tokenizer made by `flm data train-tokenizer`")
        try:
            meta = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as err:
            raise TokenizerError(f"{path}: malformed tokenizer meta: {err}") from err
        if meta.version != META_VERSION:
            raise TokenizerError(f"{path}: meta version {meta.version}, this flm reads {META_VERSION}")
        if meta.backend not in MODEL_FILES:
            raise TokenizerError(f"{path}: backend {meta.backend!r}; expected one of {sorted(MODEL_FILES)}")
        return meta


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
