"""`flm run RECIPE`: chain every stage (prepare, tokenize, train, grow, evaluate, generate)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flm.cli.render import console, emit_json, err_console, fail, progress_bars
from flm.recipe.plot import human, percent_change


def run(
    recipe: Annotated[str, typer.Argument(help="A bundled recipe name under configs/recipes/ or a YAML path.")]
    = "quickstart",
    out: Annotated[Path, typer.Option(help="Where every artefact goes (raw, clean, tokenizer, tokens, runs).")]
    = Path("work/quickstart"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Redo all: remove the earlier run's outputs only.")] = False,
    stages: Annotated[str | None, typer.Option(help="Comma-separated stages to run (default: all, in order).")]
    = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key, e.g. train.steps=100.")]
    = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Run a recipe end to end; `flm run quickstart` does it on the bundled sample corpus in minutes.

    Finished stages are skipped on a rerun (each records its result under OUT/.recipe/); --fresh redoes all.
    """
    from flm.config import FlmError
    from flm.recipe.run import STAGES, RecipeRun, load_recipe
    from flm.recipe.run import fresh as remove_outputs

    cfg = load_recipe(recipe, set_ or [])
    selected = tuple(s.strip() for s in stages.split(",")) if stages else STAGES
    unknown = [s for s in selected if s not in STAGES]
    if unknown:  # before --fresh deletes anything, and without the resume hint (nothing ran)
        fail(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if fresh:
        remove_outputs(out)
    started: dict[str, float] = {}

    def on_stage(name: str, event: str) -> None:
        if json_:
            return
        if event == "start":
            started[name] = time.perf_counter()
            err_console.rule(f"[bold]{name}")
        elif event == "skip":
            err_console.print(f"[dim]{name}: done in an earlier run, skipped[/]")
        else:
            bars.finish()  # this stage's counts become summary lines; the next stage starts a clean block
            err_console.print(f"[green]{name}[/] done in {time.perf_counter() - started[name]:.1f} s")

    def on_step(metrics: dict[str, Any]) -> None:
        if not json_ and metrics.get("step", 0) % 50 == 0 and metrics.get("loss") is not None:
            err_console.print(f"  step {metrics['step']:>5}  loss {metrics['loss']:.4f}", highlight=False)

    try:
        with progress_bars(enabled=not json_) as bars:
            summary = RecipeRun(cfg, out, progress=bars, on_stage=on_stage, on_step=on_step).run(selected)
    except FlmError as err:
        fail(f"{err}\n(rerun the same command to resume from the last finished stage)")
    if json_:
        emit_json(summary)
        return
    render_summary(summary)


def render_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"flm run {summary['recipe']}: summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    docs = summary.get("documents") or {}
    if docs:
        table.add_row("documents", f"{docs.get('docs_kept'):,} kept of {docs.get('docs_in'):,} "
                                   f"({docs.get('bytes_kept', 0) / 1e6:.2f} of {docs.get('bytes_in', 0) / 1e6:.2f} MB)")
        dropped = summary.get("dropped") or {}
        top = sorted(dropped.items(), key=lambda kv: -kv[1])[:5]
        table.add_row("dropped (top reasons)", ", ".join(f"{k}: {v}" for k, v in top))
    if summary.get("tokens") is not None:
        table.add_row("tokens", f"{summary['tokens']:,}")
    held_out = f"{summary['eval_batches']} held-out batches" if summary.get("eval_batches") else "held-out split"
    for key in ("train", "train_grown"):
        if key in summary:
            r = summary[key]
            val = "not measured" if r["val_loss"] is None else f"{r['val_loss']:.4f} ({held_out})"
            table.add_row(key, f"step {r['step']}: training loss {r['loss']:.4f} (last step), val loss {val}")
    if "growth" in summary:
        g = summary["growth"]
        sizes = (f"{human(g['params_before'])} -> {human(g['params_after'])} params, "
                 if g.get("params_before") else "")
        table.add_row("growth continuity", f"{sizes}val loss {g['val_loss_before']:.4f} -> {g['val_loss_after']:.4f} "
                                           f"({percent_change(g['relative_change'])}, the same {held_out})")
    for run, t in (summary.get("teacher") or {}).items():
        choice = (f"; zero-shot choice {t['choice_accuracy']:.1%} (chance {t['chance']:.1%})"
                  if t.get("choice_accuracy") is not None else "")
        table.add_row(f"teacher ({run})", f"held-out propositions judged right {t['accuracy']:.1%} (majority label "
                                          f"{t['majority']:.1%}){choice}")
    model = summary.get("generation_model") or {}
    if summary.get("generations") and model.get("params"):
        table.add_row("generate", f"[dim]from a {human(model['params'])}-parameter model that has read "
                                  f"{human(model['tokens_seen'])} tokens: expect noise, not sentences (this checks the "
                                  "pipeline, not the model)[/]")
    for gen in summary.get("generations", []):  # on one line: its newlines as ↵ (--json keeps the text as is)
        text = " ".join(gen["text"].replace("\n", " ↵ ").split())
        table.add_row("generate", f"[bold]{escape(gen['prompt'])}[/] {escape(text)}")
    for run, points in summary.get("loss_curve", {}).items():
        table.add_row(f"loss ({run}, smoothed)", "  ".join(f"{step}:{loss:.2f}" for step, loss in points))
    if "loss_plot" in summary:
        table.add_row("loss curve", summary["loss_plot"])
    table.add_row("time per stage", ", ".join(f"{k} {v:.0f}s" for k, v in summary["seconds"].items() if v))
    for name, path in summary["artefacts"].items():
        table.add_row(name, path)
    console.print(table)
