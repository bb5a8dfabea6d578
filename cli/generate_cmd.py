"""`flm` commands: generate."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.render import not_built


def generate(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Generate text from a checkpoint given a prompt."""
    not_built("generation", issue=11)
