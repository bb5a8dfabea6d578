"""Rendering shared by all commands: rich console output, progress bars, JSON, errors.

Library code never prints; it returns results and reports progress through a callback
`progress(label, completed, total)`. Commands turn that into rich progress bars here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console()
err_console = Console(stderr=True)


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (for --json); nothing else goes to stdout then."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error on stderr, as one line however long and with its text as written, and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class RateColumn(ProgressColumn):
    """Items per second, for bars that count documents, shards or steps."""

    def render(self, task) -> str:  # type: ignore[no-untyped-def]
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f}/s" if speed else "-/s"


class ProgressBars:
    """A `progress(label, completed, total)` callback backed by one rich bar per label."""

    def __init__(self, progress: Progress, unit: str = "") -> None:
        self.progress = progress
        self.unit = unit
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, label: str, completed: float, total: float | None = None) -> None:
        task = self.tasks.get(label)
        if task is None:
            task = self.progress.add_task(label, total=total)
            self.tasks[label] = task
        self.progress.update(task, completed=completed, total=total)


@contextmanager
def progress_bars(*, bytes_mode: bool = False, enabled: bool = True) -> Iterator[ProgressBars]:
    """Rich progress bars on stderr with rate and ETA; disabled (silent) when `enabled` is False."""
    rate = TransferSpeedColumn() if bytes_mode else RateColumn()
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if not bytes_mode else TextColumn("{task.percentage:>5.1f}%"),
        rate,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, disable=not enabled, transient=False) as progress:
        yield ProgressBars(progress)
