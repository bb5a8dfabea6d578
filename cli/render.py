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

from flm.cli.progress import ProgressBars, progress_on

# Output to a log or a pipe keeps its lines whole (rich would fold them at 80 columns); a terminal keeps rich's
# wrapping, which its live progress display relies on.
console = Console(soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (for --json); nothing else goes to stdout then."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error on stderr, as one line however long and with its text as written, and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def progress_bars(*, bytes_mode: bool = False, enabled: bool = True) -> Iterator[ProgressBars]:
    """Progress on stderr (flm.cli.progress): live bars on a terminal, plain lines in a log; silent when not
    `enabled`."""
    with progress_on(err_console, bytes_mode=bytes_mode, enabled=enabled) as bars:
        yield bars
