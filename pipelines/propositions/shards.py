"""Proposition shards: token shards of their own kind for the teacher signal.

One row per proposition: `tokens` (the statement's ids, then the judge token), `label` (1 true, 0 false),
`task`, `group` (the instance it came from, `task:file-line`; a multiple-choice question's options share it)
and `lang`. Arrow IPC files beside a manifest.json like the language shards' (tokenizer hash, vocabulary,
per-shard counts and checksums, the command), with `extra.kind = "propositions"` and the token ids the teacher
signal uses, so the trainer and `flm eval --propositions` read them from the data, not from a convention.

The judge token closes every proposition; the model's final hidden state there is what is judged. Two more
reserved tokens are the verdicts: the teacher logits are the output layer's logits of <false> and <true> at the
judge position (see flm.train.teacher).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from flm.config.atomic import AtomicFile
from flm.pipelines.token_shards import Manifest, ShardInfo, TokenShardError, file_checksum

KIND = "propositions"
JUDGE_TOKEN = "<|reserved_0|>"
VERDICT_TOKENS = ("<|reserved_1|>", "<|reserved_2|>")
"""(false, true): reserved specials of every flm tokenizer, never produced from text."""
SCHEMA = pa.schema([
    ("tokens", pa.list_(pa.uint32())),
    ("label", pa.uint8()),
    ("task", pa.string()),
    ("group", pa.string()),
    ("lang", pa.string()),
])


def teacher_token_ids(special_ids: dict[str, int], where: str) -> dict[str, int]:
    """{"judge", "false", "true"} ids from a tokenizer's special tokens; an error naming `where` without them."""
    missing = [t for t in (JUDGE_TOKEN, *VERDICT_TOKENS) if t not in special_ids]
    if missing:
        raise TokenShardError(f"{where}: the tokenizer has no {', '.join(missing)}; the teacher signal needs three "
                              "reserved special tokens (train the tokenizer with num_reserved >= 3)")
    return {"judge": special_ids[JUDGE_TOKEN], "false": special_ids[VERDICT_TOKENS[0]],
            "true": special_ids[VERDICT_TOKENS[1]]}


def write_shard(path: Path, tokens: Sequence[np.ndarray], labels: Sequence[bool], tasks: Sequence[str],
                groups: Sequence[str], langs: Sequence[str]) -> ShardInfo:
    """One shard file, written under a temporary name and renamed once whole."""
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    offsets = np.zeros(len(tokens) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(tokens).astype(np.uint32) if len(tokens) else np.zeros(0, np.uint32)
    batch = pa.RecordBatch.from_arrays([
        pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.uint32())),
        pa.array(np.asarray(labels, dtype=np.uint8), pa.uint8()), pa.array(list(tasks), pa.string()),
        pa.array(list(groups), pa.string()), pa.array(list(langs), pa.string())], schema=SCHEMA)
    target = AtomicFile(path)
    try:
        with pa.ipc.new_file(target.file, SCHEMA) as writer:
            writer.write_batch(batch)
        target.file.flush()
        checksum = file_checksum(target.temp_path)
    except BaseException:
        target.discard()
        raise
    target.commit()
    return ShardInfo(name=path.name, rows=len(tokens), tokens=int(lengths.sum()), checksum=checksum)


class PropositionShards:
    """A proposition-shard directory, read whole into memory (task data is small next to language data)."""

    def __init__(self, directory: Path | str, *, tokenizer_hash: str | None = None,
                 vocab_size: int | None = None) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise TokenShardError(f"{self.directory}: not a directory")
        self.manifest = Manifest.load(self.directory)
        extra = self.manifest.extra
        if extra.get("kind") != KIND:
            raise TokenShardError(f"{self.directory}: not proposition shards (manifest kind "
                                  f"{extra.get('kind')!r}); make them with `flm data propositions`")
        if tokenizer_hash is not None and tokenizer_hash != self.manifest.tokenizer_hash:
            raise TokenShardError(
                f"{self.directory}: propositions were tokenized by {self.manifest.tokenizer_hash[:12]}, the model's "
                f"tokenizer is {tokenizer_hash[:12]}; rebuild them with the model's tokenizer")
        if vocab_size is not None and self.manifest.vocab_size > vocab_size:
            raise TokenShardError(f"{self.directory}: vocabulary {self.manifest.vocab_size} is larger than the "
                                  f"model's {vocab_size}")
        try:
            ids = extra["token_ids"]
            self.token_ids = {k: int(ids[k]) for k in ("judge", "false", "true")}
        except (KeyError, TypeError, ValueError):
            raise TokenShardError(f"{self.directory}/manifest.json: extra.token_ids must give judge, false and "
                                  "true ids") from None
        tables = [self._read(info) for info in self.manifest.shards]
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        column = table.column("tokens").combine_chunks()
        self.offsets = column.offsets.to_numpy().astype(np.int64)
        self.values = column.values.to_numpy(zero_copy_only=False)
        self.labels = table.column("label").to_numpy().astype(np.int64)
        self.tasks = table.column("task").to_pylist()
        self.groups = table.column("group").to_pylist()
        self.langs = table.column("lang").to_pylist()
        lengths = np.diff(self.offsets)
        if len(lengths) and (lengths.min() < 1 or self.values.max(initial=0) >= self.manifest.vocab_size):
            raise TokenShardError(f"{self.directory}: an empty proposition or a token id outside the vocabulary "
                                  f"0..{self.manifest.vocab_size - 1}; the shards are corrupt: rebuild them")
        if len(lengths) and not (self.values[self.offsets[1:] - 1] == self.token_ids["judge"]).all():
            raise TokenShardError(f"{self.directory}: a proposition does not end with the judge token; rebuild them")
        if not np.isin(self.labels, (0, 1)).all():
            raise TokenShardError(f"{self.directory}: labels must be 0 or 1")
        self.max_tokens = int(lengths.max(initial=1))

    def _read(self, info: ShardInfo) -> pa.Table:
        path = self.directory / info.name
        if not path.is_file():
            raise TokenShardError(f"{path}: listed in the manifest but missing")
        if info.checksum is not None and file_checksum(path) != info.checksum:
            raise TokenShardError(f"{path}: checksum differs from the manifest's; the shard is corrupt: rebuild it")
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        except (pa.ArrowInvalid, OSError) as err:
            raise TokenShardError(f"{path}: not an Arrow IPC file: {err}") from err
        if table.schema != SCHEMA or table.num_rows != info.rows:
            raise TokenShardError(f"{path}: schema or row count differs from a proposition shard's manifest entry")
        return table

    def __len__(self) -> int:
        return len(self.labels)

    def tokens(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]: self.offsets[i + 1]]
