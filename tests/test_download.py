"""Downloads against a local HTTP server that misbehaves on purpose, and WuDao conversion.

The server (http.server in a thread on 127.0.0.1) can ignore Range, drop the connection midway,
answer 500 a few times, serve wrong bytes, and trickle bytes slowly so a subprocess can be killed
mid-file. Nothing here touches the network.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
import zstandard
from typer.testing import CliRunner

import flm.pipelines.download as dl
from flm.cli.main import app
from flm.pipelines.download import ChecksumError, DiskFullError, Download, DownloadError, Policy, fetch, fetch_all
from flm.pipelines.sources import PILE, Digest, Mirror, RemoteFile, Source, SourceError, local_state
from flm.pipelines.wudao import SHARD_DOCS, WuDaoError, convert, iter_members

REPO = Path(__file__).resolve().parent.parent
FAST = Policy(retries=4, backoff=0.01, timeout=10)
runner = CliRunner()


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    fail_500: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Answer 500 this many more times."""
    drop_after: dict[str, tuple[int, int]] = field(default_factory=dict)
    """path -> (bytes sent before closing, how many more responses to cut)."""
    corrupt: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Serve flipped bytes this many more times."""
    delay: float = 0.0
    """Seconds to sleep after each 64 KiB sent."""
    content_type: dict[str, str] = field(default_factory=dict)
    """Content-Type header per path (none by default)."""
    trickle: float = 0.0
    """When set, send one byte every this many seconds."""
    hold_at: int = 0
    """When set, stop sending at this byte offset of the file until `release` is set (a transfer that
    cannot finish before the test has signalled its client, however slowly the test's process runs)."""
    release: threading.Event = field(default_factory=threading.Event)
    log: list[tuple[str, str | None, int]] = field(default_factory=list)
    """(path, Range header, status) of every request."""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        self.path = self.path.split("?")[0]
        data = st.files.get(self.path)
        if data is None:
            st.log.append((self.path, rng, 404))
            self.send_error(404)
            return
        if st.fail_500[self.path] > 0:
            st.fail_500[self.path] -= 1
            st.log.append((self.path, rng, 500))
            self.send_error(500)
            return
        if st.corrupt[self.path] > 0:
            st.corrupt[self.path] -= 1
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = int(rng.removeprefix("bytes=").removesuffix("-")) if rng and not st.ignore_range else 0
        if start >= len(data) and start:
            st.log.append((self.path, rng, 416))
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        status = 206 if start or (rng and not st.ignore_range) else 200
        st.log.append((self.path, rng, status))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        if self.path in st.content_type:
            self.send_header("Content-Type", st.content_type[self.path])
        self.end_headers()
        body = data[start:]
        cut, times = st.drop_after.get(self.path, (0, 0))
        if times > 0:
            st.drop_after[self.path] = (cut, times - 1)
            body = body[:cut]
        step = 1 if st.trickle else 1 << 16
        try:
            for i in range(0, len(body), step):
                if st.hold_at and start + i >= st.hold_at:
                    st.release.wait(timeout=60)
                self.wfile.write(body[i:i + step])
                self.wfile.flush()
                if st.delay or st.trickle:
                    time.sleep(st.delay or st.trickle)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def blob(n: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serve(server, path: str, data: bytes) -> str:
    server.state.files[path] = data
    return server.url + path


@pytest.fixture()
def registry_sizes():
    """Sets the registry's rounded Pile sizes (a test mirror serves kilobytes, not 11 GB); restored after."""
    original = PILE.files

    def set_sizes(approx_bytes: int) -> None:
        object.__setattr__(PILE, "files", tuple(replace(f, approx_bytes=approx_bytes) for f in original))
    yield set_sizes
    object.__setattr__(PILE, "files", original)


# ---------------------------------------------------------------- the fetcher


def test_download_verifies_writes_sidecar_and_skips_when_present(server, tmp_path: Path) -> None:
    data = blob(300_000)
    url = serve(server, "/a.bin", data)
    dest = tmp_path / "a.bin"
    r = fetch(Download(url, dest, size=len(data), sha256=sha(data)), FAST)
    assert (r.status, r.verified, r.bytes) == ("downloaded", True, len(data))
    assert dest.read_bytes() == data and not dl.part_path(dest).exists()
    assert dl.sidecar_path(dest).read_text() == f"{sha(data)}  a.bin\n"
    requests = len(server.state.log)
    again = fetch(Download(url, dest, size=len(data), sha256=sha(data)), FAST)
    assert again.status == "present" and len(server.state.log) == requests  # sidecar trusted: no request


def test_resume_sends_range_from_the_part_file(server, tmp_path: Path) -> None:
    data = blob(500_000, 1)
    url = serve(server, "/b.bin", data)
    dest = tmp_path / "b.bin"
    dl.part_path(dest).write_bytes(data[:123_456])
    r = fetch(Download(url, dest, sha256=sha(data)), FAST)
    assert server.state.log == [("/b.bin", "bytes=123456-", 206)]
    assert r.resumed_from == 123_456 and dest.read_bytes() == data and r.verified


def test_server_ignoring_range_restarts_from_zero(server, tmp_path: Path) -> None:
    data = blob(400_000, 2)
    url = serve(server, "/c.bin", data)
    server.state.ignore_range = True
    dest = tmp_path / "c.bin"
    dl.part_path(dest).write_bytes(data[:100_000])
    r = fetch(Download(url, dest, sha256=sha(data)), FAST)
    assert server.state.log == [("/c.bin", "bytes=100000-", 200)]
    assert r.resumed_from == 0 and dest.read_bytes() == data  # not the first 100 kB twice


def test_dropped_connections_resume_where_they_broke(server, tmp_path: Path) -> None:
    data = blob(700_000, 3)
    url = serve(server, "/d.bin", data)
    server.state.drop_after["/d.bin"] = (200_000, 2)
    r = fetch(Download(url, tmp_path / "d.bin", sha256=sha(data)), FAST)
    ranges = [rng for _, rng, _ in server.state.log]
    assert ranges == [None, "bytes=200000-", "bytes=400000-"]
    assert r.attempts == 3 and (tmp_path / "d.bin").read_bytes() == data


def test_5xx_is_retried_with_backoff(server, tmp_path: Path) -> None:
    data = blob(10_000, 4)
    url = serve(server, "/e.bin", data)
    server.state.fail_500["/e.bin"] = 3
    t0 = time.monotonic()
    r = fetch(Download(url, tmp_path / "e.bin", sha256=sha(data)), Policy(retries=4, backoff=0.05))
    assert [s for _, _, s in server.state.log] == [500, 500, 500, 200]
    assert r.attempts == 4 and time.monotonic() - t0 >= 0.05 + 0.1 + 0.2  # 0.05 * (1 + 2 + 4)


def test_unreachable_after_retries_names_url_and_last_error(server, tmp_path: Path) -> None:
    url = serve(server, "/f.bin", b"x")
    server.state.fail_500["/f.bin"] = 100
    with pytest.raises(DownloadError, match=r"/f\.bin: unreachable after 3 attempts; last error: HTTP 500"):
        fetch(Download(url, tmp_path / "f.bin"), Policy(retries=2, backoff=0.01))


def test_404_is_not_retried(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404.*not on this mirror"):
        fetch(Download(server.url + "/nope.bin", tmp_path / "nope.bin"), FAST)
    assert len(server.state.log) == 1


def test_corrupt_copy_is_moved_aside_and_fetched_again(server, tmp_path: Path) -> None:
    data = blob(200_000, 5)
    url = serve(server, "/g.bin", data)
    server.state.corrupt["/g.bin"] = 1
    dest = tmp_path / "g.bin"
    r = fetch(Download(url, dest, sha256=sha(data)), FAST)
    assert r.corrupt == [str(dl.corrupt_path(dest))] and dl.corrupt_path(dest).exists()
    assert dest.read_bytes() == data and r.verified


def test_checksum_failing_every_time_is_a_clear_error(server, tmp_path: Path) -> None:
    data = blob(50_000, 6)
    url = serve(server, "/h.bin", data)
    server.state.corrupt["/h.bin"] = 100
    dest = tmp_path / "h.bin"
    with pytest.raises(ChecksumError, match=rf"/h\.bin: sha256 [0-9a-f]{{64}}, expected {sha(data)} on each of 3"):
        fetch(Download(url, dest, sha256=sha(data)), Policy(retries=0, checksum_retries=2))
    assert not dest.exists() and dl.corrupt_path(dest).exists() and not dl.part_path(dest).exists()


def test_wrong_file_already_on_disk_is_replaced(server, tmp_path: Path) -> None:
    data = blob(30_000, 7)
    url = serve(server, "/i.bin", data)
    dest = tmp_path / "i.bin"
    dest.write_bytes(b"stale")
    r = fetch(Download(url, dest, sha256=sha(data)), FAST)
    assert dest.read_bytes() == data and dl.corrupt_path(dest).read_bytes() == b"stale" and r.corrupt


def test_file_urls_and_local_paths_resume_too(tmp_path: Path) -> None:
    data = blob(250_000, 8)
    src = tmp_path / "mirror" / "j.bin"
    src.parent.mkdir()
    src.write_bytes(data)
    a = fetch(Download(src.as_uri(), tmp_path / "a" / "j.bin", sha256=sha(data)), FAST)
    assert a.verified and (tmp_path / "a" / "j.bin").read_bytes() == data
    dl.part_path(tmp_path / "b" / "j.bin").parent.mkdir()
    dl.part_path(tmp_path / "b" / "j.bin").write_bytes(data[:1000])
    b = fetch(Download(str(src), tmp_path / "b" / "j.bin", sha256=sha(data)), FAST)
    assert b.resumed_from == 1000 and (tmp_path / "b" / "j.bin").read_bytes() == data
    with pytest.raises(DownloadError, match="no such file"):
        fetch(Download(str(tmp_path / "missing.bin"), tmp_path / "c.bin"), FAST)


def test_disk_full_is_clear_and_keeps_the_part(server, tmp_path: Path, monkeypatch) -> None:
    data = blob(3 << 20, 9)
    url = serve(server, "/k.bin", data)
    real_open = open

    class FullDisk(io.FileIO):
        def write(self, b) -> int:  # type: ignore[no-untyped-def]
            if self.tell() >= 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    def fake_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        return FullDisk(path, mode.replace("b", "")) if "a" in mode or "w" in mode else real_open(path, mode)

    monkeypatch.setattr(dl, "open", fake_open, raising=False)
    dest = tmp_path / "k.bin"
    with pytest.raises(DiskFullError, match="disk full while writing .*k.bin.part"):
        fetch(Download(url, dest, sha256=sha(data)), FAST)
    kept = dl.part_path(dest).stat().st_size
    assert 1 << 20 <= kept < len(data)  # everything written before the disk filled up
    monkeypatch.undo()
    assert fetch(Download(url, dest, sha256=sha(data)), FAST).resumed_from == kept


def test_ctrl_c_keeps_the_part_for_the_next_run(server, tmp_path: Path) -> None:
    data = blob(3 << 20, 10)
    url = serve(server, "/l.bin", data)
    dest = tmp_path / "l.bin"

    def interrupt(label: str, done: float, total: float | None) -> None:
        if done >= 1 << 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(Download(url, dest, sha256=sha(data)), FAST, progress=interrupt)
    kept = dl.part_path(dest).stat().st_size
    assert kept >= 1 << 20 and not dest.exists()
    assert fetch(Download(url, dest, sha256=sha(data)), FAST).resumed_from == kept


def test_parallel_batch_reports_per_file_and_total_progress(server, tmp_path: Path) -> None:
    blobs = {f"/p{i}.bin": blob(200_000 + i * 1000, 20 + i) for i in range(3)}
    downloads = [Download(serve(server, p, b), tmp_path / p[1:], size=len(b), sha256=sha(b)) for p, b in blobs.items()]
    downloads.append(Download(server.url + "/absent.bin", tmp_path / "absent.bin"))
    seen: dict[str, tuple[float, float | None]] = {}
    lock = threading.Lock()

    def progress(label: str, done: float, total: float | None) -> None:
        with lock:
            seen[label] = (done, total)

    batch = fetch_all(downloads, workers=3, policy=FAST, progress=progress)
    assert [r.dest.name for r in batch.results] == ["p0.bin", "p1.bin", "p2.bin"]
    assert len(batch.failures) == 1 and "absent.bin: HTTP 404" in str(batch.failures[0][1])
    assert all(seen[f"p{i}.bin"] == (len(b), len(b)) for i, b in enumerate(blobs.values()))
    assert seen["total"][0] == sum(len(b) for b in blobs.values())



def test_batch_records_a_local_os_error_as_that_files_failure(tmp_path: Path) -> None:
    src = tmp_path / "mirror" / "q.bin"
    src.parent.mkdir()
    src.write_bytes(blob(10_000, 30))
    (tmp_path / "blocker").write_bytes(b"a file where a folder should be")
    downloads = [Download(str(src), tmp_path / "blocker" / "q.bin"), Download(str(src), tmp_path / "ok" / "q.bin")]
    batch = fetch_all(downloads, workers=2, policy=FAST)
    assert [r.dest for r in batch.results] == [tmp_path / "ok" / "q.bin"]
    assert len(batch.failures) == 1 and isinstance(batch.failures[0][1], DownloadError)
    assert f"{src} -> {tmp_path / 'blocker' / 'q.bin'}:" in str(batch.failures[0][1])


# ---------------------------------------------------------------- the registry


def test_registry_selects_files_and_names_them_flat() -> None:
    chosen = PILE.select(["0", "29", "val", "train-01"])
    assert [f.local_name for f in chosen] == ["train-00.jsonl.zst", "train-29.jsonl.zst", "val.jsonl.zst",
                                              "train-01.jsonl.zst"]
    assert len(PILE.files) == 32
    with pytest.raises(SourceError, match="unknown pile file '30'"):
        PILE.select(["30"])
    for m in PILE.mirrors:
        assert all(d.sha256 is None or len(d.sha256) == 64 for d in m.digests.values())
        assert all(path in {f.path for f in PILE.files} for path in m.digests)


def test_local_state_reads_sidecars_without_hashing(tmp_path: Path) -> None:
    data = b"hello"
    f = RemoteFile("train/00.jsonl.zst", 5)
    src = Source("toy", "", "", "", files=(f,), mirrors=(Mirror("m", "http://x/", "", {f.path: Digest(sha(data), 5)}),))
    path = tmp_path / "toy" / "train-00.jsonl.zst"
    assert local_state(src, f, tmp_path).state == "missing"
    path.parent.mkdir()
    dl.part_path(path).write_bytes(b"he")
    assert local_state(src, f, tmp_path).state == "partial"
    path.write_bytes(data)
    assert local_state(src, f, tmp_path).state == "unchecked"
    dl.write_sidecar(path, sha(data))
    assert (local_state(src, f, tmp_path).state, local_state(src, f, tmp_path).verified_by) == ("verified", "m")
    dl.write_sidecar(path, sha(b"other"))
    assert local_state(src, f, tmp_path).state == "recorded"


# ---------------------------------------------------------------- the CLI


def test_cli_pile_from_a_local_mirror_then_list(server, tmp_path: Path, registry_sizes) -> None:
    registry_sizes(100_000)
    files = {"/train/00.jsonl.zst": dl.ZSTD_MAGIC + blob(150_000, 30),
             "/val.jsonl.zst": dl.ZSTD_MAGIC + blob(90_000, 31)}
    for p, b in files.items():
        serve(server, p, b)
    res = runner.invoke(app, ["data", "download", "pile", "--files", "00,val", "--mirror", server.url + "/",
                              "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [f["status"] for f in out["files"]] == ["downloaded", "downloaded"] and out["errors"] == []
    assert (tmp_path / "pile" / "train-00.jsonl.zst").read_bytes() == files["/train/00.jsonl.zst"]
    assert (tmp_path / "pile" / "val.jsonl.zst").read_bytes() == files["/val.jsonl.zst"]
    listing = runner.invoke(app, ["data", "download", "--list", "pile", "--out", str(tmp_path), "--json"])
    states = {f["name"]: f["state"] for f in json.loads(listing.stdout)["sources"][0]["files"]}
    assert states["00"] == states["val"] == "recorded" and states["01"] == "missing"
    folder = tmp_path / "mirror"  # a local folder works as a mirror, like file:// URLs
    (folder / "train").mkdir(parents=True)
    test_split = dl.ZSTD_MAGIC + blob(80_000, 32)
    (folder / "test.jsonl.zst").write_bytes(test_split)
    res = runner.invoke(app, ["data", "download", "pile", "--files", "test", "--mirror", str(folder),
                              "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pile" / "test.jsonl.zst").read_bytes() == test_split
    table = runner.invoke(app, ["data", "download", "--list", "--out", str(tmp_path)])
    assert table.exit_code == 0 and "sha256 recorded" in table.stdout and "wudao" in table.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["pile", "--files", "31"], "unknown pile file '31'"),
    (["pile"], "choose what to fetch: --files"),
    (["pile", "--files", "00", "--mirror", "nowhere"], "unknown mirror 'nowhere'"),
    (["books"], "unknown source 'books'"),
    (["wudao"], "WuDao has no public mirror"),
    (["wudao", "--url", "http://127.0.0.1:9/x.zip"], "pass --accept-licence"),
    (["pile", "--files", "00", "--url", "http://127.0.0.1:9/x.zip"], "--url does not apply to pile"),
    (["pile", "--all", "--accept-licence", "--sha256", "ab"], "--sha256, --accept-licence do not apply to pile"),
    (["wudao", "--from", "x.json", "--mirror", "m", "--all"], "--all, --mirror do not apply to wudao"),
])
def test_cli_clear_errors(args: list[str], message: str, tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "download", *args, "--out", str(tmp_path)])
    assert res.exit_code == 1 and message in " ".join(res.output.split()), res.output


def test_cli_unreachable_mirror_names_url(server, tmp_path: Path) -> None:
    server.state.files["/train/00.jsonl.zst"] = b"x"
    server.state.fail_500["/train/00.jsonl.zst"] = 100
    res = runner.invoke(app, ["data", "download", "pile", "--files", "00", "--mirror", server.url, "--retries", "1",
                              "--out", str(tmp_path)])
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and f"{server.url}/train/00.jsonl.zst: unreachable after 2 attempts" in text
    assert "HTTP 500" in text


def test_interrupted_and_killed_cli_downloads_resume_from_the_part(server, tmp_path: Path) -> None:
    data = dl.ZSTD_MAGIC + blob(6 << 20, 40)
    serve(server, "/train/03.jsonl.zst", data)
    # The command function under Typer, without flm.cli.main's other groups (they import torch: 2 s a start).
    # Ctrl-C raises KeyboardInterrupt as in a terminal, even when the tests run as a background job (which
    # starts every child with SIGINT ignored, and Python then leaves it ignored).
    cli = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "import dataclasses, typer; from flm.pipelines.sources import PILE; "
           "object.__setattr__(PILE, 'files', tuple(dataclasses.replace(f, approx_bytes=6 << 20) "
           "for f in PILE.files)); "
           "from flm.cli.data_download import download; typer.run(download)")
    cmd = [sys.executable, "-c", cli, "pile", "--files", "03", "--mirror", server.url, "--out", str(tmp_path), "--json"]
    part = dl.part_path(tmp_path / "pile" / "train-03.jsonl.zst")

    def run_until(min_bytes: int, sig: int) -> tuple[int, str]:
        """Start the client, signal it once the .part holds `min_bytes`, then let a held transfer go on."""
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120  # a fresh machine's first start compiles every module it imports
        while not (part.exists() and part.stat().st_size >= min_bytes) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        time.sleep(0.5)  # the client's main thread takes the signal and sets its cancel flag ...
        server.state.release.set()  # ... before its worker, held by the server, gets another chunk
        code, err = proc.wait(timeout=30), proc.communicate()[1]
        server.state.release.clear()
        return code, err

    # The server stops 2 MiB into the file until the client has been signalled, so neither signal can land
    # after the transfer finished, however the processes are scheduled (on a busy fresh machine the file
    # once finished before the test saw its first MiB). The 0.1 s per 64 KiB keeps bytes flowing slowly.
    server.state.delay, server.state.hold_at = 0.1, 2 << 20
    code, err = run_until(1 << 20, signal.SIGINT)  # Ctrl-C: a clean stop that says how to resume
    assert part.exists(), (f"no {part.name} after Ctrl-C: exit {code}, requests {server.state.log}, folder "
                           f"{sorted(p.name for p in part.parent.iterdir())}, stderr:\n{err}")
    first = part.stat().st_size
    assert code == 130 and "interrupted" in err and first >= 1 << 20
    server.state.hold_at = first + (2 << 20)  # kill -9 mid-transfer, never after it finished
    code, _ = run_until(first + (1 << 20), signal.SIGKILL)  # kill -9: nothing to clean up with
    kept = part.stat().st_size
    assert code == -signal.SIGKILL and first < kept < len(data)
    assert ("/train/03.jsonl.zst", f"bytes={first}-", 206) in server.state.log
    server.state.delay, server.state.hold_at = 0, 0
    server.state.release.set()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"][0]["resumed_from"] == kept
    assert server.state.log[-1] == ("/train/03.jsonl.zst", f"bytes={kept}-", 206)
    assert (tmp_path / "pile" / "train-03.jsonl.zst").read_bytes() == data and not part.exists()


# ---------------------------------------------------------------- WuDao


def wudao_records(n: int, start: int = 0) -> list[dict]:
    return [{"id": start + i, "uniqueKey": f"u{start + i}", "titleUkey": f"t{start + i}", "dataType": "博客",
             "title": f"标题{start + i}", "content": f"第{start + i}篇文章的正文。"} for i in range(n)]


def read_shards(folder: Path) -> list[list[dict]]:
    out = []
    for p in sorted(folder.glob("wudao-*.jsonl.zst")):
        text = zstandard.ZstdDecompressor().stream_reader(p.read_bytes()).read().decode()
        out.append([orjson.loads(line) for line in text.splitlines()])
    return out


def test_wudao_json_arrays_become_16384_doc_shards(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    part1 = wudao_records(12000)
    part1[5] = "not a record"
    part1[7] = {"id": 7, "title": "no content"}
    (raw / "part-1.json").write_text(json.dumps(part1, ensure_ascii=False))
    (raw / "part-2.json").write_text(json.dumps(wudao_records(9000, 12000), ensure_ascii=False, indent=1))
    report = convert(raw, tmp_path / "wudao")
    shards = read_shards(tmp_path / "wudao")
    assert [len(s) for s in shards] == [SHARD_DOCS, 21000 - 2 - SHARD_DOCS]
    assert report.docs == 20998 and report.files == 2 and report.malformed_count == 2
    assert [(m.file, m.index) for m in report.malformed] == [("part-1.json", 5), ("part-1.json", 7)]
    first = shards[0][0]
    assert first == {"id": 0, "dataType": "博客", "title": "标题0", "content": "第0篇文章的正文。"}
    assert shards[1][-1]["id"] == 20999
    assert json.loads((tmp_path / "wudao" / "conversion.json").read_text())["docs"] == 20998


def test_wudao_one_invalid_utf8_byte_loses_one_record(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    data = json.dumps(wudao_records(2000), ensure_ascii=False).encode("utf-8")
    marker = "第1000篇".encode()
    at = data.index(marker)
    (raw / "part.json").write_bytes(data[:at] + b"\xff" + data[at + 1:])  # breaks record 1000's first character
    report = convert(raw, tmp_path / "wudao")
    assert report.docs == 1999 and report.malformed_count == 1
    assert (report.malformed[0].index, report.malformed[0].reason) == (1000, "invalid UTF-8 bytes in 'content'")
    ids = [r["id"] for shard in read_shards(tmp_path / "wudao") for r in shard]
    assert ids == [i for i in range(2000) if i != 1000]


def test_wudao_archives_truncated_files_and_json_lines(tmp_path: Path) -> None:
    zpath = tmp_path / "wudao.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("WuDao/part-a.json", json.dumps(wudao_records(30)))
        zf.writestr("WuDao/readme.txt", "ignored")
        zf.writestr("WuDao/part-b.json", json.dumps(wudao_records(20, 30))[:-40])  # truncated mid-record
    tpath = tmp_path / "wudao.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        lines = "\n".join(json.dumps(r) for r in wudao_records(10, 100)).replace('"id": 105', '"id": 105,,')
        payload = lines.encode()
        info = tarfile.TarInfo("part-c.jsonl")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    report = convert([zpath, tpath], tmp_path / "out")
    ids = [d["id"] for s in read_shards(tmp_path / "out") for d in s]
    assert report.files == 3 and report.malformed_count == 2
    assert ids[:30] == list(range(30)) and 30 in ids and 49 not in ids and 105 not in ids and ids[-1] == 109
    reasons = {m.file: (m.index, m.reason) for m in report.malformed}
    index, reason = reasons["wudao.zip:WuDao/part-b.json"]
    assert index == 19 and reason.startswith("invalid JSON (") and reason.endswith("rest of the file skipped")
    index, reason = reasons["wudao.tar.gz:part-c.jsonl"]
    assert index == 5 and "invalid JSON line" in reason


def test_an_error_page_served_with_200_is_never_named_complete(server, tmp_path: Path) -> None:
    page = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    url = serve(server, "/train/00.jsonl.zst", page)
    server.state.content_type["/train/00.jsonl.zst"] = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match="the server sent a web page"):
        fetch(Download(url, tmp_path / "train-00.jsonl.zst"), FAST)
    assert not (tmp_path / "train-00.jsonl.zst").exists()
    del server.state.content_type["/train/00.jsonl.zst"]  # the same page with no content type: the magic
    with pytest.raises(DownloadError, match=r"not a zstd file \(it starts with b'<!DOCTYPE html>"):
        fetch(Download(url, tmp_path / "train-00.jsonl.zst"), FAST)
    assert not (tmp_path / "train-00.jsonl.zst").exists()
    assert (tmp_path / "train-00.jsonl.zst.corrupt").read_bytes() == page


def test_a_copy_far_from_the_registry_size_is_never_named_complete(server, tmp_path: Path) -> None:
    """A finished transfer under half (or over twice) its rounded registry size is moved aside at once."""
    data = blob(40_000, 6)
    url = serve(server, "/train/05.jsonl.zst", dl.ZSTD_MAGIC + data)
    dest = tmp_path / "train-05.jsonl.zst"
    for approx in (100_000, 10_000):
        with pytest.raises(DownloadError, match=rf"size 40,004 bytes, but the registry lists about {approx:,} for "
                                                r"train-05.jsonl.zst; .*Kept as .*train-05.jsonl.zst.corrupt"):
            fetch(Download(url, dest, approx_size=approx), FAST)
        assert not dest.exists() and dl.corrupt_path(dest).read_bytes() == dl.ZSTD_MAGIC + data
    assert len(server.state.log) == 2  # one fetch each: the mirror serves that file, fetching again changes nothing
    assert fetch(Download(url, dest, approx_size=60_000), FAST).status == "downloaded"
    assert fetch(Download(url, dest, approx_size=60_000), FAST).status == "present"
    bigger = serve(server, "/train/05.jsonl.zst", dl.ZSTD_MAGIC + blob(70_000, 7))  # the copy on disk: too small now
    again = fetch(Download(bigger, dest, approx_size=100_000), FAST)
    assert again.status == "downloaded" and again.bytes == 70_004 and again.corrupt == [str(dl.corrupt_path(dest))]


def test_cli_refuses_a_pile_file_far_from_its_registry_size(server, tmp_path: Path, registry_sizes) -> None:
    registry_sizes(1_000_000)
    serve(server, "/train/00.jsonl.zst", dl.ZSTD_MAGIC + blob(1_000, 8))
    res = runner.invoke(app, ["data", "download", "pile", "--files", "00", "--mirror", server.url,
                              "--out", str(tmp_path)])
    text = " ".join(res.output.split())
    assert res.exit_code == 1
    assert "size 1,004 bytes, but the registry lists about 1,000,000 for train-00.jsonl.zst" in text
    assert not (tmp_path / "pile" / "train-00.jsonl.zst").exists()


def test_a_trickling_server_is_given_up_on_in_bounded_time(server, tmp_path: Path) -> None:
    url = serve(server, "/slow.bin", blob(10_000, 5))
    server.state.trickle = 0.05  # 20 B/s
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"unreachable after 2 attempts; last error: transfer stalled"):
        fetch(Download(url, tmp_path / "slow.bin"), Policy(retries=1, backoff=0.01, timeout=5, min_rate=1000,
                                                          rate_window=0.5))
    assert time.monotonic() - started < 10


def test_signed_url_secrets_stay_out_of_errors_and_results(server, tmp_path: Path) -> None:
    secret = "X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA"
    with pytest.raises(DownloadError) as err:
        fetch(Download(f"{server.url}/nope.bin?{secret}", tmp_path / "nope.bin"), FAST)
    assert "HTTP 404" in str(err.value) and "deadbeef" not in str(err.value) and "AKIA" not in str(err.value)
    url = serve(server, "/f.bin", b"payload")
    result = fetch(Download(f"{url}?{secret}", tmp_path / "f.bin"), FAST)
    assert "deadbeef" not in result.url and result.url.endswith("/f.bin?…")


@pytest.mark.parametrize("tool", ["unrar", "bsdtar"])
def test_rar_member_names_are_never_read_as_options(tmp_path: Path, monkeypatch, tool: str) -> None:
    """A member named like a switch (`-rf.json`) goes after `--`, and the archive by its absolute path."""
    archive = tmp_path / "-w.rar"
    archive.write_bytes(b"Rar!\x1a\x07\x00")
    calls: list[list[str]] = []
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}" if name == tool else None)

    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="-rf.json\n", stderr="")

    def popen(cmd: list[str], **kwargs: object) -> None:
        calls.append(cmd)
        raise OSError("not running archive tools in a test")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(subprocess, "Popen", popen)
    ((name, _, opener),) = list(iter_members(archive))
    with pytest.raises(OSError, match="not running"), opener():
        pass
    assert len(calls) == 2
    for cmd in calls:
        assert str(archive.resolve()) in cmd and cmd.index(str(archive.resolve())) > 0
        if "-rf.json" in cmd:
            assert cmd.index("-rf.json") > cmd.index("--")


