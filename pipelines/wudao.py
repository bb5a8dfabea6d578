"""WuDao as published (JSON-array files, usually inside one archive) -> raw jsonl.zst shards.

WuDaoCorpora 2.0 files are JSON arrays of `{id, uniqueKey, titleUkey, dataType, title, content}`,
a few hundred MB each, shipped inside a .rar (some redistributions use .zip, .tar.gz or JSON
Lines). We stream them (never a whole file in memory), keep `id`, `dataType`, `title` and
`content` unchanged, and write shards of 16384 documents (Open-Llama's convention) that
`flm data prepare` reads like any other raw jsonl.zst. A bad record (not an object, no string
`content`) is skipped and reported with its file and index; a file that cannot be parsed past some
point is reported the same way, and the conversion goes on with the next file.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from flm.config.errors import FlmError
from flm.config.progress import Progress

log = logging.getLogger(__name__)


SHARD_DOCS = 16384
FIELDS = ("id", "dataType", "title", "content")
SHARD_PREFIX = "wudao-"
REPORT_NAME = "conversion.json"
MAX_EXAMPLES = 1000
_BLOCK = 1 << 20
_MAX_RECORD_CHARS = 64 << 20
"""A record still unparsed after this many characters is a syntax error, not a short read."""
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class WuDaoError(FlmError, ValueError):
    """The input cannot be read at all (missing, unknown format, no RAR tool)."""


class JsonStreamError(FlmError, ValueError):
    """A JSON array stops being valid at element `index`; nothing after it can be trusted."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"element {index}: {reason}")
        self.index, self.reason = index, reason


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


