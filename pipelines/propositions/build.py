"""`flm data propositions`: every task of a mapping YAML, read, converted, tokenized and written as shards.

Accounting as `prepare` does it: every line read is an instance in, and either kept (its propositions
written) or dropped under one reason; a malformed line is named file:line in a warning and in the stats.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from flm.config import Progress, load_config
from flm.config.errors import FlmError
from flm.config.folder_lock import folder_lock
from flm.pipelines.propositions.convert import Dropped, propositions
from flm.pipelines.propositions.mapping import PropositionMapping, TaskMapping
from flm.pipelines.propositions.shards import KIND, teacher_token_ids, write_shard
from flm.pipelines.token_shards import MANIFEST_NAME, Manifest

log = logging.getLogger(__name__)

SHARD_ROWS = 1 << 20
MAX_NAMED = 20
"""Malformed lines named in the stats (all of them are counted and logged)."""
SPLITS = ("train", "valid")


class PropositionError(FlmError, ValueError):
    """A mapping or its input files cannot be read."""


@dataclass
class PropositionStats:
    out: str
    tokenizer: str
    instances_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    propositions: dict[str, int] = field(default_factory=dict)
    """Per split: propositions written."""
    true: int = 0
    false: int = 0
    by_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per task: kind, lang, instances in, kept, dropped by reason, propositions per split."""
    malformed: list[str] = field(default_factory=list)
    """The first dropped lines as file:line: reason (every one is logged)."""


@dataclass
class _Rows:
    tokens: list[np.ndarray] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)


def _in_valid(group: str, fraction: float) -> bool:
    return fraction > 0 and xxhash.xxh64_intdigest(group.encode()) / 2**64 < fraction


def _records(path: Path, task: TaskMapping, stats: PropositionStats, drop: Any) -> Any:
    """(line number, record) of each non-blank line; a line that is not JSON is dropped as malformed."""
    try:
        handle = path.open(encoding="utf-8", errors="strict")
    except OSError as err:
        raise PropositionError(f"task {task.name!r}: cannot read {path}: {err.strerror}") from err
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                stats.instances_in += 1
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as err:
                    drop(number, "malformed", f"not JSON: {err.msg} (column {err.colno})")
        except UnicodeDecodeError as err:
            raise PropositionError(f"{path}: not UTF-8 after line {number}: {err.reason}") from err


def build_propositions(mapping_path: Path | str, tokenizer_dir: Path | str, out: Path | str, *,
                       overrides: list[str] | None = None, progress: Progress | None = None) -> PropositionStats:
    """Convert every task of the mapping into proposition shards under OUT/train (and OUT/valid)."""
    from flm.tokenizer.load import load_tokenizer

    mapping_path, out = Path(mapping_path), Path(out)
    mapping = load_config(PropositionMapping, mapping_path, overrides or [])
    tokenizer = load_tokenizer(Path(tokenizer_dir))
    ids = teacher_token_ids(tokenizer.meta.special_ids, str(tokenizer_dir))
    stats = PropositionStats(out=str(out), tokenizer=str(tokenizer_dir))
    rows = {split: _Rows() for split in SPLITS}
    with folder_lock(out, "`flm data propositions` writes a folder"):
        for n, task in enumerate(mapping.tasks):
            _convert_task(task, mapping, mapping_path.parent, tokenizer, ids["judge"], rows, stats)
            if progress is not None:
                progress("tasks", n + 1, len(mapping.tasks))
        command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
        for split in SPLITS:
            if split == "valid" and mapping.valid_fraction == 0:
                continue
            _write_split(out / split, rows[split], tokenizer, ids, mapping, command, stats)
            stats.propositions[split] = len(rows[split].labels)
    return stats


def _convert_task(task: TaskMapping, mapping: PropositionMapping, base: Path, tokenizer: Any, judge: int,
                  rows: dict[str, _Rows], stats: PropositionStats) -> None:
    path = task.file if task.file.is_absolute() else base / task.file
    record = stats.by_task.setdefault(task.name, {"kind": task.kind, "lang": task.lang, "instances_in": 0,
                                                  "kept": 0, "dropped": {}, "propositions": {}})
    before = stats.instances_in

    def drop(number: int, reason: str, detail: str) -> None:
        where = f"{path}:{number}"
        log.warning("%s: %s (dropped: %s)", where, detail, reason)
        stats.dropped[reason] = stats.dropped.get(reason, 0) + 1
        record["dropped"][reason] = record["dropped"].get(reason, 0) + 1
        if len(stats.malformed) < MAX_NAMED:
            stats.malformed.append(f"{where}: {reason}: {detail}")

    pending: list[tuple[int, list[tuple[str, bool]]]] = []
    for number, item in _records(path, task, stats, drop):
        try:
            pending.append((number, propositions(task, item)))
        except Dropped as err:
            drop(number, err.reason, str(err))
    texts = [text for _, pairs in pending for text, _ in pairs]
    encoded = iter(tokenizer.encode_arrays(texts))
    counts: Counter[str] = Counter()
    for number, pairs in pending:
        tokens = [np.append(next(encoded), np.uint32(judge)) for _ in pairs]
        longest = max(len(t) for t in tokens)
        if longest > mapping.max_tokens:
            drop(number, "too_long", f"a proposition of {longest} tokens exceeds max_tokens {mapping.max_tokens}")
            continue
        group = f"{task.name}:{path.name}-{number}"
        split = "valid" if _in_valid(group, mapping.valid_fraction) else "train"
        out = rows[split]
        for ids, (_, is_true) in zip(tokens, pairs, strict=True):
            out.tokens.append(ids)
            out.labels.append(is_true)
            out.tasks.append(task.name)
            out.groups.append(group)
            out.langs.append(task.lang)
            stats.true += is_true
            stats.false += not is_true
        counts[split] += len(pairs)
        stats.kept += 1
        record["kept"] += 1
    record["instances_in"] = stats.instances_in - before
    record["propositions"] = dict(counts)


def _write_split(directory: Path, rows: _Rows, tokenizer: Any, ids: dict[str, int], mapping: PropositionMapping,
                 command: str, stats: PropositionStats) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / MANIFEST_NAME
    if manifest_path.exists():  # a rerun replaces only what an earlier run of this command wrote
        old = Manifest.load(directory)
        if old.extra.get("kind") != KIND:
            raise PropositionError(f"{directory} holds other token shards; choose another --out")
        manifest_path.unlink()
        for shard in old.shards:
            (directory / shard.name).unlink(missing_ok=True)
    shards = []
    for start in range(0, max(len(rows.labels), 1), SHARD_ROWS):
        end = start + SHARD_ROWS
        shards.append(write_shard(directory / f"propositions-{len(shards):05d}.arrow", rows.tokens[start:end],
                                  rows.labels[start:end], rows.tasks[start:end], rows.groups[start:end],
                                  rows.langs[start:end]))
    Manifest(tokenizer_hash=tokenizer.content_hash, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id,
             shards=shards, command=command,
             extra={"kind": KIND, "token_ids": ids, "max_tokens": mapping.max_tokens,
                    "tasks": sorted(set(rows.tasks)), "stats": {"instances_in": stats.instances_in,
                                                               "kept": stats.kept, "dropped": stats.dropped}},
             ).save(directory)
