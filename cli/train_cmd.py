"""`flm train` and `flm eval`: thin wrappers over flm.train.trainer.loop and flm.train.trainer.evaluate."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from flm.cli.plain import echo
from flm.cli.render import console, emit_json, err_console, fail, progress_bars
from flm.config import find_config, load_config


def _is_rank0() -> bool:
    """Under torchrun every rank runs the command; only rank 0 talks to the user."""
    return int(os.environ.get("RANK", "0")) == 0


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def step_line(record: dict[str, Any], target: int) -> str:
    signal = (f"teacher loss {_fmt(record['teacher_loss'], '.4f')} acc {_fmt(record['teacher_acc'], '.1%')}"
              if "teacher_loss" in record else f"loss {_fmt(record['loss'], '.4f')}")
    line = (f"step {record['step']}/{target}  {signal}  lr {record['lr']:.3g}  "
            f"grad-norm {_fmt(record['grad_norm'], '.3f')}  {record['tokens_per_s']:,.0f} tok/s  "
            f"{record['tflops_per_gpu']:.2f} TFLOP/s/GPU  MFU {_fmt(record['mfu'], '.1%')}")
    if "val_loss" in record:
        line += f"  val {record['val_loss']:.4f}"
    if record["skipped"]:
        line += "  [yellow]skipped (non-finite)[/]"
    return line


def train(
    stage: Annotated[str, typer.Option(help="Stage config: a bundled name (tiny, 1b, 101b, ...) or a YAML path.")],
    mixture: Annotated[Path | None, typer.Option(help="Mixture YAML naming the token shards.")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run directory (checkpoints, logs).")] = None,
    steps: Annotated[int | None, typer.Option(min=0, help="Total optimizer steps (default: train.steps).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a stage key, e.g. optim.lr=1e-3.")] = None,
    resume: Annotated[str, typer.Option(help="latest (the run dir's newest checkpoint), none, or a path.")] = "latest",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan: params, memory, FLOPs, command.")] = False,
    launcher: Annotated[str, typer.Option(
        "--launcher", help="With --dry-run: torchrun (print the launch line) or slurm (write RUN_DIR/train.sbatch: "
        "nodes, GPUs, srun + torchrun rendezvous, requeue with resume on preemption).")] = "torchrun",
    partition: Annotated[str, typer.Option("--partition", help="Slurm partition of --launcher slurm.")] = "",
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Train a stage (tiny ... 101b) on a mixture with megatron-core; resumes from the run dir."""
    from flm.train.config import StageConfig

    stage_cfg = load_config(StageConfig, find_config(stage, "stages"), set_ or [])
    if launcher not in ("torchrun", "slurm"):
        fail(f"--launcher must be torchrun or slurm, got {launcher!r}")
    if dry_run and launcher == "slurm":
        if mixture is None or run_dir is None:
            fail("--launcher slurm writes a ready script: it needs --mixture and --run-dir")
        _slurm_script(stage_cfg, stage, mixture, run_dir, set_ or [], partition, json_)
        return
    if dry_run:
        _dry_run(stage_cfg, json_)
        return
    if mixture is None or run_dir is None:
        fail("--mixture and --run-dir are required to train (or pass --dry-run)")
    _train(stage_cfg, mixture, run_dir, steps, resume, json_)


def _dry_run(stage_cfg: Any, json_: bool) -> None:
    from flm.train.tools.dry_run import dry_run

    plan = dry_run(stage_cfg)
    if json_:
        emit_json(plan)
        return
    for key, value in plan.items():  # unwrapped: the torchrun line is copied as it is
        echo(f"[bold]{key}[/]: {escape(str(value))}")


def _slurm_script(stage_cfg: Any, stage: str, mixture: Path, run_dir: Path, overrides: list[str], partition: str,
                  json_: bool) -> None:
    from flm.train.distributed.slurm_launch import sbatch_script, write_sbatch_script

    path = write_sbatch_script(run_dir / "train.sbatch",
                               sbatch_script(stage_cfg, stage, mixture, run_dir, overrides, partition=partition))
    if json_:
        emit_json({"sbatch_script": str(path), "submit": f"sbatch {path}"})
        return
    echo(f"wrote {escape(str(path))}; submit it with: sbatch {escape(str(path))}")


def _train(stage_cfg: Any, mixture: Path, run_dir: Path, steps: int | None, resume: str, json_: bool) -> None:
    from flm.train.data.config import MixtureConfig
    from flm.train.trainer.loop import train

    mixture_cfg = load_config(MixtureConfig, mixture)
    show = _is_rank0() and not json_
    from flm.train.trainer.resume_check import check_resume

    resumed = check_resume(stage_cfg, run_dir, resume, steps)  # another stage's run is refused before loading
    if show and resumed is not None and resumed.schedule_changes:
        _warn_schedule_change(resumed)
    target = steps if steps is not None else stage_cfg.train.steps
    every = max(stage_cfg.train.log_every, 1)
    with progress_bars(enabled=show) as bars:
        def on_step(record: dict[str, Any]) -> None:
            if record["step"] % every == 0 or "val_loss" in record or record["skipped"]:
                bars.progress.console.print(step_line(record, target), highlight=False)

        result = train(stage_cfg, mixture_cfg, run_dir, steps=steps, resume=resume, progress=bars,
                       on_step=on_step if show else None)
    if not _is_rank0():
        return
    data = dataclasses.asdict(result)
    if json_:
        emit_json(data)
        return
    verb = {"completed": "trained", "interrupted": "interrupted; saved", "already-done": "nothing to do at"}[
        result.status]
    err_console.print(f"[bold green]{verb}[/] step {result.step}/{result.target_steps} "
                      f"(from {result.start_step}) in {result.seconds:.1f}s; loss {_fmt(result.loss, '.4f')}, "
                      f"val {_fmt(result.val_loss, '.4f')}, skipped {result.skipped_steps}; "
                      f"checkpoint {result.checkpoint}", highlight=False, soft_wrap=True)


