"""Encoding: one clean input file -> one Arrow piece, and a shard's pieces -> the shard, in order."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from flm.pipelines.clean_text import Document, SkipLog, read_clean_file
from flm.pipelines.token_shards import ShardInfo, TokenShardWriter, documents_to_batch
from flm.pipelines.tokenize.outcome import Outcome
from flm.tokenizer import Tokenizer


def tokenize_file(source: str, path: Path, out_path: Path, tokenizer: Tokenizer, batch_docs: int = 1024,
                  report: Callable[[int, int], None] | None = None) -> Outcome:
    """Encode one clean file into one Arrow file; `report(input_bytes, tokens)` gives progress deltas."""
    start = time.perf_counter()
    skips = SkipLog()
    subsets: dict[str, list[int]] = {}
    docs_read = text_bytes = last_pos = 0
    batch: list[Document] = []

    def flush(writer: TokenShardWriter) -> None:
        nonlocal text_bytes
        ids = tokenizer.encode_arrays([d.text for d in batch])
        tokens = 0
        for doc, doc_ids in zip(batch, ids, strict=True):
            tokens += len(doc_ids) + 1
            entry = subsets.setdefault(doc.subset, [0, 0])
            entry[0] += 1
            entry[1] += len(doc_ids) + 1
            text_bytes += len(doc.text.encode("utf-8", "surrogatepass"))
        writer.write_batch(documents_to_batch(ids, [d.doc_id for d in batch], [d.source for d in batch],
                                              [d.subset for d in batch], append=tokenizer.eos_id))
        batch.clear()
        if report is not None:
            report(0, tokens)

    def position(pos: int) -> None:
        nonlocal last_pos
        if report is not None and pos > last_pos:
            report(pos - last_pos, 0)
            last_pos = pos

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with TokenShardWriter(out_path) as writer:
        for doc in read_clean_file(path, source, skips, position):
            docs_read += 1
            batch.append(doc)
            if len(batch) >= batch_docs:
                flush(writer)
        if batch:
            flush(writer)
    position(path.stat().st_size)
    return Outcome(info=ShardInfo(name=out_path.name, rows=writer.rows, tokens=writer.tokens),
                   inputs=[(path.name, path.stat().st_size)], docs_read=docs_read + skips.total,
                   text_bytes=text_bytes, skips=skips, subsets=subsets, seconds=time.perf_counter() - start)


def concatenate_pieces(pieces: list[Path], out_path: Path) -> ShardInfo:
    """Copy the record batches of `pieces`, in order, into one shard (memory-mapped, no re-encoding)."""
    with TokenShardWriter(out_path) as writer:
        for piece in pieces:
            with pa.memory_map(str(piece), "r") as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    writer.write_batch(reader.get_batch(i))
    return writer.info