class _Counting(io.RawIOBase):
    """Counts bytes read from a binary stream, for progress through files of known size."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None]) -> None:
        self.raw, self.on_read = raw, on_read

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = self.raw.readinto(b)  # type: ignore[attr-defined]  # every stream we open is buffered binary
        self.on_read(n)
        return n


Member = tuple[str, int | None, Callable[[], AbstractContextManager[IO[bytes]]]]
"""(name shown in reports, size in bytes if known, opener of a binary stream)."""


def _file_member(path: Path, name: str) -> Member:
    return name, path.stat().st_size, lambda: open(path, "rb")


def _zip_members(path: Path) -> Iterator[Member]:
    with zipfile.ZipFile(path) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if not info.is_dir() and _is_json(info.filename):
                yield f"{path.name}:{info.filename}", info.file_size, lambda info=info: zf.open(info)


def _tar_members(path: Path) -> Iterator[Member]:
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if m.isfile() and _is_json(m.name):
                yield f"{path.name}:{m.name}", m.size, lambda m=m: _tar_stream(tf, m)


@contextmanager
def _tar_stream(tf: tarfile.TarFile, m: tarfile.TarInfo) -> Iterator[IO[bytes]]:
    f = tf.extractfile(m)
    assert f is not None  # regular files always have a stream
    with f:
        yield f


def _rar_tool() -> tuple[list[str], list[str]]:
    """(list command, print-member command) of the first RAR reader on PATH."""
    if shutil.which("unrar"):
        return ["unrar", "lb"], ["unrar", "p", "-inul"]
    if shutil.which("bsdtar"):
        return ["bsdtar", "-tf"], ["bsdtar", "-xOf"]
    raise WuDaoError("reading a .rar archive needs `unrar` or `bsdtar` on PATH (apt-get install unrar, or "
                     "libarchive-tools); or extract it yourself and pass the folder with --from")


def _rar_members(path: Path) -> Iterator[Member]:
    list_cmd, print_cmd = _rar_tool()
    listing = subprocess.run([*list_cmd, str(path)], capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        raise WuDaoError(f"{path}: {list_cmd[0]} cannot list it: {listing.stderr.strip()[:500]}")
    for name in sorted(n for n in listing.stdout.splitlines() if _is_json(n)):
        yield f"{path.name}:{name}", None, lambda name=name: _process_stream([*print_cmd, str(path), name])


@contextmanager
def _process_stream(cmd: list[str]) -> Iterator[IO[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    read_all = False
    try:
        yield proc.stdout
        read_all = True
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        if proc.wait() != 0 and read_all:  # if we stopped early, the tool's broken pipe is not news
            raise OSError(f"{cmd[0]} failed on {cmd[-1]}: {err[:500]}")


def _is_json(name: str) -> bool:
    return name.lower().endswith((".json", ".jsonl"))


def _members_of(path: Path, name: str) -> Iterator[Member]:
    low = path.name.lower()
    if _is_json(low):
        yield _file_member(path, name)
    elif low.endswith(".zip"):
        yield from _zip_members(path)
    elif low.endswith(_TAR_SUFFIXES):
        yield from _tar_members(path)
    elif low.endswith(".rar"):
        yield from _rar_members(path)
    else:
        raise WuDaoError(f"{path}: not a WuDao input (expected .json, .jsonl, .zip, .tar[.gz|.bz2|.xz] or .rar)")


def iter_members(src: Path) -> Iterator[Member]:
    """Every JSON file under `src`: a file, an archive, or a folder of either, in sorted order."""
    if not src.exists():
        raise WuDaoError(f"{src}: no such file or folder")
    if src.is_file():
        yield from _members_of(src, src.name)
        return
    found = False
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = str(path.relative_to(src))
        if _is_json(path.name) or path.name.lower().endswith((".zip", ".rar", *_TAR_SUFFIXES)):
            found = True
            yield from _members_of(path, rel)
    if not found:
        raise WuDaoError(f"{src}: no .json, .jsonl or archive files in this folder")


class _TextScanner:
    """A sliding window over a text stream: only the current record and one block are in memory."""

    def __init__(self, text: IO[str]) -> None:
        self.text, self.buf, self.pos, self.eof = text, "", 0, False
        self.decoder = json.JSONDecoder()

    def fill(self) -> bool:
        more = self.text.read(_BLOCK)
        self.buf, self.pos, self.eof = self.buf[self.pos:] + more, 0, not more
        return bool(more)

    def peek(self) -> str:
        """The next non-blank character ('' at the end), without consuming it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n\ufeff":
                self.pos += 1
            if self.pos < len(self.buf) or not self.fill():
                return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def value(self) -> Any:
        """Decode the value at the cursor, reading more text while it may be cut by the window's end."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                short = end == len(self.buf)  # a number at the window's end may go on past it
                error = None
            except json.JSONDecodeError as e:
                error, short = e, len(self.buf) - self.pos < _MAX_RECORD_CHARS
            if short and not self.eof:
                self.fill()
                continue
            if error is not None:
                raise error
            self.pos = end
            return value

    def skip_line(self) -> None:
        while (end := self.buf.find("\n", self.pos)) < 0 and self.fill():
            pass
        self.pos = len(self.buf) if end < 0 else end + 1


def iter_json_values(text: IO[str]) -> Iterator[tuple[int, Any]]:
    """Stream the elements of a top-level JSON array, or the lines of JSON Lines, as (index, value).

    In an array, invalid JSON raises JsonStreamError (nothing after it can be trusted); in JSON
    Lines a bad line is yielded as (index, ValueError) and parsing goes on.
    """
    scan = _TextScanner(text)
    first = scan.peek()
    if first == "[":
        scan.pos += 1
        yield from _array_values(scan)
    elif first == "{":
        yield from _line_values(scan)
    elif first:
        raise JsonStreamError(0, f"expected a JSON array or JSON Lines, found {first!r}")


def _array_values(scan: _TextScanner) -> Iterator[tuple[int, Any]]:
    index = 0
    if scan.peek() == "]":
        return
    while True:
        if scan.peek() == "":
            raise JsonStreamError(index, "the file ends inside the array (truncated?)")
        try:
            yield index, scan.value()
        except json.JSONDecodeError as e:
            raise JsonStreamError(index, f"invalid JSON ({e.msg}); rest of the file skipped") from e
        index += 1
        c = scan.peek()
        if c == "]":
            return
        if c != ",":
            raise JsonStreamError(index, f"expected ',' or ']' after the previous element, found {c!r}; "
                                         "rest of the file skipped")
        scan.pos += 1


def _line_values(scan: _TextScanner) -> Iterator[tuple[int, Any]]:
    index = 0
    while scan.peek():
        try:
            yield index, scan.value()
        except json.JSONDecodeError as e:
            yield index, ValueError(f"invalid JSON line ({e.msg})")
            scan.skip_line()
        index += 1


def _record(value: Any) -> dict[str, Any] | str:
    """The kept fields of a WuDao record, or why it is malformed."""
    if not isinstance(value, dict):
        return f"not a JSON object ({type(value).__name__})"
    content = value.get("content")
    if not isinstance(content, str):
        return "no 'content' string" if content is None else f"'content' is {type(content).__name__}, not a string"
    return {"id": value.get("id"), "dataType": value.get("dataType") or "", "title": value.get("title") or "",
            "content": content}


class _ShardWriter:
    """Writes documents to numbered jsonl.zst shards of `shard_docs` each."""

    def __init__(self, out_dir: Path, shard_docs: int) -> None:
        import orjson  # data-path libraries load on use: `flm` must start on a training-only GPU image
        import zstandard

        self.dumps = orjson.dumps
        self.out_dir, self.shard_docs = out_dir, shard_docs
        self.cctx = zstandard.ZstdCompressor(level=3)
        self.names: list[str] = []
        self.count = 0
        self.stream: Any = None

    def write(self, record: dict[str, Any]) -> None:
        if self.stream is None:
            name = f"{SHARD_PREFIX}{len(self.names):05d}.jsonl.zst"
            self.names.append(name)
            self.stream = self.cctx.stream_writer(open(self.out_dir / name, "wb"), closefd=True)  # noqa: SIM115
        self.stream.write(self.dumps(record) + b"\n")
        self.count += 1
        if self.count % self.shard_docs == 0:
            self.close()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def convert(src: Path | list[Path], out_dir: Path, *, shard_docs: int = SHARD_DOCS,
            progress: Progress | None = None) -> ConversionReport:
    """Convert WuDao JSON files (or archives, or folders of them) into `out_dir/wudao-NNNNN.jsonl.zst`.

    Shards are written to a scratch folder and swapped in at the end, so an interrupted run never
    leaves a mix of old and new shards; earlier shards of ours in `out_dir` are replaced.
    """
    sources = [Path(p) for p in (src if isinstance(src, list) else [src])]
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / ".converting"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    report = ConversionReport(out_dir=str(out_dir), inputs=[str(p) for p in sources])
    writer = _ShardWriter(scratch, shard_docs)

    def bad(file: str, index: int, reason: str) -> None:
        report.malformed_count += 1
        if len(report.malformed) < MAX_EXAMPLES:
            report.malformed.append(Malformed(file, index, reason))
        if report.malformed_count <= 20:
            log.warning("%s: record %d skipped: %s", file, index, reason)

    try:
        for path in sources:
            for name, size, opener in iter_members(path):
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
                    writer: _ShardWriter, bad: Callable[[str, int, str], None], report: ConversionReport,
                    progress: Progress | None) -> None:
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
            text = io.TextIOWrapper(io.BufferedReader(_Counting(raw, on_read), _BLOCK), encoding="utf-8")
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
