"""`flm` commands: train, evaluate."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.render import not_built


def train(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Train a stage (tiny ... 101b) on a mixture with megatron-core; resumes from the run dir."""
    not_built("training", issue=7)


def evaluate(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Compute validation loss of a checkpoint on a mixture's held-out split."""
    not_built("evaluation", issue=7)
