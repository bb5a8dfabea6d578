"""The progress callback every library stage takes; the CLI renders it (cli/render.py), libraries never print."""

from collections.abc import Callable

Progress = Callable[[str, float, float | None], None]
"""`progress(label, completed, total)`; `total` is None while unknown."""
