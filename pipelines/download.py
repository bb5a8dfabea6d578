"""Resumable, verified, parallel fetching of large files over HTTP(S), file:// and local paths.

Why each rule exists: corpora are hundreds of GB, so a broken transfer must resume (HTTP Range), a
server that ignores Range must not leave a file with its start written twice (restart from 0 on a
200), transient failures (connection errors, 5xx, truncated bodies) are retried with exponential
backoff, and nothing appears under its final name until it is complete and verified: bytes go to
`<name>.part`, which is renamed only after the size and sha256 match what the registry expects. A
copy that fails verification is moved aside to `<name>.corrupt` and fetched again; one far from the
registry's rounded size (an error page, a truncated or different file) is moved aside too. The sha256 of
every finished file is written to `<name>.sha256` (sha256sum format), so a rerun or `--list` knows
the file is whole without hashing it again. An interrupt (Ctrl-C, kill) leaves the `.part` file,
and the next run continues from its last byte.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from flm.config.errors import FlmError
from flm.config.progress import Progress

log = logging.getLogger(__name__)


CHUNK = 1 << 20
PART_SUFFIX = ".part"
CORRUPT_SUFFIX = ".corrupt"
SIDECAR_SUFFIX = ".sha256"
USER_AGENT = "flm-download/0.1 (+python-urllib)"
RETRY_STATUS = {408, 425, 429}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_CONTENT_RANGE_UNSATISFIED = re.compile(r"bytes \*/(\d+)")


def redact(url: str) -> str:
    """The URL without its query, fragment and user info: signed URLs carry their credentials there, and
    error messages get pasted into issues and logs."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or parts.scheme == "file":
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


class DownloadError(FlmError, RuntimeError):
    """A file could not be fetched; the message names the URL and the last error."""


class ChecksumError(DownloadError):
    """Every copy fetched had the wrong size or sha256."""


class DiskFullError(DownloadError):
    """The disk filled up; the partial file is kept for a later resume."""


class Cancelled(Exception):
    """Another thread asked the transfer to stop (Ctrl-C in the main thread)."""


class _Retryable(Exception):
    """A transient failure worth another attempt; `restart` drops the .part file first."""

    def __init__(self, message: str, restart: bool = False) -> None:
        super().__init__(message)
        self.restart = restart


@dataclass
class Download:
    url: str
    """http(s)://..., file://... or a local path."""
    dest: Path
    size: int | None = None
    sha256: str | None = None
    approx_size: int | None = None
    """The registry's rounded size: a copy under half or over twice it is some other file (a truncated
    transfer, an error page, the wrong shard), never named complete."""
    headers: dict[str, str] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        self.dest = Path(self.dest)
        self.label = self.label or self.dest.name


@dataclass
class Policy:
    retries: int = 5
    """Further attempts after a transient failure, each after backoff * 2**(attempt-1) seconds."""
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 60.0
    checksum_retries: int = 2
    """Fresh fetches after a copy failed verification."""
    min_rate: float = 1024.0
    """Bytes per second below which a transfer counts as stalled (measured over `rate_window` seconds) and is
    retried: a server trickling a byte at a time never trips the socket timeout."""
    rate_window: float = 60.0


@dataclass
class Result:
    url: str
    dest: Path
    bytes: int
    sha256: str
    status: str
    """`downloaded` or `present` (already complete on disk)."""
    verified: bool
    """True when a published sha256 was checked; False when none is known (the sha256 is only recorded)."""
    resumed_from: int = 0
    attempts: int = 1
    corrupt: list[str] = field(default_factory=list)
    """Paths bad copies were moved to."""


@dataclass
class Batch:
    results: list[Result]
    failures: list[tuple[Download, DownloadError]]


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + SIDECAR_SUFFIX)


def corrupt_path(dest: Path) -> Path:
    return dest.with_name(dest.name + CORRUPT_SUFFIX)


def recorded_sha256(dest: Path) -> str | None:
    """The sha256 recorded for `dest` when it was completed, if the file is unchanged since."""
    side = sidecar_path(dest)
    try:
        if side.stat().st_mtime_ns < dest.stat().st_mtime_ns:
            return None
        return side.read_text().split()[0].lower()
    except (OSError, IndexError):
        return None


def write_sidecar(dest: Path, sha256: str) -> None:
    sidecar_path(dest).write_text(f"{sha256}  {dest.name}\n")


def sha256_file(path: Path, progress: Progress | None = None, label: str = "",
                cancel: threading.Event | None = None) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(label, done, total)
    return h.hexdigest()


