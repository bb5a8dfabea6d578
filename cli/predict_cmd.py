"""`flm predict-loss`: predict a stage's loss from μP proxy runs (μScaling)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from flm.cli.render import console, emit_json, err_console


def predict_loss(
    runs: Annotated[list[Path], typer.Argument(help="Run directories of the proxy runs (same hyperparameters, "
                                                    "different widths), e.g. runs/proxy-*.")],
    target: Annotated[list[str] | None, typer.Option("--target", help="Stage to predict (bundled name or YAML); "
                                                                      "repeat for several.")] = None,
    metric: Annotated[Literal["loss", "val_loss"], typer.Option(
        help="Which loss to fit: loss (training) or val_loss.")] = "loss",
    count: Annotated[Literal["non-embedding", "total"], typer.Option(
        help="Model size as non-embedding or total parameters.")] = "non-embedding",
    points: Annotated[int, typer.Option(min=1, help="Token counts at which to fit (the predicted curve).")] = 8,
    window: Annotated[float, typer.Option(min=0.0, max=0.9, help="Average the loss over this fraction of "
                                                                 "tokens before each point.")] = 0.1,
    plot: Annotated[Path, typer.Option(help="Where to write the PNG plot.")] = Path("loss-prediction.png"),
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Predict a stage's loss from μP proxy runs (μScaling): fit L(N) = c + a·N^-alpha and extrapolate."""
    from flm.train.tools.loss_prediction import plot_prediction
    from flm.train.tools.loss_prediction import predict_loss as predict

    report = predict(runs, target or [], metric=metric, count=count, points=points, window=window)
    report["plot"] = str(plot_prediction(report, plot))
    if json_:
        emit_json(report)
        return
    _render(report)


def _size_table(title: str, first: str, rows: list[dict[str, Any]], report: dict[str, Any]) -> Table:
    """name, size and loss per row (proxies measured, targets predicted)."""
    table = Table(title=title)
    for column in (first, f"{report['count']} params", report["metric"]):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(row.get("name", row.get("stage")), f"{row['params']:,}", f"{row['loss']:.4f}")
    return table


def _render(report: dict[str, Any]) -> None:
    tokens = report["tokens"][-1]
    console.print(_size_table(f"proxies: {report['metric']} at {tokens:,} tokens", "run", report["runs"], report))
    fit = report["fits"][-1]
    console.print(f"fit: L(N) = {fit['c']:.4f} + {fit['a']:.4g}·N^-{fit['alpha']:.4f} (rmse {fit['rmse']:.4f})",
                  highlight=False)
    holdout = report["holdout"]
    if holdout is None:
        console.print("held out: needs 4 or more proxies (the largest is predicted from the others)")
    elif "error" in holdout:
        console.print(f"held out: {holdout['run']}: {holdout['error']}", highlight=False)
    else:
        console.print(f"held out: {holdout['run']} predicted {holdout['predicted']:.4f}, measured "
                      f"{holdout['actual']:.4f} ({holdout['rel_error']:+.2%})", highlight=False)
    if report["targets"]:
        console.print(_size_table(f"predicted {report['metric']} after {tokens:,} tokens", "stage",
                                  report["targets"], report))
    for warning in report["warnings"]:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"plot: {report['plot']}", highlight=False)
