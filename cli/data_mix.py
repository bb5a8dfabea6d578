"""`flm data mix-report`: what a mixture actually delivers, per source and per subset."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flm.cli.render import console, emit_json, progress_bars
from flm.config import find_config, load_config


def mix_report(
    mixture: Annotated[str, typer.Argument(help="A mixture YAML, or a bundled name under configs/mixtures/.")],
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Training samples to account for.")] = 100_000,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key, e.g. --set seq_len=1024.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Report the per-source and per-subset shares a mixture YAML actually delivers."""
    from flm.train.data import Mixture  # torch: imported only when the command runs
    from flm.train.data.config import MixtureConfig
    from flm.train.data.report import mixture_report

    path = find_config(mixture, "mixtures")
    cfg = load_config(MixtureConfig, path, set_ or [])
    with progress_bars(enabled=not json_) as bars:
        report = mixture_report(Mixture(cfg, progress=bars), samples)
    if json_:
        emit_json(report)
        return
    console.print(render(report, str(path)))


def render(report: dict, name: str) -> Table:
    table = Table(title=f"{name}: {report['samples']:,} samples x {report['seq_len']} tokens "
                        f"(seed {report['seed']}); validation: {report['valid_samples']:,} samples",
                  title_justify="left")
    for column in ("source / subset", "weight", "target", "share", "tokens", "epochs", "window err"):
        table.add_column(column, justify="left" if column == "source / subset" else "right")
    for source_name, source in report["sources"].items():
        table.add_row(f"[bold]{source_name}[/]", f"{source['weight']:.4f}", f"{source['weight']:.2%}",
                      f"{source['share']:.2%}", f"{source['tokens']:,}", f"{source['epochs']:.3f}",
                      f"{source['max_window_error']:.3%}")
        for subset_name, subset in source["subsets"].items():
            weight = "-" if subset["weight"] is None else f"x{subset['weight']:g}"
            table.add_row(f"  {subset_name or '(none)'}", weight, f"{subset['target']:.2%}", f"{subset['share']:.2%}",
                          f"{subset['tokens']:,}", f"{subset['epochs']:.3f}", "", style="dim")
    table.caption = (f"window err: worst |share - weight| over any {report['window']:,} consecutive samples. "
                     "Subset target and share are within their source; subset weights multiply natural size.")
    return table
