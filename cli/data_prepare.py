"""`flm data prepare`: clean raw Pile / WuDao text with datatrove into deduplicated jsonl.zst shards."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from flm.cli.render import console, emit_json, err_console, fail, progress_bars
from flm.config import find_config, load_config
from flm.pipelines.config import SOURCES

if TYPE_CHECKING:
    from flm.pipelines.config import PipelineConfig
    from flm.pipelines.prepare import PrepareResult


def _configs(source: str, config: str | None, overrides: list[str]) -> list[PipelineConfig]:
    from flm.pipelines.config import PipelineConfig

    if source not in (*SOURCES, "all"):
        fail(f"--source must be one of {', '.join(SOURCES)}, all; got {source!r}")
    sources = list(SOURCES) if source == "all" else [source]
    if config and len(sources) > 1:
        fail("--config names the config of one source; use it with --source pile or --source wudao")
    configs = []
    for name in sources:
        cfg = load_config(PipelineConfig, find_config(config or name, "pipelines"), overrides)
        if cfg.source != name:
            fail(f"config {config!r} is for source {cfg.source!r}, not {name!r}")
        configs.append(cfg)
    return configs


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def render_summary(result: PrepareResult) -> None:
    """Per source and subset: documents and MB in and kept; then drops by stage/reason."""
    table = Table(title=f"flm data prepare -> {result.out_dir}", title_justify="left")
    for column in ("source", "subset", "docs in", "kept", "kept %", "MB in", "MB kept", "dropped"):
        table.add_column(column, justify="left" if column in ("source", "subset") else "right")
    for name, src in result.sources.items():
        for subset, t in sorted(src.subsets.items()):
            table.add_row(name, subset or "(unreadable)", f"{t.docs_in:,}", f"{t.docs_kept:,}",
                          _pct(t.docs_kept, t.docs_in), _mb(t.bytes_in), _mb(t.bytes_kept), f"{t.docs_dropped:,}")
        t = src.totals
        table.add_row(f"[bold]{name}", "[bold]all", f"[bold]{t.docs_in:,}", f"[bold]{t.docs_kept:,}",
                      _pct(t.docs_kept, t.docs_in), _mb(t.bytes_in), _mb(t.bytes_kept), f"{t.docs_dropped:,}",
                      end_section=True)
    console.print(table)
    reasons = Table(title="dropped documents by stage/reason", title_justify="left")
    reasons.add_column("source")
    reasons.add_column("stage/reason")
    reasons.add_column("docs", justify="right")
    reasons.add_column("MB (as read)", justify="right")
    for name, src in result.sources.items():
        for reason, n in sorted(src.totals.dropped.items(), key=lambda kv: -kv[1]):
            reasons.add_row(name, reason, f"{n:,}", _mb(src.totals.dropped_bytes.get(reason, 0)))
    console.print(reasons)
    for name, src in result.sources.items():
        if src.totals.redacted:
            console.print(f"{name}: PII redacted: " + ", ".join(f"{kind} {n:,}" for kind, n in
                                                              src.totals.redacted.items()), highlight=False)
        if src.decontamination:
            found = [f"{bench} {b['items_found']} item(s) in {b['docs_removed']} doc(s)"
                     for bench, b in src.decontamination["benchmarks"].items()]
            console.print(f"{name}: decontamination: {', '.join(found)} (which items, in which subsets: "
                          f"{src.clean_dir}/decontamination.json)", highlight=False)
        console.print(f"{name}: {src.shards} shard(s) in {src.clean_dir}, stats in {src.clean_dir}/stats.json"
                      + ("" if src.balanced else "  [bold red]accounting does not balance[/]"), highlight=False)
        for line in src.warnings:
            err_console.print(f"[yellow]warning:[/] skipped {line}", highlight=False, markup=True)


def prepare(
    input_dir: Annotated[Path, typer.Option("--input", help="Raw folder holding <source>/ (as written by "
                                            "`flm data download`).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Clean folder: <source>/*.jsonl.zst and stats.json.")],
    source: Annotated[Literal["pile", "wudao", "all"], typer.Option("--source", help="Which source to prepare.")]
    = "all",
    config: Annotated[str | None, typer.Option("--config", help="Pipeline config name or YAML path "
                                               "(default: the source's own, configs/pipelines/<source>.yaml).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Tasks run at once (local executor).")]
    = None,
    tasks: Annotated[int | None, typer.Option("--tasks", min=1, help="Tasks per stage (default: one per input "
                                                                     "file).")] = None,
    executor: Annotated[Literal["local", "slurm", "ray"] | None, typer.Option(
        "--executor", help="Where the tasks run (default: the config's executor.kind).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key, e.g. "
                                                   "--set minhash.num_buckets=14.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Clean raw corpora with datatrove: normalize, decontaminate, language id, quality filters, PII redaction,
    exact + MinHash dedup, reshard."""
    overrides = list(set_ or [])
    if workers is not None:
        overrides.append(f"executor.workers={workers}")
    if tasks is not None:
        overrides.append(f"executor.tasks={tasks}")
    if executor is not None:
        overrides.append(f"executor.kind={executor}")
    configs = _configs(source, config, overrides)

    from flm.pipelines.prepare import prepare as run_prepare

    with progress_bars(enabled=not json_) as bars:
        result = run_prepare(configs, input_dir, out_dir, progress=bars)
    if json_:
        emit_json(result.to_dict())
        return
    if result.submitted_jobs:
        for name, ids in result.submitted_jobs.items():
            console.print(f"{name}: submitted Slurm jobs {', '.join(ids)}; run the same command again when they "
                          "finish to collect the stats", highlight=False)
    if result.sources:
        render_summary(result)
