"""Reading clean text (CLEAN/<source>/*.jsonl.zst): documents out, bad lines counted, never raised.

A line is one JSON object `{"text", "id", "source", "meta"}`; the subset is `meta.pile_set_name`
(The Pile) or `meta.dataType` (WuDao) or "". Empty or whitespace-only text, invalid UTF-8 (or
lone-surrogate escapes) and malformed JSON are skipped and counted by reason with their file:line.
A damaged zstd stream is an error naming the file: silently losing its tail would be worse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from flm.config.errors import FlmError
from flm.pipelines.jsonl_zst import ZstdStreamError, split_lines, zstd_chunks

log = logging.getLogger(__name__)

CLEAN_PATTERN = "*.jsonl.zst"
SKIP_REASONS = ("empty", "non_utf8", "malformed")
MAX_EXAMPLES = 5


class CleanTextError(FlmError, ValueError):
    """A clean-text file cannot be read at all (corrupt or truncated compression)."""


@dataclass
class Document:
    text: str
    doc_id: str
    source: str
    subset: str


@dataclass
class SkipLog:
    """Documents skipped by reason, with the first few locations ("file:line") of each."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        seen = self.examples.setdefault(reason, [])
        if len(seen) < MAX_EXAMPLES:
            seen.append(where)

    def merge(self, other: SkipLog) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        for reason, places in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(places[:MAX_EXAMPLES - len(mine)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _bad_line_reason(line: bytes) -> str:
    """orjson refused the line: invalid UTF-8 or lone-surrogate escapes are 'non_utf8', the rest 'malformed'."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "non_utf8"
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return "malformed"
    return "non_utf8"  # valid JSON that orjson rejects: \ud800-style escapes that are not UTF-8 text


def _document(obj: object, where: str, default_source: str) -> Document | str:
    """A Document, or the skip reason."""
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return "malformed"
    text = obj["text"]
    if not text.strip():
        return "empty"
    meta = obj.get("meta")
    subset = (meta.get("pile_set_name") or meta.get("dataType") or "") if isinstance(meta, dict) else ""
    doc_id = obj.get("id")
    source = obj.get("source")
    return Document(text=text, doc_id=str(doc_id) if doc_id is not None else where,
                    source=source if isinstance(source, str) and source else default_source, subset=str(subset))


def zstd_lines(raw: BinaryIO, path: Path) -> Iterator[bytes]:
    """Lines of a zstd file (one or more frames); a truncated last frame is an error, an empty file no lines."""
    truncated = f"{path}: cannot decompress: the zstd stream ends mid-frame (truncated file?)"
    if path.stat().st_size == 0:
        log.warning("%s: empty file (0 bytes): no documents", path)
        return
    try:
        yield from split_lines(zstd_chunks(raw))
    except ZstdStreamError as err:
        if err.truncated:
            raise CleanTextError(truncated) from err
        raise CleanTextError(f"{path}: cannot decompress (corrupt or not zstd): {err}") from err


def read_clean_file(path: Path, source: str, skips: SkipLog,
                    position: Callable[[int], None] | None = None) -> Iterator[Document]:
    """Documents of one clean shard; bad ones are counted in `skips`, never raised.

    `position(compressed_bytes_read)` is called every 256 lines, for progress.
    """
    with open(path, "rb") as raw:
        for line_no, line in enumerate(zstd_lines(raw, path), 1):
            if position is not None and line_no % 256 == 0:
                position(raw.tell())
            if not line.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                skips.add(_bad_line_reason(line), where)
                continue
            doc = _document(obj, where, source)
            if isinstance(doc, str):
                skips.add(doc, where)
            else:
                yield doc


def list_clean_sources(input_dir: Path) -> dict[str, list[Path]]:
    """source name -> its clean shards, sorted; a clear error when there are none."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: no such directory (expected CLEAN/<source>/{CLEAN_PATTERN})")
    sources = {d.name: sorted(d.glob(CLEAN_PATTERN)) for d in sorted(input_dir.iterdir())
               if d.is_dir() and not d.name.startswith(".")}
    sources = {name: files for name, files in sources.items() if files}
    if not sources:
        raise FileNotFoundError(f"{input_dir}: no {CLEAN_PATTERN} files under any <source>/ folder")
    return sources
