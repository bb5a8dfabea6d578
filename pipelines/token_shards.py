"""The token-shard format: Arrow IPC files of tokenized documents plus manifest.json.

One row per document: `tokens: list<uint32>` (EOS appended), `doc_id`, `source`, `subset`.
Files are uncompressed Arrow IPC *file* format so they memory-map zero-copy. This module is the
only writer and the only reader of the format; the reader checks the manifest so a shard set made
by another tokenizer is a clear error, not silent garbage. Each shard's checksum is recorded when it is
written; `verify()` checks them (the mixture does it once, when it builds a source's cached index), so a
shard changed on disk (a flipped bit, a partial copy) is named corrupt instead of trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash

from flm.config.atomic import AtomicFile, atomic_write_text
from flm.config.errors import FlmError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PROGRESS_NAME = ".progress.jsonl"
"""Present while `flm data tokenize` has not finished a source directory (its resume log)."""
SHARD_SUFFIX = ".arrow"
CHECKSUM_ALGORITHM = "xxh3_128"
"""Fast (GB/s) and plenty for catching damage; not meant to resist someone forging a shard."""
_HASH_CHUNK = 16 << 20
SCHEMA = pa.schema([
    ("tokens", pa.list_(pa.uint32())),
    ("doc_id", pa.string()),
    ("source", pa.string()),
    ("subset", pa.string()),
])


class TokenShardError(FlmError, ValueError):
    """A token-shard directory is missing, inconsistent, or made by another tokenizer."""


@dataclass
class ShardInfo:
    name: str
    rows: int
    tokens: int
    checksum: str | None = None
    """`xxh3_128:<hex>` of the file's bytes; None in manifests written before checksums were kept."""


def file_checksum(path: Path) -> str:
    """The checksum of a file's bytes, as recorded in the manifest."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


@dataclass
class Manifest:
    tokenizer_hash: str
    vocab_size: int
    eos_id: int
    shards: list[ShardInfo] = field(default_factory=list)
    command: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    """Free-form facts about the run (skipped documents by reason, input files, timings)."""

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    def save(self, directory: Path) -> Path:
        """Write manifest.json atomically: its presence is what marks a directory's shards complete."""
        path = Path(directory) / MANIFEST_NAME
        atomic_write_text(path, json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.exists():
            raise TokenShardError(f"{directory}: no {MANIFEST_NAME}; is this a token-shard directory?")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            shards = [ShardInfo(**s) for s in data.pop("shards")]
            manifest = cls(shards=shards, **data)
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise TokenShardError(f"{path}: malformed manifest: {err}") from err
        if manifest.format_version != FORMAT_VERSION:
            raise TokenShardError(f"{path}: format_version {manifest.format_version}, this flm reads {FORMAT_VERSION}")
        manifest.check(path)
        return manifest

    def check(self, path: Path) -> None:
        """What a manifest must hold before any shard is opened: ids in range, every shard a distinct plain
        file name inside its folder (no `../`, no path), non-negative counts."""
        if not (isinstance(self.vocab_size, int) and self.vocab_size > 0):
            raise TokenShardError(f"{path}: vocab_size must be a positive integer, got {self.vocab_size!r}")
        if not (isinstance(self.eos_id, int) and 0 <= self.eos_id < self.vocab_size):
            raise TokenShardError(f"{path}: eos_id {self.eos_id!r} is outside the vocabulary 0..{self.vocab_size - 1}")
        seen: set[str] = set()
        for i, shard in enumerate(self.shards):
            name = shard.name
            if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
                raise TokenShardError(f"{path}: shards[{i}].name {name!r} must be a file name inside the folder")
            if name in seen:
                raise TokenShardError(f"{path}: shard {name!r} is listed twice")
            seen.add(name)
            if not all(isinstance(v, int) and v >= 0 for v in (shard.rows, shard.tokens)):
                raise TokenShardError(f"{path}: shards[{i}] ({name}): rows and tokens must be integers >= 0")
            checksum = shard.checksum
            if checksum is not None and not (isinstance(checksum, str)
                                             and checksum.startswith(f"{CHECKSUM_ALGORITHM}:")):
                raise TokenShardError(f"{path}: shards[{i}] ({name}): checksum {checksum!r} is not "
                                      f"'{CHECKSUM_ALGORITHM}:<hex>'")


def documents_to_batch(token_lists: Sequence[np.ndarray | Sequence[int]], doc_ids: Sequence[str],
                       sources: Sequence[str], subsets: Sequence[str], *, append: int | None = None) -> pa.RecordBatch:
    """Build one record batch; token arrays are concatenated once, without per-token Python work.

    `append` (the EOS id) is added to the end of every document within that one concatenation.
    """
    extra = 0 if append is None else 1
    lengths = np.fromiter((len(t) + extra for t in token_lists), dtype=np.int64, count=len(token_lists))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    arrays = [np.asarray(t, dtype=np.uint32) for t in token_lists]
    if append is not None:
        tail = np.array([append], dtype=np.uint32)
        arrays = [part for array in arrays for part in (array, tail)]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.uint32()))
    return pa.record_batch([tokens, pa.array(doc_ids, pa.string()), pa.array(sources, pa.string()),
                            pa.array(subsets, pa.string())], schema=SCHEMA)