def _warn_schedule_change(info: Any) -> None:
    """Before resuming: which LR-schedule settings --steps / --set changed, and what the schedule becomes."""
    changes = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in info.schedule_changes.items())
    s = info.schedule
    err_console.print(f"[yellow]warning:[/] resuming {info.checkpoint} (step {info.step}) with a changed LR schedule: "
                      f"{changes}. It becomes: {s['style']}, warmup {s['warmup_steps']} steps, lr {s['lr']:g} -> "
                      f"min_lr {s['min_lr']:g} at step {s['decay_steps']}; the LR at step {info.step} goes from "
                      f"{info.lr_saved:.3g} to {info.lr_now:.3g}", highlight=False, soft_wrap=True)


def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint (runs/NAME/checkpoints/step-N) or a run dir.")],
    mixture: Annotated[Path | None, typer.Option(help="Mixture YAML (default: the checkpoint's).")] = None,
    batches: Annotated[int | None, typer.Option(min=1, help="Only the first N micro-batches of the split.")] = None,
    micro_batch: Annotated[int | None, typer.Option("--micro-batch", min=1, help="Sequences per micro-batch.")] = None,
    by_source: Annotated[bool, typer.Option("--by-source", help="Also the loss of each source's held-out "
                                                                "documents on their own (e.g. pile, wudao).")] = False,
    propositions: Annotated[Path | None, typer.Option(
        help="Proposition shards (`flm data propositions` OUT/valid): teacher accuracy per task instead.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Compute validation loss of a checkpoint on a mixture's held-out split (or its accuracy on propositions)."""
    if propositions is not None:
        _evaluate_propositions(checkpoint, propositions, micro_batch, json_)
        return
    from flm.train.data.config import MixtureConfig
    from flm.train.trainer.evaluate import evaluate_checkpoint

    mixture_cfg = load_config(MixtureConfig, mixture) if mixture is not None else None
    result = evaluate_checkpoint(checkpoint, mixture_cfg, micro_batch=micro_batch, max_batches=batches,
                                 by_source=by_source)
    if not _is_rank0():
        return
    if json_:
        emit_json(dataclasses.asdict(result))
        return
    perplexity = math.exp(min(result.val_loss, 50.0))
    echo(f"val_loss {result.val_loss:.4f} (perplexity {perplexity:.2f}) on {result.tokens:,} tokens; "
         f"checkpoint {escape(str(result.checkpoint))} (step {result.step})")
    for name, source in result.by_source.items():
        echo(f"  {escape(name)}: val_loss {source['val_loss']:.4f} (perplexity "
             f"{math.exp(min(source['val_loss'], 50.0)):.2f}) on {source['tokens']:,} tokens of its "
             f"{source['held_out_tokens']:,} held out; {source['blend_tokens']:,} of the blend's tokens")
    if result.by_source:
        echo(f"  (the blend takes each source by its mixture weight, so a small held-out split repeats in it and a "
             f"large one is read in part; every figure counts whole micro-batches of {result.micro_batch_tokens:,} "
             "tokens, so the sources' own counts need not add up to the blend's)")


def _evaluate_propositions(checkpoint: Path, propositions: Path, micro_batch: int | None, json_: bool) -> None:
    from rich.table import Table

    from flm.train.teacher.evaluate import evaluate_propositions

    with progress_bars(enabled=not json_ and _is_rank0()) as bars:
        result = evaluate_propositions(checkpoint, propositions, micro_batch=micro_batch or 32, progress=bars)
    if not _is_rank0():
        return
    if json_:
        emit_json(dataclasses.asdict(result))
        return
    table = Table(title=f"{result.propositions}: {result.count:,} propositions, checkpoint {result.checkpoint} "
                        f"(step {result.step})", title_justify="left")
    for column in ("task", "lang", "propositions", "accuracy", "majority", "instances", "choice acc", "chance"):
        table.add_column(column, justify="left" if column in ("task", "lang") else "right")
    for name, task in sorted(result.tasks.items()):
        table.add_row(name, task["lang"] or "-", f"{task['propositions']:,}", f"{task['accuracy']:.1%}",
                      f"{task['majority']:.1%}", f"{task['instances']:,}", _fmt(task.get("choice_accuracy"), ".1%"),
                      _fmt(task.get("chance"), ".1%"))
    console.print(table)
    choice = (f"; zero-shot choice {result.choice_accuracy:.1%} (chance {result.chance:.1%})"
              if result.choice_accuracy is not None else "")
    console.print(f"accuracy {result.accuracy:.1%} over {result.count:,} propositions (majority label "
                  f"{result.majority:.1%}){choice}", highlight=False)
