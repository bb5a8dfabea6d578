"""Weights & Biases logging, offline: the run's .wandb file holds every logged step, beside metrics.jsonl."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from flm.config import ConfigError
from flm.train.config import LoggingConfig
from flm.train.trainer.metrics import WANDB_ID, MetricsLogger

wandb = pytest.importorskip("wandb", reason="wandb is in the dev extra; an install without it cannot test logging")

BLOCK = 32768
HEADER = 7  # ":W&B" + magic (2 bytes) + version: the .wandb file's own header, inside the first block


def wandb_records(path: Path) -> list:
    """The protobuf Records of a .wandb file (LevelDB's log format: 32 KiB blocks of [crc, length, type, data])."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    records, pos, pending = [], HEADER, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):  # still being written
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        elif kind == 0:
            break
    return records


def history(run_dir: Path, timeout: float = 60.0) -> list[dict]:
    """The history rows of the run's .wandb file, once W&B's service process has written its exit record (it
    writes the file on its own, and can still be at it when finish() returns)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [r for path in (run_dir / "wandb").glob("offline-run-*/run-*.wandb") for r in wandb_records(path)]
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_offline_run_holds_the_logged_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    logger = MetricsLogger(run_dir, enabled=True, resume_step=0, config={"model": {"hidden": 64}},
                           logging=LoggingConfig(wandb=True, tensorboard=False, wandb_project="flm-test"))
    for step in (1, 2, 3):
        record = {"step": step, "loss": 6.0 - step / 10, "lr": 1e-3 * step, "stage": "tiny"}
        if step == 3:
            record["val_loss"] = 5.75
        logger.log(record)
    logger.close()

    rows = {row["_step"]: row for row in history(run_dir)}
    assert sorted(rows) == [1, 2, 3]
    assert [rows[s]["train/loss"] for s in (1, 2, 3)] == pytest.approx([5.9, 5.8, 5.7])
    assert rows[2]["train/lr"] == pytest.approx(2e-3)
    assert rows[3]["val_loss"] == pytest.approx(5.75)
    assert "train/stage" not in rows[1]  # strings stay in metrics.jsonl
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    assert (run_dir / WANDB_ID).read_text().strip() in next((run_dir / "wandb").glob("offline-run-*")).name


def test_wandb_off_by_default_writes_nothing(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, enabled=True, resume_step=0, logging=LoggingConfig(tensorboard=False))
    logger.log({"step": 1, "loss": 1.0})
    logger.close()
    assert not (tmp_path / "wandb").exists() and not (tmp_path / WANDB_ID).exists()


def test_missing_wandb_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'flm\[wandb\]'"):
        MetricsLogger(tmp_path, enabled=True, resume_step=0, logging=LoggingConfig(wandb=True))
