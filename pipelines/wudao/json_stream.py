"""A streaming parser of a top-level JSON array or JSON Lines: WuDao files are too big to load whole."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from flm.config.errors import FlmError

BLOCK = 1 << 20
"""Characters read per step (and the byte buffer under the text stream in conversion)."""
_MAX_RECORD_CHARS = 64 << 20
"""A record still unparsed after this many characters is a syntax error, not a short read."""


class JsonStreamError(FlmError, ValueError):
    """A JSON array stops being valid at element `index`; nothing after it can be trusted."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"element {index}: {reason}")
        self.index, self.reason = index, reason


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


def text_stream(raw: IO[bytes], on_read: Callable[[int], None]) -> IO[str]:
    """`raw` as UTF-8 text, calling `on_read(n)` per n bytes read.

    surrogateescape: a byte that is not UTF-8 spoils only its own record (the caller checks each
    record's strings), not the file.
    """
    return io.TextIOWrapper(io.BufferedReader(_Counting(raw, on_read), BLOCK), encoding="utf-8",
                            errors="surrogateescape")


class _TextScanner:
    """A sliding window over a text stream: only the current record and one block are in memory."""

    def __init__(self, text: IO[str]) -> None:
        self.text, self.buf, self.pos, self.eof = text, "", 0, False
        self.decoder = json.JSONDecoder()

    def fill(self) -> bool:
        more = self.text.read(BLOCK)
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
