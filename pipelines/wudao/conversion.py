"""The conversion driver: every JSON file of the input -> jsonl.zst shards, plus conversion.json."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from flm.config.progress import Progress
from flm.pipelines.wudao.archives import iter_members
from flm.pipelines.wudao.json_stream import JsonStreamError, iter_json_values, text_stream
from flm.pipelines.wudao.shard_writer import SHARD_DOCS, SHARD_PREFIX, ShardWriter

log = logging.getLogger(__name__)

REPORT_NAME = "conversion.json"
MAX_EXAMPLES = 1000
_LOGGED_MALFORMED = 20
"""Malformed records logged as warnings; the report holds more, malformed_count all of them."""


@dataclass
class Malformed:
    file: str
    index: int
    """Position of the record in its file (0-based)."""
    reason: str


@dataclass
class ConversionReport:
    out_dir: str
    inputs: list[str]
    files: int = 0
    docs: int = 0
    shards: list[str] = field(default_factory=list)
    malformed_count: int = 0
    malformed: list[Malformed] = field(default_factory=list)
    """The first MAX_EXAMPLES malformed records; malformed_count counts them all."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _record(value: Any) -> dict[str, Any] | str:
    """The kept fields of a WuDao record, or why it is malformed."""
    if not isinstance(value, dict):
        return f"not a JSON object ({type(value).__name__})"
    content = value.get("content")
    if not isinstance(content, str):
        return "no 'content' string" if content is None else f"'content' is {type(content).__name__}, not a string"
    record = {"id": value.get("id"), "dataType": value.get("dataType") or "", "title": value.get("title") or "",
              "content": content}
    for key, text in record.items():
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a byte that is not UTF-8, kept as a lone surrogate by the reader
                return f"invalid UTF-8 bytes in '{key}'"
    return record


def convert(src: Path | list[Path], out_dir: Path, *, shard_docs: int = SHARD_DOCS,
            progress: Progress | None = None) -> ConversionReport:
    """Convert WuDao JSON files (or archives, or folders of them) into `out_dir/wudao-NNNNN.jsonl.zst`.

    Shards are written to a scratch folder and swapped in at the end, so an interrupted run never
    leaves a mix of old and new shards; earlier shards of ours in `out_dir` are replaced. The report
    names the inputs by absolute path: `flm data prepare` reading `out_dir` skips the JSON files it
    lists there (a conversion in place), so each document is read once.
    """
    sources = [Path(p).resolve() for p in (src if isinstance(src, list) else [src])]
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / ".converting"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    report = ConversionReport(out_dir=str(out_dir), inputs=[str(p) for p in sources])
    writer = ShardWriter(scratch, shard_docs)

    def bad(file: str, index: int, reason: str) -> None:
        report.malformed_count += 1
        if len(report.malformed) < MAX_EXAMPLES:
            report.malformed.append(Malformed(file, index, reason))
        if report.malformed_count <= _LOGGED_MALFORMED:
            log.warning("%s: record %d skipped: %s", file, index, reason)

    try:
        for path in sources:
            for name, size, opener in iter_members(path, skip=frozenset({(out_dir / REPORT_NAME).resolve()})):
                report.files += 1
                _convert_member(name, size, opener, writer, bad, report, progress)
        writer.close()
    except BaseException:
        writer.close()
        raise
    for old in out_dir.glob(f"{SHARD_PREFIX}*.jsonl.zst"):
        old.unlink()
    for name in writer.names:
        (scratch / name).replace(out_dir / name)
    scratch.rmdir()
    report.shards = writer.names
    (out_dir / REPORT_NAME).write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n")
    return report


def _convert_member(name: str, size: int | None, opener: Callable[[], AbstractContextManager[IO[bytes]]],
                    writer: ShardWriter, bad: Callable[[str, int, str], None], report: ConversionReport,
                    progress: Progress | None) -> None:
    """Stream one JSON file into `writer`; a file that breaks off is reported, not raised."""
    read = 0
    label = f"convert {name}"

    def on_read(n: int) -> None:
        nonlocal read
        read += n
        if progress:
            progress(label, read, size)

    index = -1
    try:
        with opener() as raw:
            text = text_stream(raw, on_read)
            for index, value in iter_json_values(text):
                rec = _record(value) if not isinstance(value, ValueError) else str(value)
                if isinstance(rec, str):
                    bad(name, index, rec)
                else:
                    writer.write(rec)
                    report.docs += 1
    except JsonStreamError as e:
        bad(name, e.index, e.reason)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as e:
        # UnicodeDecodeError is a ValueError; a truncated archive member raises EOFError or OSError.
        bad(name, index + 1, f"unreadable from here on, rest of the file skipped: {e}")
    if progress and size is None:
        progress(label, read, read)
