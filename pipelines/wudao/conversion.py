"""The conversion driver: every JSON file of the input -> jsonl.zst shards, plus conversion.json."""

from __future__ import annotations

import contextlib
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

from flm.config.atomic import atomic_write_text
from flm.config.progress import Progress
from flm.pipelines.wudao.archives import iter_members
from flm.pipelines.wudao.json_stream import JsonStreamError, iter_json_values, text_stream
from flm.pipelines.wudao.shard_writer import SHARD_DOCS, SHARD_PREFIX, ShardWriteError, ShardWriter

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


CHECKPOINT_NAME = "checkpoint.json"
"""In the scratch folder: where an interrupted conversion stopped (written each time a shard is complete)."""


@dataclass
class Position:
    """The next record to convert: record `record` of the `member`-th JSON file (in input order)."""

    member: int = 0
    record: int = 0


def save_checkpoint(scratch: Path, key: dict[str, Any], position: Position, report: ConversionReport,
                    shards: list[str]) -> None:
    state = {"key": key, "position": asdict(position), "report": report.to_dict(), "shards": shards}
    atomic_write_text(scratch / CHECKPOINT_NAME, json.dumps(state, ensure_ascii=False))


def load_checkpoint(scratch: Path, key: dict[str, Any]) -> tuple[Position, ConversionReport, list[str]] | None:
    """What an interrupted conversion of the same inputs finished; None to start over."""
    try:
        state = json.loads((scratch / CHECKPOINT_NAME).read_text(encoding="utf-8"))
        if state["key"] != key or not all((scratch / name).is_file() for name in state["shards"]):
            return None
        raw = state["report"]
        report = ConversionReport(**{**raw, "malformed": [Malformed(**m) for m in raw["malformed"]]})
        return Position(**state["position"]), report, list(state["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fresh(scratch: Path, out_dir: Path, sources: list[Path]) -> tuple[Position, ConversionReport, list[str]]:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    return Position(), ConversionReport(out_dir=str(out_dir), inputs=[str(p) for p in sources]), []


def convert(src: Path | list[Path], out_dir: Path, *, shard_docs: int = SHARD_DOCS,
            progress: Progress | None = None) -> ConversionReport:
    """Convert WuDao JSON files (or archives, or folders of them) into `out_dir/wudao-NNNNN.jsonl.zst`.

    Shards are written to a scratch folder and swapped in at the end, so an interrupted run never
    leaves a mix of old and new shards; earlier shards of ours in `out_dir` are replaced. The report
    names the inputs by absolute path: `flm data prepare` reading `out_dir` skips the JSON files it
    lists there (a conversion in place), so each document is read once.

    Resumable: each finished shard is recorded in the scratch folder's checkpoint (the file and
    record the next shard starts at, and the report so far). A killed run of the same inputs keeps
    those shards, skips the files before that point without opening them, and goes on from that
    record. A write error (disk full) stops the run with `ShardWriteError`, never counted as bad input.
    """
    sources = [Path(p).resolve() for p in (src if isinstance(src, list) else [src])]
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / ".converting"
    key = {"inputs": [[str(p), p.stat().st_size if p.is_file() else None] for p in sources],
           "shard_docs": shard_docs}
    resumed = load_checkpoint(scratch, key)
    start, report, done = resumed or _fresh(scratch, out_dir, sources)
    if resumed is not None:
        for stale in scratch.glob(f"{SHARD_PREFIX}*.jsonl.zst"):
            if stale.name not in done:
                stale.unlink()  # the shard being written when the run stopped
        log.info("%s: resuming the conversion at shard %d (file %d, record %d)", scratch, len(done),
                 start.member, start.record)
    here = Position(start.member, start.record)

    def checkpoint(names: list[str]) -> None:
        save_checkpoint(scratch, key, here, report, names)

    writer = ShardWriter(scratch, shard_docs, names=done, on_shard=checkpoint)

    def bad(file: str, index: int, reason: str) -> None:
        report.malformed_count += 1
        if len(report.malformed) < MAX_EXAMPLES:
            report.malformed.append(Malformed(file, index, reason))
        if report.malformed_count <= _LOGGED_MALFORMED:
            log.warning("%s: record %d skipped: %s", file, index, reason)

    try:
        ordinal = -1
        for path in sources:
            for name, size, opener in iter_members(path, skip=frozenset({(out_dir / REPORT_NAME).resolve()})):
                ordinal += 1
                if ordinal < start.member:
                    continue  # converted before the interruption: not even opened
                if resumed is None or ordinal > start.member:
                    report.files += 1
                here.member = ordinal
                skip = start.record if ordinal == start.member else 0
                _convert_member(name, size, opener, writer, bad, report, progress, here, skip)
        writer.close()
    except BaseException:
        with contextlib.suppress(ShardWriteError):  # the error being raised already says the disk failed
            writer.close()
        raise
    for old in out_dir.glob(f"{SHARD_PREFIX}*.jsonl.zst"):
        old.unlink()
    for name in writer.names:
        (scratch / name).replace(out_dir / name)
    report.shards = writer.names
    (out_dir / REPORT_NAME).write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n")
    shutil.rmtree(scratch)
    return report


def _convert_member(name: str, size: int | None, opener: Callable[[], AbstractContextManager[IO[bytes]]],
                    writer: ShardWriter, bad: Callable[[str, int, str], None], report: ConversionReport,
                    progress: Progress | None, here: Position, skip: int = 0) -> None:
    """Stream one JSON file into `writer` from record `skip` on, keeping `here` at the next record.

    A file that breaks off is reported, not raised; a failing write (ShardWriteError) is raised.
    """
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
                if index < skip:
                    continue
                here.record = index + 1
                rec = _record(value) if not isinstance(value, ValueError) else str(value)
                if isinstance(rec, str):
                    bad(name, index, rec)
                else:
                    report.docs += 1  # before the write: a shard it completes checkpoints this count
                    writer.write(rec)
    except JsonStreamError as e:
        bad(name, e.index, e.reason)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as e:
        # UnicodeDecodeError is a ValueError; a truncated archive member raises EOFError or OSError.
        bad(name, index + 1, f"unreadable from here on, rest of the file skipped: {e}")
    if progress and size is None:
        progress(label, read, read)
