"""Output meant to be copied or redirected: never wrapped, and plain text when stdout is not a terminal.

Rich wraps at the terminal's width (80 columns when piped), which breaks YAML, command lines and
paths. These helpers write whole lines: styled on a terminal (without wrapping), plain otherwise.
"""

from __future__ import annotations

import sys

from rich.text import Text

from flm.cli.render import console


def echo(markup: str) -> None:
    """One line (rich markup allowed) on stdout, never wrapped; markup dropped when stdout is not a terminal."""
    if console.is_terminal:
        console.print(markup, soft_wrap=True, highlight=False)
    else:
        sys.stdout.write(Text.from_markup(markup).plain + "\n")
        sys.stdout.flush()


def echo_raw(text: str) -> None:
    """Text written to stdout exactly as given (YAML, a command line): no markup, no wrapping, no styling."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
