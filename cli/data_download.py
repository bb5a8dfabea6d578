"""`flm` commands: download."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.render import not_built


def download(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Fetch The Pile or WuDao: resumable, checksummed, parallel, from mirrors or local files."""
    not_built("corpus download", issue=3)
