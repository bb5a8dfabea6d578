"""`flm grow`: grow a checkpoint into the next stage's shape without changing its function (MSG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flm.cli.render import console, emit_json, err_console, fail, progress_bars
from flm.config import find_config, load_config


def _stage(name: str, overrides: list[str] | None = None) -> Any:
    from flm.train.config import StageConfig

    return load_config(StageConfig, find_config(name, "stages"), overrides or [])


def grow(
    to: Annotated[str, typer.Option("--to", help="Target stage: a bundled name (tiny-grown, 51b) or a YAML path.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint to grow (runs/NAME/checkpoints/step-N).")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for the grown checkpoint (must not exist).")] = None,
    ramp_steps: Annotated[int, typer.Option("--ramp-steps", min=1,
                                            help="Steps over which the masks of new structure go 0 -> 1.")] = 100,
    from_: Annotated[str | None, typer.Option("--from", help="Source stage (--dry-run only).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a target-stage key, e.g. "
                                                                  "model.layers=6.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print shapes and parameter counts; "
                                                            "allocate no weights.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Grow a checkpoint into the next stage's shape without changing its function (MSG)."""

    dst = _stage(to, set_)
    if dry_run:
        _dry_run(dst, checkpoint, from_, json_)
        return
    if checkpoint is None or out is None:
        fail("--checkpoint and --out are required to grow (or pass --dry-run --from STAGE)")
    if from_ is not None:
        fail("--from is for --dry-run; a real growth takes the source stage from the checkpoint")
    _grow(checkpoint, dst, out, ramp_steps, json_)


def _dry_run(dst: Any, checkpoint: Path | None, from_: str | None, json_: bool) -> None:
    from flm.train.checkpoint import read_meta, resolve_checkpoint
    from flm.train.growth.dry_run import plan_growth
    from flm.train.growth.grow_checkpoint import source_stage, target_stage

    if (checkpoint is None) == (from_ is None):
        fail("--dry-run needs exactly one source: --from STAGE or --checkpoint C")
    src = _stage(from_) if from_ is not None else source_stage(read_meta(resolve_checkpoint(checkpoint)), checkpoint)
    plan = plan_growth(src, target_stage(dst, src))
    if json_:
        emit_json(plan)
        return
    table = Table(title=f"grow {plan['from']} -> {plan['to']}: {', '.join(plan['operators'])}")
    table.add_column("tensor", overflow="fold")
    for column in (plan["from"], plan["to"], "scale"):
        table.add_column(column, no_wrap=True)
    for row in plan["tensors"]:
        table.add_row(row["name"], str(tuple(row["from"])), str(tuple(row["to"])),
                      "" if row["scale"] == 1.0 else f"{row['scale']:g}")
    console.print(table)
    console.print(f"shape {plan['from_shape']} -> {plan['to_shape']}", highlight=False)
    console.print(f"params {plan['params_before']:,} -> {plan['params_after']:,} (x{plan['growth_factor']}); "
                  f"carried {plan['carried_entries']:,}, copied into {plan['new_layers']['count']} new layers "
                  f"{plan['copied_into_new_layers']:,}, fresh {plan['fresh_entries']:,}; "
                  f"Adam state {plan['optimizer_state_gib']['before']} -> {plan['optimizer_state_gib']['after']} GiB; "
                  "no weights allocated", highlight=False)
    console.print(f"growing streams tensor by tensor: host memory at most {plan['host_memory_gib']} GiB",
                  highlight=False)


def _grow(checkpoint: Path, dst: Any, out: Path, ramp_steps: int, json_: bool) -> None:
    from flm.train.growth.grow_checkpoint import grow_checkpoint

    with progress_bars(enabled=not json_) as bars:
        record = grow_checkpoint(checkpoint, dst, out, ramp_steps=ramp_steps, progress=bars)
    if json_:
        emit_json({"checkpoint": str(out), **record})
        return
    err_console.print(
        f"[bold green]grew[/] {record['from_stage']} -> {record['to_stage']} ({', '.join(record['operators'])}) "
        f"at step {record['step']}: {record['params_before']:,} -> {record['params_after']:,} params; masks ramp "
        f"0 -> 1 over steps {record['step']}..{record['step'] + record['ramp_steps']}; written to {out}",
        highlight=False)
    err_console.print(f"continue with: flm train --stage {record['to_stage']} --resume {out} ...", highlight=False)
