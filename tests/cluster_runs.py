"""What the Slurm and Ray tests share: the prepare settings, one local reference run per session, comparisons.

The cluster tests run the real `flm` command line in subprocesses (as a user would, and as the cluster's
tasks need: they import flm from the same venv) on the bundled Pile sample, 200 documents per file so
that each stage's tasks take seconds on a 2-core machine, with 2 MinHash buckets so that the whole
five-stage chain runs. CI sets FLM_REQUIRE_CLUSTER_TESTS=1: a missing engine then fails these tests
instead of skipping them, so they cannot silently stop running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample" / "raw"
FLM = str(Path(sys.executable).parent / "flm")
PREPARE = ["--source", "pile", "--set", "reader.limit=200", "--set", "minhash.num_buckets=2"]
REQUIRED = os.environ.get("FLM_REQUIRE_CLUSTER_TESTS") == "1"


def unavailable(reason: str) -> None:
    """Skip, or fail where CI requires the cluster tests to run."""
    if REQUIRED:
        pytest.fail(f"FLM_REQUIRE_CLUSTER_TESTS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def flm(*args: object, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([FLM, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"flm {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def flm_json(*args: object, env: dict[str, str] | None = None) -> dict:
    return json.loads(flm(*args, "--json", env=env).stdout)


def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local executor's clean text, tokenizer and token shards of the sample (made once per session)."""
    root = tmp_path_factory.getbasetemp() / "cluster-reference"
    if (root / "done").exists():
        return root
    flm_json("data", "prepare", "--input", SAMPLE, "--out", root / "clean", *PREPARE)
    flm_json("data", "train-tokenizer", "--vocab", 1000, "--input", root / "clean", "--out", root / "tokenizer")
    flm_json("data", "tokenize", "--input", root / "clean", "--out", root / "tokens", "--tokenizer",
             root / "tokenizer")
    (root / "done").touch()
    return root


def assert_same_files(got: Path, want: Path, pattern: str) -> None:
    """The same file names, each byte for byte."""
    names = sorted(p.name for p in want.glob(pattern))
    assert names and sorted(p.name for p in got.glob(pattern)) == names
    for name in names:
        assert (got / name).read_bytes() == (want / name).read_bytes(), f"{got / name} differs from {want / name}"


def assert_same_clean(got: Path, want: Path) -> None:
    """Byte-identical shards, and the same balanced accounting (every document in is kept or dropped)."""
    assert_same_files(got / "pile", want / "pile", "*.jsonl.zst")
    counts = ("docs_in", "bytes_in", "docs_kept", "bytes_kept", "dropped", "dropped_bytes", "subsets", "shards")
    got_stats, want_stats = (json.loads((d / "pile" / "stats.json").read_text()) for d in (got, want))
    assert got_stats["balanced"] and got_stats["docs_in"] == got_stats["docs_kept"] + sum(got_stats["dropped"].values())
    assert {k: got_stats[k] for k in counts} == {k: want_stats[k] for k in counts}


def assert_same_tokens(got: Path, want: Path) -> None:
    """Byte-identical token shards and the same manifest counts."""
    assert_same_files(got / "pile", want / "pile", "*.arrow")
    got_m, want_m = (json.loads((d / "pile" / "manifest.json").read_text()) for d in (got, want))
    for key in ("tokenizer_hash", "vocab_size", "shards"):
        assert got_m[key] == want_m[key], key
    for key in ("documents_read", "text_bytes", "skipped", "subsets"):
        assert got_m["extra"][key] == want_m["extra"][key], key
    assert not (got / ".tokenize").exists(), "the cluster's work files are removed once every piece is recorded"


def wait_for(condition: Callable[[], T], timeout: float, what: str, poll: float = 0.2) -> T:
    """Poll `condition()` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