def test_wudao_rar_without_a_tool_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "WuDaoCorpus2.0_base_200G.rar").write_bytes(b"Rar!\x1a\x07\x00")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(WuDaoError, match="needs `unrar` or `bsdtar`"):
        list(iter_members(tmp_path / "WuDaoCorpus2.0_base_200G.rar"))


def test_cli_wudao_from_folder_and_from_url(server, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.json").write_text(json.dumps(wudao_records(40)))
    res = runner.invoke(app, ["data", "download", "wudao", "--from", str(raw), "--out", str(tmp_path / "o1"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["docs"] == 40 and len(read_shards(tmp_path / "o1" / "wudao")[0]) == 40
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("b.json", json.dumps(wudao_records(25)))
    url = serve(server, "/signed/wudao.zip", buf.getvalue())
    res = runner.invoke(app, ["data", "download", "wudao", "--url", url + "?token=abc", "--accept-licence",
                              "--sha256", sha(buf.getvalue()), "--out", str(tmp_path / "o2"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["docs"] == 25 and out["download"]["files"][0]["verified"] is True
    assert (tmp_path / "o2" / "_downloads" / "wudao" / "wudao.zip").exists()
    listing = json.loads(runner.invoke(app, ["data", "download", "--list", "wudao", "--out", str(tmp_path / "o2"),
                                             "--json"]).stdout)
    assert listing["sources"][0]["converted"]["docs"] == 25

