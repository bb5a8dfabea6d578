"""Training metrics: one JSON object per step in `metrics.jsonl`, the same scalars to TensorBoard and, when
`logging.wandb` is on, to Weights & Biases.

Only rank 0 writes. On resume the log is cut back to the checkpoint's step, so a run that was
killed after its last checkpoint does not leave duplicate steps behind.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from pathlib import Path
from typing import Any

from flm.config import ConfigError
from flm.config.atomic import atomic_write_text
from flm.train.config import LoggingConfig

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
WANDB_ID = "wandb-id"
"""The run folder's W&B run id, so a resumed training continues the same W&B run."""

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


def scalar_key(key: str) -> str:
    """The name a metric gets in TensorBoard and W&B: train/loss, train/lr, ...; val_loss stays itself."""
    return key if key.startswith("val") else f"train/{key}"


def start_wandb(run_dir: Path, cfg: LoggingConfig, config: dict[str, Any] | None) -> Any:
    """A W&B run logging into RUN/wandb/: resumed (same id) when the run folder has logged to W&B before."""
    try:
        import wandb
    except ImportError as err:
        raise ConfigError(f"logging.wandb is true but wandb is not installed ({err}); pip install 'flm[wandb]' "
                          "or set logging.wandb=false") from err
    id_file = Path(run_dir) / WANDB_ID
    run_id = id_file.read_text(encoding="utf-8").strip() if id_file.exists() else secrets.token_hex(4)
    atomic_write_text(id_file, run_id + "\n")
    (Path(run_dir) / "wandb").mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, name=cfg.wandb_name or Path(run_dir).name,
                      id=run_id, resume="allow", dir=str(run_dir), config=config)


class MetricsLogger:
    """Appends step records to metrics.jsonl, TensorBoard and W&B (rank 0 only; others are no-ops)."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_step: int, logging: LoggingConfig | None = None,
                 config: dict[str, Any] | None = None) -> None:
        """`config` (the stage as trained) is recorded with the W&B run."""
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_NAME
        self._file = None
        self._tb = None
        self._wandb = None
        cfg = logging or LoggingConfig()
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_jsonl(self.path, resume_step)
        if cfg.wandb:
            self._wandb = start_wandb(run_dir, cfg, config)
        self._file = self.path.open("a", encoding="utf-8")
        if cfg.tensorboard:
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
        scalars = {scalar_key(k): v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, record["step"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
