"""One process at a time per output folder: a second `flm train` on a run directory, or a second prepare or
tokenize into the same folder, is refused with the first one's pid, host and command.

The lock is an advisory `flock` on `<folder>/.flm.lock`, so the operating system releases it when its holder
exits, however it exits (kill -9 included): a lock file left behind is never stale, and the next run
simply takes it. (flock does not reach across hosts on every network file system.)

A forked child inherits the descriptors, and with them the lock: it would hold its parent's folder for
as long as it, or anything it forks, lives on. Each child lets go of its copies when it is forked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from flm.config.errors import FlmError

LOCK_NAME = ".flm.lock"


_held: set[int] = set()
"""Descriptors of the locks this process holds."""


def _let_go_in_child() -> None:
    """In a forked child: point each inherited lock descriptor at /dev/null. The parent keeps its lock; the
    child's file objects, closed later, close a /dev/null descriptor, never a number reused by another file."""
    if not _held:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in _held:
        os.dup2(null, fd)
    os.close(null)
    _held.clear()


os.register_at_fork(after_in_child=_let_go_in_child)


class FolderInUse(FlmError):
    """Another flm process holds the folder."""


def _holder(handle: IO[str]) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return "another process"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"({info.get('command', '?')})")


@contextmanager
def folder_lock(folder: Path | str, purpose: str) -> Iterator[None]:
    """Hold `folder` (created if needed) for this process while the block runs; FolderInUse if another holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(f"{folder} is in use by {_holder(handle)}: {purpose} one process at a time; "
                              "wait for it to finish or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)}))
        handle.flush()
        _held.add(handle.fileno())
        yield
    finally:
        _held.discard(handle.fileno())
        handle.close()  # releases the flock
