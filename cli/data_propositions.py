"""`flm data propositions`: task data (JSONL + a mapping YAML) -> proposition shards for the teacher signal."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flm.cli.render import console, emit_json, err_console, progress_bars


def propositions(
    mapping: Annotated[Path, typer.Argument(help="Mapping YAML: tasks, their JSONL files and how records read "
                                                 "(`sample`: the bundled bilingual set).")],
    tokenizer: Annotated[Path, typer.Option(help="Tokenizer directory (the one the language shards used).")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/train (and OUT/valid) proposition shards.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a mapping key, e.g. max_tokens=256.")]
    = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Turn multiple-choice, classification and statement tasks into true/false propositions (FreeLM)."""
    from flm.config.bundled import sample_dir
    from flm.pipelines.propositions import build_propositions

    if str(mapping) == "sample" and not mapping.exists():
        mapping = sample_dir() / "propositions" / "mapping.yaml"
    with progress_bars(enabled=not json_) as bars:
        stats = build_propositions(mapping, tokenizer, out, overrides=set_ or [], progress=bars)
    if json_:
        emit_json(dataclasses.asdict(stats))
        return
    table = Table(title=f"propositions -> {stats.out}", title_justify="left")
    for column in ("task", "kind", "lang", "in", "kept", "dropped", "train", "valid"):
        table.add_column(column, justify="left" if column in ("task", "kind", "lang", "dropped") else "right")
    for name, task in stats.by_task.items():
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(task["dropped"].items())) or "-"
        table.add_row(name, task["kind"], task["lang"] or "-", f"{task['instances_in']:,}", f"{task['kept']:,}",
                      dropped, f"{task['propositions'].get('train', 0):,}", f"{task['propositions'].get('valid', 0):,}")
    console.print(table)
    dropped = sum(stats.dropped.values())
    err_console.print(f"{stats.instances_in:,} instances in = {stats.kept:,} kept + {dropped:,} dropped; "
                      f"{stats.true:,} true and {stats.false:,} false propositions", highlight=False)
    for line in stats.malformed:
        err_console.print(f"  [yellow]dropped[/] {line}", highlight=False, soft_wrap=True)