class TokenShardWriter:
    """Writes one shard file; it appears under its final name only after `close()` succeeds."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows = 0
        self.tokens = 0
        self.checksum: str | None = None
        self._target = AtomicFile(self.path)
        self._writer = pa.ipc.new_file(self._target.file, SCHEMA)

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.tokens += len(batch.column(0).values)

    def close(self) -> ShardInfo:
        """Finish the file and return its counts and checksum (hashed from the page cache, before the rename)."""
        self._writer.close()
        try:
            self._target.file.flush()
            self.checksum = file_checksum(self._target.temp_path)
        except BaseException:
            self._target.discard()
            raise
        self._target.commit()
        return self.info

    @property
    def info(self) -> ShardInfo:
        return ShardInfo(name=self.path.name, rows=self.rows, tokens=self.tokens, checksum=self.checksum)

    def abort(self) -> None:
        """Drop a partial shard (the temp file), leaving nothing that looks complete."""
        try:
            self._writer.close()
        finally:
            self._target.discard()

    def __enter__(self) -> TokenShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class _Chunk:
    values: np.ndarray   # uint32 tokens of the chunk's documents, back to back (memory-mapped)
    offsets: np.ndarray  # int32/int64 document offsets into `values`, length rows + 1


class TokenShards:
    """Memory-mapped, zero-copy access to a token-shard directory.

    Documents are numbered globally in manifest order. `document(i)` and `read(start, n)` return
    numpy views into the mapped files (a copy only when a read crosses a chunk boundary).
    """

    def __init__(self, directory: Path | str, *, tokenizer_hash: str | None = None,
                 vocab_size: int | None = None) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise TokenShardError(f"{self.directory}: not a directory")
        self.manifest = Manifest.load(self.directory)
        if tokenizer_hash is not None and tokenizer_hash != self.manifest.tokenizer_hash:
            raise TokenShardError(
                f"{self.directory}: shards were made by tokenizer {self.manifest.tokenizer_hash[:12]}, "
                f"expected {tokenizer_hash[:12]}; re-tokenize or point at the matching tokenizer")
        if vocab_size is not None and vocab_size != self.manifest.vocab_size:
            raise TokenShardError(f"{self.directory}: vocab size {self.manifest.vocab_size}, expected {vocab_size}")
        self._chunks: list[_Chunk] = []
        self._chunk_shards: list[str] = []
        sources: list[pa.Array] = []
        subsets: list[pa.Array] = []
        doc_ids: list[pa.Array] = []
        for info in self.manifest.shards:
            try:
                batches = self._batches(info)
            except TokenShardError:
                self._verify_shard(info)  # a damaged file: say so, rather than what the damage broke
                raise
            for batch in batches:
                doc_ids.append(batch.column(1))
                sources.append(batch.column(2))
                subsets.append(batch.column(3))
        lengths = [np.diff(c.offsets).astype(np.int64) for c in self._chunks]
        self.doc_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        """Tokens per document (EOS included), in global document order."""
        self.doc_offsets = np.zeros(len(self.doc_lengths) + 1, dtype=np.int64)
        np.cumsum(self.doc_lengths, out=self.doc_offsets[1:])
        """Start of each document in the flat token stream (length num_docs + 1)."""
        chunk_docs = np.array([len(c.offsets) - 1 for c in self._chunks], dtype=np.int64)
        self._chunk_first_doc = np.concatenate([[0], np.cumsum(chunk_docs)]).astype(np.int64)
        self._chunk_first_token = self.doc_offsets[self._chunk_first_doc]
        self._doc_ids = pa.chunked_array(doc_ids, pa.string())
        self._sources = pa.chunked_array(sources, pa.string())
        self._subsets = pa.chunked_array(subsets, pa.string())

    def _batches(self, info: ShardInfo) -> list[pa.RecordBatch]:
        """One shard's record batches, its token chunks appended to self._chunks once it checks out."""
        path = self.directory / info.name
        batches = self._open(info).to_batches()
        chunks = []
        for batch in batches:
            col = batch.column(0)
            if col.offset != 0:
                raise TokenShardError(f"{path}: sliced list arrays are not supported")
            chunk = _Chunk(col.values.to_numpy(zero_copy_only=True), col.offsets.to_numpy())
            _check_offsets(chunk, path)
            chunks.append(chunk)
        tokens = sum(len(c.values) for c in chunks)
        if tokens != info.tokens:
            raise TokenShardError(f"{path}: {tokens} tokens but the manifest says {info.tokens}")
        self._chunks.extend(chunks)
        self._chunk_shards.extend([info.name] * len(chunks))
        return batches

    def verify(self) -> None:
        """Every shard's bytes against the checksum its manifest recorded (a read of every file: the mixture's
        cached index does it once per manifest); shards listed without one (older manifests) are skipped."""
        for info in self.manifest.shards:
            self._verify_shard(info)

    def _verify_shard(self, info: ShardInfo) -> None:
        if info.checksum is None:
            return
        path = self.directory / info.name
        try:
            got = file_checksum(path)
        except OSError as err:
            raise TokenShardError(f"{path}: cannot read token shard: {err}") from err
        if got != info.checksum:
            raise TokenShardError(f"{path}: the shard is corrupt: its checksum {got} differs from {info.checksum} "
                                  f"recorded in {MANIFEST_NAME} when it was written; re-tokenize this source")

    def _open(self, info: ShardInfo) -> pa.Table:
        path = self.directory / info.name
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        except (OSError, pa.ArrowInvalid) as err:
            raise TokenShardError(f"{path}: cannot read token shard: {err}") from err
        if table.schema != SCHEMA:
            raise TokenShardError(f"{path}: schema {table.schema} differs from the token-shard schema")
        if table.num_rows != info.rows:
            raise TokenShardError(f"{path}: {table.num_rows} rows but the manifest says {info.rows}")
        return table

    def check_token_ids(self) -> None:
        """Every token id below the vocabulary (a pass over all tokens: the mixture's cached index does it once
        per manifest), so a bad shard fails here and not hours into training as an index error."""
        first_doc = 0
        for chunk, shard in zip(self._chunks, self._chunk_shards, strict=True):
            if len(chunk.values) and int(chunk.values.max()) >= self.vocab_size:
                position = int(np.argmax(chunk.values >= self.vocab_size))
                doc = first_doc + int(np.searchsorted(chunk.offsets, position, side="right")) - 1
                raise TokenShardError(f"{self.directory / shard}: token id {int(chunk.values[position])} (document "
                                      f"{doc}) is not below the vocabulary size {self.vocab_size}")
            first_doc += len(chunk.offsets) - 1

    @property
    def num_docs(self) -> int:
        return len(self.doc_lengths)

    @property
    def num_tokens(self) -> int:
        return int(self.doc_offsets[-1])

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    @property
    def eos_id(self) -> int:
        return self.manifest.eos_id

    def _locate(self, doc: int) -> tuple[_Chunk, int]:
        chunk = int(np.searchsorted(self._chunk_first_doc, doc, side="right")) - 1
        return self._chunks[chunk], doc - int(self._chunk_first_doc[chunk])

    def document(self, doc: int) -> np.ndarray:
        """Token ids of one document (EOS included): a zero-copy view."""
        if not 0 <= doc < self.num_docs:
            raise IndexError(f"document {doc} out of range 0..{self.num_docs - 1}")
        chunk, local = self._locate(doc)
        return chunk.values[chunk.offsets[local]:chunk.offsets[local + 1]]

    def read(self, start: int, length: int) -> np.ndarray:
        """`length` tokens of the flat stream (all documents back to back) from position `start`."""
        if start < 0 or length < 0 or start + length > self.num_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) out of range 0..{self.num_tokens}")
        pieces = []
        while length > 0:
            chunk_idx = int(np.searchsorted(self._chunk_first_token, start, side="right")) - 1
            # Skip empty chunks that share a start position with the next one.
            while len(self._chunks[chunk_idx].values) == 0:
                chunk_idx += 1
            chunk = self._chunks[chunk_idx]
            local = start - int(self._chunk_first_token[chunk_idx])
            take = min(length, len(chunk.values) - local)
            pieces.append(chunk.values[local:local + take])
            start += take
            length -= take
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint32)

    def doc_id(self, doc: int) -> str:
        return self._doc_ids[doc].as_py()

    def sources(self) -> np.ndarray:
        """Source name of every document (numpy array of str, in document order)."""
        return np.asarray(self._sources.to_numpy(zero_copy_only=False), dtype=object)

    def subsets(self) -> np.ndarray:
        """Subset of every document ('' where none), in document order."""
        return np.asarray(self._subsets.to_numpy(zero_copy_only=False), dtype=object)


def _check_offsets(chunk: _Chunk, path: Path) -> None:
    """A list column's offsets start at 0, never decrease and end at its token count (else documents overlap)."""
    offsets = chunk.offsets
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(chunk.values) or (np.diff(offsets) < 0).any():
        raise TokenShardError(f"{path}: document offsets are not increasing from 0 to the token count; "
                              "the shard is corrupt: re-tokenize it")


def write_shard(path: Path, batches: Iterable[pa.RecordBatch]) -> ShardInfo:
    """Write a whole shard from record batches, atomically."""
    with TokenShardWriter(path) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return writer.info
