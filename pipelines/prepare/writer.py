"""Writers: the clean shards (the contract with the tokenizer) and the per-task intermediate copy.

Clean shards are `CLEAN/<source>/<rank>_<shard>.jsonl.zst`, 16384 documents each (the last of a
task may hold fewer), one `{"text", "id", "source", "meta"}` per line. A shard is written under
`.tmp/` and moved into place when full, so a crash never leaves a partial shard that looks whole;
a task that runs again first removes the shards it wrote before.
"""

from __future__ import annotations

from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from flm.pipelines.jsonl_zst import FSSPEC_ZSTD
from flm.pipelines.prepare.accounting import KEPT, record
from flm.pipelines.prepare.heartbeat import Heartbeat
from flm.pipelines.prepare.schema import BYTES_IN, SOURCE, SUBSET, clean_record

TMP_DIR = ".tmp"
SHARD_SUFFIX = ".jsonl.zst"


def _clean_adapter(writer: Any, doc: Document) -> dict[str, Any]:
    return clean_record(doc)


def shard_name(rank: int, shard: int) -> str:
    return f"{rank:05d}_{shard:05d}{SHARD_SUFFIX}"


class CleanShardWriter(JsonlWriter):
    name = "💾 clean shards"

    def __init__(self, output_folder: str, docs_per_shard: int, progress_dir: str) -> None:
        super().__init__(output_folder, output_filename=f"{TMP_DIR}/${{rank}}_${{shard}}{SHARD_SUFFIX}",
                         compression=FSSPEC_ZSTD, adapter=_clean_adapter)
        self.docs_per_shard = docs_per_shard
        self.progress_dir = progress_dir
        self._rank = 0
        self._shard = 0
        self._in_shard = 0
        self._written = 0
        self._heartbeat: Heartbeat | None = None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._rank = rank
        self._heartbeat = Heartbeat(self.progress_dir, rank)
        for stale in self.output_folder.glob(f"{rank:05d}_*{SHARD_SUFFIX}") + self.output_folder.glob(
                f"{TMP_DIR}/{rank:05d}_*{SHARD_SUFFIX}"):
            self.output_folder.rm(stale)
        yield from super().run(data, rank, world_size)
        self._heartbeat.beat(self._written, force=True)

    def write(self, document: Document, rank: int = 0, **kwargs: Any) -> None:
        if self._in_shard == self.docs_per_shard:
            self._publish()
        super().write(document, rank, shard=f"{self._shard:05d}", **kwargs)
        self._in_shard += 1
        self._written += 1
        record(self, KEPT, document.metadata[SOURCE], document.metadata[SUBSET], document.metadata[BYTES_IN])
        self._heartbeat.beat(self._written)

    def _publish(self) -> None:
        """Close the shard being written and move it to its final name."""
        final = shard_name(self._rank, self._shard)
        tmp = f"{TMP_DIR}/{final}"
        if tmp in self.output_mg.get_open_files():
            self.close_file(tmp)
        self.output_folder.mv(tmp, final)
        self._shard += 1
        self._in_shard = 0

    def close(self) -> None:
        super().close()
        if self._in_shard:
            self._publish()


class RankReader(JsonlReader):
    """Reads back the intermediate file of this task's rank, so document indices match its signatures."""

    name = "📖 filtered documents of this task"

    def __init__(self, data_folder: str) -> None:
        super().__init__(data_folder, compression="zstd", add_file_path=False)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        name = intermediate_name(rank)
        if self.data_folder.isfile(name):
            yield from self.read_files_shard([name])


def intermediate_name(rank: int) -> str:
    return f"{rank:05d}{SHARD_SUFFIX}"


def _document_adapter(writer: Any, doc: Document) -> dict[str, Any]:
    """datatrove's default record without its `dataclasses.asdict` deep copy of every document (6% of a run)."""
    if doc.media:
        return writer._default_adapter(doc)
    return {key: value for key, value in (("text", doc.text), ("id", doc.id), ("metadata", doc.metadata)) if value}


def intermediate_writer(output_folder: str) -> JsonlWriter:
    """Filtered documents with all their metadata, one file per task, read back by `RankReader`."""
    return JsonlWriter(output_folder, output_filename="${rank}" + SHARD_SUFFIX, compression=FSSPEC_ZSTD,
                       adapter=_document_adapter)