def _mismatch(d: Download, size: int, sha256: str) -> str | None:
    if d.size is not None and size != d.size:
        return f"size {size} bytes, expected {d.size}"
    if d.sha256 is not None and sha256 != d.sha256.lower():
        return f"sha256 {sha256}, expected {d.sha256.lower()}"
    return None


SIZE_FACTOR = 2
"""How far (either way) a copy may be from its rounded registry size: the mirrors' copies of one file differ by
less (the full Pile's shards are about 1.4x the uncopyrighted ones)."""


def _off_size(d: Download, size: int) -> str | None:
    if d.approx_size is None or d.approx_size / SIZE_FACTOR <= size <= d.approx_size * SIZE_FACTOR:
        return None
    return f"size {size:,} bytes, but the registry lists about {d.approx_size:,} for {d.dest.name}"


def _check_size(d: Download, part: Path, size: int) -> None:
    """A finished copy far from its registry size is moved aside, not fetched again: the mirror serves that."""
    problem = _off_size(d, size)
    if problem is not None:
        moved = _move_aside(part, d.dest)
        raise DownloadError(f"{redact(d.url)}: {problem}; the mirror sent something else (a truncated or different "
                            f"file). Kept as {moved}")


def _local_path(url: str) -> Path | None:
    """The filesystem path for file:// URLs and plain paths; None for http(s)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # plain path (or a Windows drive letter)
        return Path(url).expanduser()
    raise DownloadError(f"{redact(url)}: unsupported URL scheme {parsed.scheme!r} (use http, https, file or a path)")


class _Sink:
    """Appends to the .part file and hashes everything in it, turning disk errors into clear ones."""

    def __init__(self, part: Path, offset: int, cancel: threading.Event | None) -> None:
        self.part, self.cancel = part, cancel
        self.hasher = hashlib.sha256()
        if offset:
            with open(part, "rb") as f:
                for _ in range(0, offset, CHUNK):
                    self.hasher.update(f.read(min(CHUNK, offset - f.tell())))
        try:
            self.file = open(part, "ab" if offset else "wb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise self._disk_error(e) from e
        self.size = offset

    def write(self, chunk: bytes) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled
        try:
            self.file.write(chunk)
        except OSError as e:
            raise self._disk_error(e) from e
        self.hasher.update(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as e:
            raise self._disk_error(e) from e

    def _disk_error(self, e: OSError) -> DownloadError:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(self.part.parent).free
            return DiskFullError(f"disk full while writing {self.part} ({free:,} bytes free); free some space "
                                 "and rerun: the partial file is kept and the download resumes from it")
        return DownloadError(f"cannot write {self.part}: {e}")


def _copy_local(src: Path, d: Download, part: Path, report: Callable[[int, int | None], None],
                cancel: threading.Event | None) -> tuple[int, str, int]:
    if not src.is_file():
        raise DownloadError(f"{redact(d.url)}: no such file")
    total = src.stat().st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:
        offset = 0
    sink = _Sink(part, offset, cancel)
    try:
        with open(src, "rb") as f:
            f.seek(offset)
            report(sink.size, total)
            while chunk := f.read(CHUNK):
                sink.write(chunk)
                report(sink.size, total)
    finally:
        sink.close()
    return sink.size, sink.hasher.hexdigest(), offset


def _open(d: Download, offset: int, policy: Policy) -> http.client.HTTPResponse | None:
    """The server's response for bytes from `offset` on; None when the .part already holds the whole file."""
    headers = {"User-Agent": USER_AGENT, **d.headers}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(d.url, headers=headers), timeout=policy.timeout)
    except ValueError as e:
        raise DownloadError(f"{redact(d.url)}: not a valid URL") from e
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            m = _CONTENT_RANGE_UNSATISFIED.match(e.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                return None
            log.warning("%s: server refused range from byte %d; restarting from 0", redact(d.url), offset)
            raise _Retryable("range not satisfiable; restarting from byte 0", True) from e
        if e.code >= 500 or e.code in RETRY_STATUS:
            raise _Retryable(f"HTTP {e.code} {e.reason}") from e
        hint = {401: " (the URL or token is not accepted)", 403: " (the URL or token is not accepted)",
                404: " (not on this mirror)"}.get(e.code, "")
        raise DownloadError(f"{redact(d.url)}: HTTP {e.code} {e.reason}{hint}") from e


def _http_once(d: Download, part: Path, policy: Policy, report: Callable[[int, int | None], None],
               cancel: threading.Event | None) -> tuple[int, str, int]:
    """One HTTP attempt, continuing the .part file where the server allows it."""
    offset = part.stat().st_size if part.exists() else 0
    if d.size is not None and offset > d.size:
        offset = 0
    resp = None if d.size is not None and offset == d.size and offset else _open(d, offset, policy)
    if resp is None:  # finished before an interrupt, not yet renamed
        return offset, sha256_file(part, cancel=cancel), offset
    with resp:
        if offset and resp.status == 200:
            log.warning("%s: server ignored the Range request; restarting from byte 0", redact(d.url))
            offset = 0
        elif offset:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise _Retryable(f"server sent range {resp.headers.get('Content-Range')!r} for bytes={offset}-", True)
        _refuse_html(d, resp.headers.get("Content-Type", ""))
        length = resp.headers.get("Content-Length")
        expected_end = offset + int(length) if length is not None else None
        sink = _Sink(part, offset, cancel)
        try:
            _pump(resp, sink, lambda n: report(n, d.size if d.size is not None else expected_end), policy)
        finally:
            sink.close()
    if expected_end is not None and sink.size < expected_end:
        raise _Retryable(f"connection closed at byte {sink.size} of {expected_end}")
    return sink.size, sink.hasher.hexdigest(), offset


def _refuse_html(d: Download, content_type: str) -> None:
    """A web page where a data file was asked for is an error page or a login wall, not the file."""
    if content_type.split(";")[0].strip().lower() == "text/html" and d.dest.suffix not in (".html", ".htm"):
        raise DownloadError(f"{redact(d.url)}: the server sent a web page (Content-Type {content_type}), not "
                            f"{d.dest.name}; the URL may need a login or point at the wrong place")


def _pump(resp: http.client.HTTPResponse, sink: _Sink, report: Callable[[int], None], policy: Policy) -> None:
    """Copy the body to the sink as it arrives (read1: whatever is there, so a trickle still reaches the
    cancel and rate checks), failing a transfer slower than policy.min_rate over a policy.rate_window."""
    report(sink.size)
    window_start, window_bytes = time.monotonic(), 0
    while True:
        try:
            chunk = resp.read1(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise _Retryable(f"connection lost at byte {sink.size}: {e!r}") from e
        if not chunk:
            return
        sink.write(chunk)
        report(sink.size)
        window_bytes += len(chunk)
        elapsed = time.monotonic() - window_start
        if elapsed >= policy.rate_window:
            if window_bytes < policy.min_rate * elapsed:
                raise _Retryable(f"transfer stalled at byte {sink.size}: {window_bytes / elapsed:.0f} B/s over "
                                 f"{elapsed:.0f} s (minimum {policy.min_rate:.0f} B/s)")
            window_start, window_bytes = time.monotonic(), 0


def _transfer(d: Download, part: Path, policy: Policy, report: Callable[[int, int | None], None],
              cancel: threading.Event | None) -> tuple[int, str, int, int]:
    """Fill the .part file completely, retrying transient failures; (size, sha256, resumed_from, attempts)."""
    src = _local_path(d.url)
    attempt = 0
    while True:
        attempt += 1
        try:
            if src is not None:
                return (*_copy_local(src, d, part, report, cancel), attempt)
            return (*_http_once(d, part, policy, report, cancel), attempt)
        except (_Retryable, OSError, http.client.HTTPException) as e:
            if isinstance(e, _Retryable) and e.restart:
                part.unlink(missing_ok=True)
            reason = str(e) if isinstance(e, _Retryable) else f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if attempt > policy.retries:
                raise DownloadError(f"{redact(d.url)}: unreachable after {attempt} attempts; "
                                    f"last error: {reason}") from e
            delay = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
            log.warning("%s: %s; retry %d/%d in %.1fs", redact(d.url), reason, attempt, policy.retries, delay)
            if cancel is not None and cancel.wait(delay):
                raise Cancelled from e
            if cancel is None:
                time.sleep(delay)


def fetch(d: Download, policy: Policy | None = None, progress: Progress | None = None,
          cancel: threading.Event | None = None) -> Result:
    """Make `d.dest` a complete, verified copy of `d.url`, resuming any `.part` file left before."""
    policy = policy or Policy()
    d.dest.parent.mkdir(parents=True, exist_ok=True)
    part, moved = part_path(d.dest), []

    def report(done: int, total: int | None) -> None:
        if progress:
            progress(d.label, done, total)

    if d.dest.exists():
        sha = recorded_sha256(d.dest) or sha256_file(d.dest, progress, d.label, cancel)
        size = d.dest.stat().st_size
        problem = _mismatch(d, size, sha) or _off_size(d, size)
        if problem is None:
            if recorded_sha256(d.dest) != sha:
                write_sidecar(d.dest, sha)
            part.unlink(missing_ok=True)  # a leftover from an older attempt, not needed any more
            report(size, size)
            return Result(redact(d.url), d.dest, size, sha, "present", d.sha256 is not None)
        moved.append(str(_move_aside(d.dest)))
        log.warning("%s on disk is not the expected file (%s); moved to %s", d.dest, problem, moved[-1])
    attempts, first_offset = 0, None
    for check in range(policy.checksum_retries + 1):
        size, sha, offset, n = _transfer(d, part, policy, report, cancel)
        attempts += n
        first_offset = offset if first_offset is None else first_offset
        problem = _mismatch(d, size, sha)
        if problem is None:
            _check_magic(d, part)
            _check_size(d, part, size)
            os.replace(part, d.dest)
            write_sidecar(d.dest, sha)
            return Result(redact(d.url), d.dest, size, sha, "downloaded", d.sha256 is not None, first_offset,
                          attempts, moved)
        moved.append(str(_move_aside(part, d.dest)))
        log.warning("%s: %s; bad copy moved to %s (fetch %d of %d)", redact(d.url), problem, moved[-1], check + 1,
                    policy.checksum_retries + 1)
    raise ChecksumError(f"{redact(d.url)}: {problem} on each of {policy.checksum_retries + 1} fetches; "
                        f"the last bad copy is {moved[-1]}")


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _check_magic(d: Download, part: Path) -> None:
    """A `.zst` file starts with zstd's magic number; anything else (an error page served with status 200) is
    moved aside, never named complete."""
    if not d.dest.name.endswith(".zst"):
        return
    with open(part, "rb") as fh:
        head = fh.read(64)
    if not head.startswith(ZSTD_MAGIC):
        moved = _move_aside(part, d.dest)
        raise DownloadError(f"{redact(d.url)}: not a zstd file (it starts with {head[:24]!r}); the server sent "
                            f"something else, e.g. an error page. Kept as {moved}")


def _move_aside(path: Path, dest: Path | None = None) -> Path:
    target = corrupt_path(dest or path)
    os.replace(path, target)
    sidecar_path(dest or path).unlink(missing_ok=True)
    return target


class _Totals:
    """Thread-safe per-file and total progress for a batch."""

    def __init__(self, progress: Progress, downloads: Sequence[Download], label: str) -> None:
        self.progress, self.label, self.lock = progress, label, threading.Lock()
        self.done = {id(d): 0 for d in downloads}
        self.total: dict[int, int | None] = {id(d): d.size for d in downloads}
        self.progress(label, 0, self._sum_total())

    def _sum_total(self) -> int | None:
        return None if None in self.total.values() else sum(self.total.values())  # type: ignore[arg-type]

    def for_file(self, d: Download) -> Progress:
        def update(label: str, done: float, total: float | None) -> None:
            with self.lock:
                self.done[id(d)] = int(done)
                if total is not None:
                    self.total[id(d)] = int(total)
                self.progress(label, done, total)
                self.progress(self.label, sum(self.done.values()), self._sum_total())
        return update


def fetch_all(downloads: Sequence[Download], *, workers: int = 4, policy: Policy | None = None,
              progress: Progress | None = None, total_label: str = "total") -> Batch:
    """Fetch in parallel; one failure does not stop the others. Ctrl-C stops all and keeps the .part files."""
    cancel = threading.Event()
    totals = _Totals(progress, downloads, total_label) if progress else None
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="flm-download")
    futures = {pool.submit(fetch, d, policy, totals.for_file(d) if totals else None, cancel): i
               for i, d in enumerate(downloads)}
    results: dict[int, Result] = {}
    failures: list[tuple[Download, DownloadError]] = []
    try:
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except DownloadError as e:
                failures.append((downloads[i], e))
            except OSError as e:  # mkdir, sidecar, os.replace, moving a bad copy aside: this file only
                d = downloads[i]
                failures.append((d, DownloadError(f"{redact(d.url)} -> {d.dest}: {e}")))
    except BaseException:
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return Batch([results[i] for i in sorted(results)], failures)
