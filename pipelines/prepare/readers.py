"""Readers of the raw corpora: The Pile's jsonl.zst and WuDao's jsonl.zst shards or JSON arrays.

Both become one document schema (schema.py) with the source and subset kept; every record of a
JSON array is a document of its own, streamed (WuDao files are hundreds of MB). Bad input never
stops a run and never vanishes: a malformed line, a record missing a field, invalid UTF-8, a
truncated or corrupt .zst, an unreadable file or JSON array is skipped with a warning naming the file and line,
counted under its own reason, and logged to `bad_input/<rank>.jsonl` in the work folder.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, get_datafolder
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.utils.logging import logger

from flm.pipelines.jsonl_zst import CHUNK, ZstdStreamError, split_lines, zstd_chunks
from flm.pipelines.prepare.accounting import DROP, IN, record
from flm.pipelines.prepare.heartbeat import Heartbeat
from flm.pipelines.prepare.schema import BYTES_IN, SUBSET, UNKNOWN_SUBSET, make_document
from flm.pipelines.wudao.conversion import REPORT_NAME
from flm.pipelines.wudao.json_stream import JsonStreamError, iter_json_values, text_stream

MALFORMED_JSON = "read/malformed_json"
INVALID_UTF8 = "read/invalid_utf8"
MISSING_FIELD = "read/missing_field"
EMPTY_TEXT = "read/empty_text"
CORRUPT_ZST = "read/corrupt_zst"
TRUNCATED_ZST = "read/truncated_zst"
UNREADABLE_JSON = "read/unreadable_json"
UNREADABLE_FILE = "read/unreadable_file"


class BadRecord(Exception):
    """One record cannot become a document; `subset` is set when it could still be read."""

    def __init__(self, reason: str, detail: str, subset: str = UNKNOWN_SUBSET) -> None:
        super().__init__(detail)
        self.reason = reason
        self.subset = subset


class BadFile(Exception):
    """The rest of a file cannot be read (corrupt or truncated stream, unreadable JSON)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def list_inputs(folder: str | DataFolder, patterns: list[str], exclude: list[str]) -> list[str]:
    """Input files (relative paths, sorted): the same list in the planner and in every task.

    JSON files a WuDao conversion turned into the shards beside them are left out (`converted_originals`).
    """
    data_folder = get_datafolder(folder)
    found = matching_inputs(data_folder, patterns, exclude)
    return sorted(found - converted_originals(data_folder, found))


def matching_inputs(data_folder: DataFolder, patterns: list[str], exclude: list[str]) -> set[str]:
    found: set[str] = set()
    for pattern in patterns:
        found.update(data_folder.list_files(glob_pattern=pattern))
    return {f for f in found if not any(fnmatch.fnmatch(posixpath.basename(f), x) for x in exclude)}


