"""Training metrics: one JSON object per step in `metrics.jsonl`, the same scalars to TensorBoard.

Only rank 0 writes. On resume the log is cut back to the checkpoint's step, so a run that was
killed after its last checkpoint does not leave duplicate steps behind.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from flm.config.atomic import atomic_write_text

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0,
                    "L40S": 362.0, "A10": 125.0, "V100": 125.0}
"""Dense bf16 (fp16 for V100) tensor-core peak per GPU by product name, for MFU."""


def peak_tflops(configured: float | None, device_name: str) -> float | None:
    """The configured peak, else the peak of the GPU named `device_name`; None when unknown (the CPU)."""
    if configured is not None:
        return configured
    if device_name == "cpu":
        return None
    name = device_name
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    log.warning("unknown GPU %r: MFU is not reported; set train.peak_tflops", name)
    return None


def truncate_jsonl(path: Path, after_step: int) -> None:
    """Drop records with step > after_step (and a torn last line) from a metrics file."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= after_step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class MetricsLogger:
    """Appends step records to metrics.jsonl and TensorBoard (rank 0 only; others are no-ops)."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_step: int, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_NAME
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_jsonl(self.path, resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # the GPU image has no tensorboard package
                log.warning("TensorBoard logging is off: %s", err)
            else:
                self._tb = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=resume_step + 1)

    @property
    def tensorboard(self) -> bool:
        return self._tb is not None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self._tb.add_scalar(f"train/{key}" if not key.startswith("val") else key, value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
