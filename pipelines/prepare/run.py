"""`prepare()`: raw corpora in, clean deduplicated shards and stats.json out, every document accounted for."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flm.config import config_to_dict
from flm.config.folder_lock import folder_lock
from flm.config.progress import Progress
from flm.pipelines.config import PipelineConfig
from flm.pipelines.prepare import decontam
from flm.pipelines.prepare.accounting import Tally, collect, total
from flm.pipelines.prepare.runner import execute
from flm.pipelines.prepare.source_plan import DATA_REMOVED, WORK_DIR, SourcePlan, claim_work_dir, make_plan
from flm.pipelines.prepare.writer import SHARD_SUFFIX
from flm.pipelines.wudao import REPORT_NAME

STATS_FILE = "stats.json"
MAX_WARNINGS = 20


@dataclass
class SourceResult:
    source: str
    totals: Tally
    subsets: dict[str, Tally]
    shards: int
    clean_dir: str
    input_files: int
    tasks: int
    warnings: list[str] = field(default_factory=list)
    decontamination: dict[str, Any] | None = None
    """Which benchmark items were found in which subsets (decontamination.json), when decontam ran."""

    @property
    def balanced(self) -> bool:
        return self.totals.balanced and all(t.balanced for t in self.subsets.values())

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, **self.totals.to_dict(), "balanced": self.balanced, "shards": self.shards,
                "clean_dir": self.clean_dir, "input_files": self.input_files, "tasks": self.tasks,
                "subsets": {name or "(unknown)": t.to_dict() for name, t in sorted(self.subsets.items())},
                "bad_input_examples": self.warnings, "decontamination": self.decontamination}


@dataclass
class PrepareResult:
    out_dir: str
    executor: str
    seconds: float
    sources: dict[str, SourceResult]
    submitted_jobs: dict[str, list[str]] = field(default_factory=dict)
    """Slurm job ids per source when the run was submitted rather than run here."""

    @property
    def totals(self) -> Tally:
        out = Tally()
        for result in self.sources.values():
            out.merge(result.totals)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.totals.to_dict(), "out_dir": self.out_dir, "executor": self.executor,
                "seconds": round(self.seconds, 3), "submitted_jobs": self.submitted_jobs,
                "sources": {name: r.to_dict() for name, r in self.sources.items()}}


def bad_input_examples(plan: SourcePlan, limit: int = MAX_WARNINGS) -> list[str]:
    """The first skipped records, each naming its file and line."""
    lines: list[str] = []
    for path in sorted(Path(plan.work_dir, "bad_input").glob("*.jsonl")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            if len(lines) == limit:
                return lines
            item = json.loads(raw)
            where = f"{item['file']}:{item['line']}" if item["line"] != "" else item["file"]
            lines.append(f"{plan.input_dir}/{where}: {item['reason']}: {item['detail']}")
    return lines


def converted_note(plan: SourcePlan) -> list[str]:
    """The JSON files left unread because the shards beside them hold their documents."""
    if not plan.converted:
        return []
    return [f"{len(plan.converted)} JSON file(s) in {plan.input_dir} ({plan.converted[0]}, ...): converted into the "
            f"shards beside them ({REPORT_NAME}), whose documents were read instead"]


def summarize(cfg: PipelineConfig, plan: SourcePlan) -> SourceResult:
    """Accounting of a finished source, from the per-task stats datatrove saved, written to stats.json."""
    subsets = collect(Path(plan.work_dir, "stages").glob("*/stats/*.json")).get(plan.source, {})
    result = SourceResult(source=plan.source, totals=total(subsets), subsets=subsets,
                          shards=len(list(Path(plan.clean_dir).glob(f"*{SHARD_SUFFIX}"))), clean_dir=plan.clean_dir,
                          input_files=len(plan.files), tasks=plan.tasks,
                          warnings=converted_note(plan) + bad_input_examples(plan))
    if cfg.decontam.enabled:
        result.decontamination = decontam.report(plan.source, Path(plan.work_dir))
        Path(plan.clean_dir).mkdir(parents=True, exist_ok=True)
        Path(plan.clean_dir, decontam.REPORT_FILE).write_text(
            json.dumps(result.decontamination, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    stats = {**result.to_dict(), "docs_per_shard": cfg.writer.docs_per_shard, "config": config_to_dict(cfg)}
    Path(plan.clean_dir).mkdir(parents=True, exist_ok=True)
    Path(plan.clean_dir, STATS_FILE).write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
    return result


def write_overall_stats(out_dir: Path) -> None:
    """CLEAN/stats.json: the totals over every source prepared into this folder so far."""
    sources = {}
    for path in sorted(out_dir.glob(f"*/{STATS_FILE}")):
        data = json.loads(path.read_text(encoding="utf-8"))
        sources[data["source"]] = {k: v for k, v in data.items() if k != "config"}
    overall = Tally()
    for data in sources.values():
        overall.merge(Tally(docs_in=data["docs_in"], bytes_in=data["bytes_in"], docs_kept=data["docs_kept"],
                            bytes_kept=data["bytes_kept"], dropped=data["dropped"],
                            dropped_bytes=data["dropped_bytes"], redacted=data.get("redacted", {})))
    body = {**overall.to_dict(), "balanced": overall.balanced, "sources": sources}
    (out_dir / STATS_FILE).write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def prepare(configs: list[PipelineConfig], input_root: Path, out_root: Path,
            progress: Progress | None = None) -> PrepareResult:
    """Clean every source in `configs` from `input_root/<source>/` into `out_root/<source>/`."""
    with folder_lock(out_root, "prepare writes into a folder"):
        return _prepare(configs, Path(input_root), Path(out_root), progress)


def _prepare(configs: list[PipelineConfig], input_root: Path, out_root: Path,
             progress: Progress | None) -> PrepareResult:
    start = time.perf_counter()
    jobs = []
    indexes: dict[str, Path] = {}
    for cfg in configs:
        plan = make_plan(cfg, Path(input_root), Path(out_root), single=len(configs) == 1)
        claim_work_dir(cfg, plan)
        if cfg.decontam.enabled:  # built here once per evaluation files and settings, memory-mapped by every task
            decontam.ensure_index(cfg.decontam, Path(plan.work_dir), indexes)
        jobs.append((cfg, plan))
    submitted = execute(jobs, Path(out_root) / WORK_DIR / "prepare.log", progress)
    results = {}
    for cfg, plan in jobs:
        if submitted.get(plan.source):
            continue  # running on the cluster: the same command, run again later, collects the stats
        results[plan.source] = summarize(cfg, plan)
        if not cfg.writer.keep_intermediate and Path(plan.work_dir, "data").exists():
            shutil.rmtree(Path(plan.work_dir, "data"))
            Path(plan.work_dir, DATA_REMOVED).touch()
    if results:
        write_overall_stats(Path(out_root))
    return PrepareResult(out_dir=str(Path(out_root).resolve()), executor=configs[0].executor.kind,
                         seconds=time.perf_counter() - start, sources=results,
                         submitted_jobs={k: v for k, v in submitted.items() if v})
