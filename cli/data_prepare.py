"""`flm` commands: prepare."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.render import not_built


def prepare(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Clean raw corpora with datatrove: normalize, language id, quality filters, exact + MinHash dedup, reshard."""
    not_built("the data-preparation pipeline", issue=4)
