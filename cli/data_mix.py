"""`flm` commands: mix-report."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.render import not_built


def mix_report(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Report the per-source and per-subset shares a mixture YAML actually delivers."""
    not_built("the mixture dataloader", issue=6)
