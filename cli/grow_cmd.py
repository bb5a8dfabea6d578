"""`flm` commands: grow."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.render import not_built


def grow(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Grow a checkpoint into the next stage's shape without changing its function (MSG)."""
    not_built("model growth", issue=8)
