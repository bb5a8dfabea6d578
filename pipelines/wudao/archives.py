"""The JSON files of a WuDao input: a file, a .zip, .tar[.gz|.bz2|.xz] or .rar, or a folder of them.

Each is a Member: a name for reports, a size when the container knows it, and an opener, so the
caller streams one file at a time and never extracts an archive to disk.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO

from flm.config.errors import FlmError

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class WuDaoError(FlmError, ValueError):
    """The input cannot be read at all (missing, unknown format, no RAR tool)."""


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
    """(list command, print-member command) of the first RAR reader on PATH; each ends where the archive and
    member names go, after `--`, so that no name from the archive is read as an option."""
    if shutil.which("unrar"):
        return ["unrar", "lb", "--"], ["unrar", "p", "-inul", "--"]
    if shutil.which("bsdtar"):
        return ["bsdtar", "-t", "--"], ["bsdtar", "-xO", "--"]
    raise WuDaoError("reading a .rar archive needs `unrar` or `bsdtar` on PATH (apt-get install unrar, or "
                     "libarchive-tools); or extract it yourself and pass the folder with --from")


def _rar_members(path: Path) -> Iterator[Member]:
    list_cmd, print_cmd = _rar_tool()
    listing = subprocess.run(_with_archive(list_cmd, path), capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        raise WuDaoError(f"{path}: {list_cmd[0]} cannot list it: {listing.stderr.strip()[:500]}")
    for name in sorted(n for n in listing.stdout.splitlines() if _is_json(n)):
        yield f"{path.name}:{name}", None, lambda name=name: _process_stream([*_with_archive(print_cmd, path), name])


def _with_archive(cmd: list[str], path: Path) -> list[str]:
    """bsdtar names its archive with -f before the `--`; unrar takes it as the first name after it."""
    if cmd[0] == "bsdtar":
        return [*cmd[:-1], "-f", str(path.resolve()), "--"]
    return [*cmd, str(path.resolve())]


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


def iter_members(src: Path, skip: frozenset[Path] = frozenset()) -> Iterator[Member]:
    """Every JSON file under `src`: a file, an archive, or a folder of either, in sorted order.

    `skip`: resolved paths in the folder that are not input (the conversion's own report, when it
    writes into the folder it reads).
    """
    if not src.exists():
        raise WuDaoError(f"{src}: no such file or folder")
    if src.is_file():
        yield from _members_of(src, src.name)
        return
    found = False
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.resolve() not in skip):
        rel = str(path.relative_to(src))
        if _is_json(path.name) or path.name.lower().endswith((".zip", ".rar", *_TAR_SUFFIXES)):
            found = True
            yield from _members_of(path, rel)
    if not found:
        raise WuDaoError(f"{src}: no .json, .jsonl or archive files in this folder")
