"""`flm` commands: quickstart."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.render import not_built


def quickstart(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Run every stage on the bundled sample: prepare, tokenize, train, grow, evaluate, generate."""
    not_built("the end-to-end quickstart", issue=11)
