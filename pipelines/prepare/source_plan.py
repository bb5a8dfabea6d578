"""Where one source's run reads and writes, how many tasks it uses, and the guard that keeps resumes honest.

Work files live under CLEAN/.datatrove/<source>/: one datatrove logging folder per stage (logs,
per-task stats, completion markers), the dedup signatures and the filtered intermediate copy,
progress files and the bad-input log. A rerun reuses completed tasks only when the config, the
number of tasks and the input files are those of the first run (`run.json`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.io import get_datafolder

from flm.config import config_to_dict
from flm.config.errors import FlmError
from flm.pipelines.config import PipelineConfig
from flm.pipelines.prepare.readers import converted_originals, list_inputs, matching_inputs

WORK_DIR = ".datatrove"
RUN_FILE = "run.json"
DATA_REMOVED = "data.removed"
"""Marks a finished run whose intermediate files were deleted: any task to redo means redoing all."""


class PrepareError(FlmError, RuntimeError):
    """A run cannot start or did not finish; the message says why and where to look."""


@dataclass
class SourcePlan:
    source: str
    input_dir: str
    out_dir: str
    files: list[str]
    input_bytes: int
    tasks: int
    workers: int
    converted: list[str] = field(default_factory=list)
    """JSON files not read: a WuDao conversion in this folder made them into the shards read instead."""

    @property
    def work_dir(self) -> str:
        return f"{self.out_dir}/{WORK_DIR}/{self.source}"

    @property
    def clean_dir(self) -> str:
        return f"{self.out_dir}/{self.source}"

    def stage_dir(self, stage: str) -> str:
        return f"{self.work_dir}/stages/{stage}"

    def data_dir(self, name: str) -> str:
        return f"{self.work_dir}/data/{name}"

    def progress_dir(self, name: str) -> str:
        return f"{self.work_dir}/progress/{name}"


def resolve_input_dir(input_root: Path, source: str, cfg: PipelineConfig, single: bool) -> Path:
    """RAW/<source>/, or RAW itself when it directly holds this source's files.

    RAW itself only when it is named after the source or `single` (one source being prepared): with
    several sources, a folder of one source's files would otherwise be read as every source.
    """
    nested = input_root / source
    if nested.is_dir():
        return nested
    if ((single or input_root.name == source) and input_root.is_dir()
            and list_inputs(str(input_root), cfg.reader.patterns, cfg.reader.exclude)):
        return input_root
    raise PrepareError(f"no input folder for {source}: {nested} does not exist")


def make_plan(cfg: PipelineConfig, input_root: Path, out_root: Path, single: bool = True) -> SourcePlan:
    """`single`: only this source is being prepared (then RAW may directly hold its files)."""
    input_dir = resolve_input_dir(input_root, cfg.source, cfg, single).resolve()
    files = list_inputs(str(input_dir), cfg.reader.patterns, cfg.reader.exclude)
    if not files:
        raise PrepareError(f"no input files for {cfg.source} under {input_dir} matching "
                           f"{', '.join(cfg.reader.patterns)}")
    tasks = cfg.executor.tasks or len(files)
    workers = min(tasks, cfg.executor.workers or os.cpu_count() or 1)
    folder = get_datafolder(str(input_dir))
    converted = converted_originals(folder, matching_inputs(folder, cfg.reader.patterns, cfg.reader.exclude))
    return SourcePlan(source=cfg.source, input_dir=str(input_dir), out_dir=str(out_root.resolve()), files=files,
                      input_bytes=sum((input_dir / f).stat().st_size for f in files), tasks=tasks, workers=workers,
                      converted=sorted(converted))


def fingerprint(cfg: PipelineConfig, plan: SourcePlan) -> dict[str, Any]:
    """What must not change between a run and its resume (how it is executed, and what it keeps after, may)."""
    config = config_to_dict(cfg)
    config.pop("executor")
    config["writer"].pop("keep_intermediate")
    inputs = [[f, (Path(plan.input_dir) / f).stat().st_size] for f in plan.files]
    return {"config": config, "tasks": plan.tasks, "input_dir": plan.input_dir, "inputs": inputs}


def claim_work_dir(cfg: PipelineConfig, plan: SourcePlan) -> None:
    """Record this run's fingerprint, or refuse to resume a run made with other settings or inputs."""
    path = Path(plan.work_dir) / RUN_FILE
    current = fingerprint(cfg, plan)
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != current:
            changed = sorted(k for k in current if previous.get(k) != current[k])
            detail = changed if changed != ["config"] else [
                f"config.{k}" for k in current["config"] if previous["config"].get(k) != current["config"][k]]
            raise PrepareError(f"{plan.clean_dir} was prepared with other settings (changed: {', '.join(detail)}); "
                               f"use a new --out folder, or delete {plan.work_dir} and {plan.clean_dir} to start over")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
