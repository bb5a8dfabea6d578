"""WuDao conversion resumes where a killed run stopped; a full disk stops it with one clear error.

The input is three WuDao JSON files (one with malformed records) converted into shards of 7
documents; a run is killed with SIGKILL right after its second shard is complete, and the next run
must end with exactly the shards and report of an uninterrupted run, without reopening the files
finished before the kill.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zstandard

from flm.pipelines.wudao import convert
from flm.pipelines.wudao.conversion import CHECKPOINT_NAME
from flm.pipelines.wudao.shard_writer import ShardWriteError

SHARD_DOCS = 7


def make_input(folder: Path) -> Path:
    folder.mkdir(parents=True)
    n = 0
    for part, count in (("part-0000.json", 9), ("part-0001.json", 12), ("part-0002.json", 8)):
        records = []
        for _ in range(count):
            records.append({"id": n, "dataType": "新闻", "title": f"标题{n}", "content": f"第{n}篇文章的正文。"})
            n += 1
        if part == "part-0001.json":
            records.insert(3, {"id": "bad", "dataType": "新闻"})  # no content: malformed, reported once
        (folder / part).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return folder


def shard_texts(folder: Path) -> dict[str, bytes]:
    return {p.name: zstandard.ZstdDecompressor().stream_reader(p.open("rb")).read()
            for p in sorted(folder.glob("wudao-*.jsonl.zst"))}


@pytest.fixture()
def reference(tmp_path: Path) -> tuple[Path, dict[str, bytes], dict]:
    raw = make_input(tmp_path / "raw")
    report = convert(raw, tmp_path / "reference", shard_docs=SHARD_DOCS)
    return raw, shard_texts(tmp_path / "reference"), report.to_dict()


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from flm.pipelines.wudao import conversion

    saved = []
    original = conversion.save_checkpoint

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:  # the second shard is complete: killed, no cleanup of any kind
            os.kill(os.getpid(), signal.SIGKILL)

    conversion.save_checkpoint = save_then_die
    conversion.convert(Path(sys.argv[1]), Path(sys.argv[2]), shard_docs=int(sys.argv[3]))
""")


def test_a_killed_conversion_resumes_where_it_stopped(reference, tmp_path: Path) -> None:
    raw, expected, expected_report = reference
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(raw), str(out), str(SHARD_DOCS)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    scratch = out / ".converting"
    assert (scratch / CHECKPOINT_NAME).exists() and not list(out.glob("wudao-*.jsonl.zst"))
    opened: list[str] = []
    report = convert(raw, out, shard_docs=SHARD_DOCS, progress=lambda label, *_: opened.append(label))
    assert shard_texts(out) == expected
    assert report.to_dict() == {**expected_report, "out_dir": str(out)}
    assert report.malformed_count == 1 and report.docs == 29 and report.files == 3
    assert "convert part-0000.json" not in opened  # finished before the kill: not read again
    assert not scratch.exists()


def test_a_checkpoint_of_other_inputs_is_not_resumed(reference, tmp_path: Path) -> None:
    raw, expected, _ = reference
    out = tmp_path / "out"
    scratch = out / ".converting"
    scratch.mkdir(parents=True)
    (scratch / CHECKPOINT_NAME).write_text(json.dumps({"key": {"inputs": [], "shard_docs": 1}}), encoding="utf-8")
    (scratch / "wudao-00000.jsonl.zst").write_bytes(b"left over")
    convert(raw, out, shard_docs=SHARD_DOCS)
    assert shard_texts(out) == expected


def test_a_full_disk_stops_the_conversion_with_a_clear_message_and_resumes(reference, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    raw, expected, expected_report = reference
    out = tmp_path / "out"
    writes = 0
    real_open = open

    class FullDisk:
        """A shard file whose third shard hits ENOSPC."""

        def __init__(self, fh) -> None:  # type: ignore[no-untyped-def]
            self.fh = fh

        def write(self, data: bytes) -> int:
            nonlocal writes
            writes += 1
            if "wudao-00002" in self.fh.name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.fh.write(data)

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.fh, name)

    def failing_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        fh = real_open(path, mode, *args, **kwargs)
        return FullDisk(fh) if "wudao-" in str(path) and "w" in mode else fh

    import flm.pipelines.wudao.shard_writer as shard_writer

    monkeypatch.setattr(shard_writer, "open", failing_open, raising=False)
    with pytest.raises(ShardWriteError, match="No space left on device") as err:
        convert(raw, out, shard_docs=SHARD_DOCS)
    assert "wudao-00002.jsonl.zst" in str(err.value) and "resumes" in str(err.value)
    assert not (out / "conversion.json").exists()  # nothing reported as done, nothing counted as bad input
    state = json.loads((out / ".converting" / CHECKPOINT_NAME).read_text(encoding="utf-8"))
    assert state["shards"] == ["wudao-00000.jsonl.zst", "wudao-00001.jsonl.zst"]
    assert state["report"]["malformed_count"] == 1  # the one malformed record, not the write error
    monkeypatch.undo()
    report = convert(raw, out, shard_docs=SHARD_DOCS)
    assert shard_texts(out) == expected
    assert report.to_dict() == {**expected_report, "out_dir": str(out)}