def converted_originals(data_folder: DataFolder, files: set[str]) -> set[str]:
    """Those of `files` that the WuDao conversion recorded in this folder (conversion.json) read.

    Converted in place, the originals and the shards made of them sit side by side; reading both
    would count every document twice. Only a finished conversion (its report written, every shard
    it lists present) stands in for its originals.
    """
    if not data_folder.isfile(REPORT_NAME):
        return set()
    try:
        with data_folder.open(REPORT_NAME, "rt", encoding="utf-8") as fh:
            report = json.load(fh)
        inputs, shards = [Path(p) for p in report["inputs"]], set(report["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()  # not a report of ours: nothing stands in for any file
    if not shards or not shards <= files:
        return set()
    root = Path(data_folder.path).resolve()
    return {f for f in files if f.endswith((".json", ".jsonl"))
            and any((root / f).resolve().is_relative_to(p) for p in inputs if p.is_absolute())}


def _str_field(data: dict[str, Any], key: str, subset: str = UNKNOWN_SUBSET) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise BadRecord(MISSING_FIELD, f"no string field {key!r}", subset)
    return value


def pile_record(data: dict[str, Any]) -> tuple[str, Any, str, dict[str, Any]]:
    """(text, id or None, subset, original meta) of a Pile line."""
    meta = data.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("pile_set_name"), str):
        raise BadRecord(MISSING_FIELD, "no string field 'meta.pile_set_name'")
    subset = meta["pile_set_name"]
    return _str_field(data, "text", subset), data.get("id"), subset, dict(meta)


def wudao_record(data: dict[str, Any]) -> tuple[str, Any, str, dict[str, Any]]:
    """(text, id, subset, original meta) of a WuDao record; the title leads the text unless it already does."""
    subset = _str_field(data, "dataType")
    content = _str_field(data, "content", subset)
    if not content.strip():
        raise BadRecord(EMPTY_TEXT, "empty content", subset)
    title = data.get("title") if isinstance(data.get("title"), str) else ""
    text = content if not title or content.lstrip().startswith(title) else f"{title}\n\n{content}"
    return text, data.get("id"), subset, {"dataType": subset, "title": title}


RECORDS: dict[str, Callable[[dict[str, Any]], tuple[str, Any, str, dict[str, Any]]]] = {
    "pile": pile_record, "wudao": wudao_record}


def plain_chunks(fh: IO[bytes], on_read: Callable[[], None]) -> Iterator[bytes]:
    while raw := fh.read(CHUNK):
        on_read()
        yield raw


class RawReader(BaseDiskReader):
    """Reads RAW/<source>/ with datatrove's file sharding (files[rank::tasks]); see the module doc."""

    name = "📄 raw Pile/WuDao"

    def __init__(self, data_folder: str, source: str, patterns: list[str], exclude: list[str], work_dir: str,
                 limit: int = -1) -> None:
        super().__init__(data_folder, limit=limit, add_file_path=False)
        self.source = source
        self.patterns = patterns
        self.exclude = exclude
        self.work_dir = work_dir
        self._record = RECORDS[source]
        self._heartbeat: Heartbeat | None = None
        self._bad_log: IO[str] | None = None
        self._bytes_done = 0

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = list_inputs(self.data_folder, self.patterns, self.exclude)[rank::world_size]
        self._heartbeat = Heartbeat(f"{self.work_dir}/progress/read", rank)
        bad_path = Path(self.work_dir) / "bad_input" / f"{rank:05d}.jsonl"
        bad_path.parent.mkdir(parents=True, exist_ok=True)
        with bad_path.open("w", encoding="utf-8") as self._bad_log:
            for doc in self.read_files_shard(files):
                # counted here, not when parsed: with `limit`, datatrove parses one document past it and discards it
                record(self, IN, self.source, doc.metadata[SUBSET], doc.metadata[BYTES_IN])
                self.update_doc_stats(doc)
                yield doc
        self._heartbeat.beat(self._bytes_done, force=True)

    def read_file(self, filepath: str) -> DocumentsPipeline:
        size = 0
        try:
            size = self.data_folder.size(filepath)
            with self.data_folder.open(filepath, "rb") as fh:
                yield from self._read_open_file(filepath, fh)
        except BadFile as err:
            self._bad(filepath, "", err.reason, str(err), 0)
        except OSError as err:
            self._bad(filepath, "", UNREADABLE_FILE, str(err), 0)
        finally:
            self._bytes_done += size
            self._heartbeat.beat(self._bytes_done)

    def _read_open_file(self, filepath: str, fh: IO[bytes]) -> Iterator[Document]:
        def on_read() -> None:
            self._heartbeat.beat(self._bytes_done + fh.tell())

        if filepath.endswith(".json"):
            yield from self._read_json(filepath, fh)
            return
        chunks = zstd_chunks(fh, on_read) if filepath.endswith(".zst") else plain_chunks(fh, on_read)
        lines = split_lines(chunks)
        line_no = 0
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except ZstdStreamError as err:
                reason = TRUNCATED_ZST if err.truncated else CORRUPT_ZST
                raise BadFile(reason, f"after line {line_no}: {err}") from err
            line_no += 1
            if line.strip():
                doc = self._parse_line(filepath, line_no, line)
                if doc is not None:
                    yield doc

    def _parse_line(self, filepath: str, line_no: int, line: bytes) -> Document | None:
        try:
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise BadRecord(INVALID_UTF8, str(err)) from err
            try:
                data = orjson.loads(decoded)
            except orjson.JSONDecodeError as err:
                raise BadRecord(MALFORMED_JSON, str(err)) from err
            return self._document(data, filepath, line_no)
        except BadRecord as err:
            self._bad(filepath, line_no, err.reason, str(err), len(line), err.subset)
            return None

    def _read_json(self, filepath: str, fh: IO[bytes]) -> Iterator[Document]:
        """A JSON array (or JSON Lines named .json), streamed: each record is one document in."""
        read = 0

        def on_read(n: int) -> None:
            nonlocal read
            read += n
            self._heartbeat.beat(self._bytes_done + read)

        try:
            for index, value in iter_json_values(text_stream(fh, on_read)):
                try:
                    if isinstance(value, ValueError):
                        raise BadRecord(MALFORMED_JSON, str(value))
                    doc = self._document(value, filepath, index + 1)
                except BadRecord as err:
                    self._bad(filepath, index + 1, err.reason, str(err), 0, err.subset)
                    continue
                yield doc
        except JsonStreamError as err:  # what is left of the file cannot be split into records
            self._bad(filepath, err.index + 1, UNREADABLE_JSON, err.reason, 0)

    def _document(self, data: Any, filepath: str, line_no: int) -> Document:
        if not isinstance(data, dict):
            raise BadRecord(MALFORMED_JSON, f"expected a JSON object, got {type(data).__name__}")
        text, doc_id, subset, meta = self._record(data)
        if not text.strip():
            raise BadRecord(EMPTY_TEXT, "empty text", subset)
        try:  # a lone surrogate (an escape in JSON, or a byte that is not UTF-8 in a .json file) cannot be written
            nbytes = len(text.encode("utf-8"))
            for value in meta.values():
                if isinstance(value, str):
                    value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise BadRecord(INVALID_UTF8, f"not UTF-8 text ({err.reason})", subset) from err
        if not isinstance(doc_id, (str, int)) or doc_id == "":
            doc_id = f"{self.source}/{filepath.rsplit('.json', 1)[0]}/{line_no}"
        return make_document(text, str(doc_id), self.source, subset, meta, nbytes)

    def _bad(self, filepath: str, line: int | str, reason: str, detail: str, nbytes: int,
             subset: str = UNKNOWN_SUBSET) -> None:
        where = f"{filepath}:{line}" if line != "" else filepath
        logger.warning(f"skipping {where}: {reason}: {detail}")
        record(self, IN, self.source, subset, nbytes)
        record(self, DROP, self.source, subset, nbytes, reason)
        self._bad_log.write(json.dumps({"file": filepath, "line": line, "reason": reason, "detail": detail},
                                       ensure_ascii=False) + "\n")
