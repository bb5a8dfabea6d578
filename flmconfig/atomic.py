"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every file that another process (or a rerun after a crash) may read while it is being written goes
through here: the bytes go to a temporary file beside the target, which is then renamed over it
(a rename within one folder is atomic on POSIX). Temporary files end in `.tmp`, so a folder's
leftovers of a killed writer are easy to find and remove.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def _create_temp(path: Path) -> tuple[BinaryIO, Path]:
    """A new, exclusive temp file beside `path`, created with mode 0o666 less the umask like any file.

    Not tempfile.mkstemp: its files are private (0o600), and manifests, tokenizers and caches are
    read by other users of a shared machine.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), temp


class AtomicFile:
    """A temp file beside `path` that replaces `path` on `commit()` and vanishes on `discard()`.

    For writers that stream a large file over many calls; `with` commits on success and discards
    on an exception. The folder must exist.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.file, self.temp_path = _create_temp(self.path)

    def commit(self) -> None:
        try:
            self.file.close()
            os.replace(self.temp_path, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        try:
            self.file.close()
        finally:
            self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through `write(file)` atomically; on any error `path` is untouched and no temp file stays."""
    with AtomicFile(path) as target:
        write(target.file)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace `path` by `data` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """Replace `path` by `text` atomically."""
    atomic_write_bytes(path, text.encode(encoding))
