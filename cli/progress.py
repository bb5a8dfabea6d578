"""Progress rendering: the `progress(label, completed, total)` callback of library code, shown to a person.

On a terminal, unfinished work is a live block of rich bars; a bar that finishes leaves the block and
becomes one summary line (what, count, time, rate), so the block holds only what is still running.
A count with no known total shows the count and its rate, never `n/?` with an ETA. Off a terminal (a
log file, a pipe) there are no bars at all: a plain line per running count every `interval` seconds,
and the same summary line when it finishes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

PLAIN_INTERVAL_S = 15.0
"""Seconds between plain progress lines off a terminal (a log of a long run stays readable)."""


def amount(value: float, bytes_mode: bool = False) -> str:
    """A count as people read it: bytes in kB/MB/GB, whole numbers with thousands separators, else 2 decimals."""
    if bytes_mode:
        return decimal(int(value))
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def per_second(rate: float, bytes_mode: bool = False) -> str:
    """A rate with the digits that matter: 983,821/s, 24.9/s, 0.013/s."""
    if bytes_mode:
        return f"{decimal(int(rate))}/s"
    if rate >= 100:
        return f"{rate:,.0f}/s"
    return f"{rate:.1f}/s" if rate >= 1 else f"{rate:.2g}/s"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class Count:
    """One label's progress: where it started (a resumed count starts above 0), where it is, and when."""

    label: str
    start_value: float
    value: float
    total: float | None
    started: float = field(default_factory=time.monotonic)
    updated: float = field(default_factory=time.monotonic)
    printed_value: float | None = None
    """The value the last plain line showed (off a terminal), so an idle count prints nothing."""

    @property
    def elapsed(self) -> float:
        return self.updated - self.started

    @property
    def rate(self) -> float | None:
        """Units per second since this count was first seen; None before a measurable interval."""
        done = self.value - self.start_value
        return done / self.elapsed if self.elapsed > 0 and done > 0 else None

    @property
    def finished(self) -> bool:
        return self.total is not None and self.value >= self.total

    def describe(self, bytes_mode: bool, *, final: bool) -> str:
        """`label  n[/total]  (p%)  in|after t, r/s` for plain lines and the summary line."""
        count = amount(self.value, bytes_mode)
        if self.total is not None and not (final and self.finished):
            count += f"/{amount(self.total, bytes_mode)}"
            if self.total > 0:
                count += f" ({100 * self.value / self.total:.0f}%)"
        rate = self.rate
        speed = "" if rate is None else f", {per_second(rate, bytes_mode)}"
        if final:  # the time it took: first seen to last change
            return f"{self.label}: {count} in {duration(self.elapsed)}{speed}"
        return f"{self.label}: {count} after {duration(time.monotonic() - self.started)}{speed}"


class CountColumn(ProgressColumn):
    """`n/total`, or just `n` while the total is unknown."""

    def __init__(self, bytes_mode: bool) -> None:
        super().__init__()
        self.bytes_mode = bytes_mode

    def render(self, task) -> Text:  # type: ignore[no-untyped-def]
        text = amount(task.completed, self.bytes_mode)
        if task.total is not None:
            text += f"/{amount(task.total, self.bytes_mode)}"
        return Text(text, style="progress.download")


class RateColumn(ProgressColumn):
    """Units per second (bytes per second in bytes mode)."""

    def __init__(self, bytes_mode: bool) -> None:
        super().__init__()
        self.bytes_mode = bytes_mode

    def render(self, task) -> Text:  # type: ignore[no-untyped-def]
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("-/s", style="progress.data.speed")
        return Text(per_second(speed, self.bytes_mode), style="progress.data.speed")


class RemainingColumn(ProgressColumn):
    """Time left, only where a total makes it meaningful (blank for open-ended counts)."""

    def render(self, task) -> Text:  # type: ignore[no-untyped-def]
        if task.total is None or task.time_remaining is None:
            return Text("")
        return Text(f"eta {duration(task.time_remaining)}", style="progress.remaining")


class ProgressBars:
    """The `progress(label, completed, total)` callback: live bars on a terminal, plain lines elsewhere.

    `finish()` ends every open count (a stage's end): each becomes its summary line, so counts whose
    total was never known stop their clock there too.
    """

    def __init__(self, console: Console, *, bytes_mode: bool = False, enabled: bool = True,
                 interval: float = PLAIN_INTERVAL_S) -> None:
        self.console = console
        self.bytes_mode = bytes_mode
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.interval = interval
        self.counts: dict[str, Count] = {}
        self.finished: set[str] = set()
        self.tasks: dict[str, TaskID] = {}
        self.last_plain = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), CountColumn(bytes_mode), RateColumn(bytes_mode),
            TimeElapsedColumn(), RemainingColumn(), console=console, disable=not self.live, transient=True)

    def __call__(self, label: str, completed: float, total: float | None = None) -> None:
        if not self.enabled:
            return
        count = self.counts.get(label)
        if count is None:
            if label in self.finished:
                return  # a poller repeating a count that already finished in this stage
            count = self.counts[label] = Count(label, completed, completed, total)
            if self.live:
                self.tasks[label] = self.progress.add_task(label, total=total, completed=completed)
        elif completed != count.value or total != count.total:
            count.value, count.total, count.updated = completed, total, time.monotonic()
            if self.live:
                self.progress.update(self.tasks[label], completed=completed, total=total)
        if count.finished:
            self._close(label)
        elif not self.live and time.monotonic() - self.last_plain >= self.interval:
            self._plain_lines()

    def finish(self, *, stopped: bool = False) -> None:
        """Close every open count (each prints its summary line, marked stopped when the work failed or was
        interrupted); a later count of the same label starts anew."""
        for label in list(self.counts):
            self._close(label, stopped=stopped)
        self.finished.clear()

    def _close(self, label: str, *, stopped: bool = False) -> None:
        count = self.counts.pop(label)
        self.finished.add(label)
        if self.live:
            self.progress.remove_task(self.tasks.pop(label))
        mark = "[yellow]stopped[/]" if stopped else "[green]✓[/]"
        self.console.print(f"{mark} {escape(count.describe(self.bytes_mode, final=True))}", highlight=False,
                           soft_wrap=True)

    def _plain_lines(self) -> None:
        self.last_plain = time.monotonic()
        for count in self.counts.values():
            if count.value != count.printed_value:
                count.printed_value = count.value
                self.console.print(f"  {count.describe(self.bytes_mode, final=False)}", highlight=False,
                                   soft_wrap=True, markup=False)


@contextmanager
def progress_on(console: Console, *, bytes_mode: bool = False, enabled: bool = True,
                  interval: float = PLAIN_INTERVAL_S) -> Iterator[ProgressBars]:
    """A ProgressBars for the duration of a command; what is still open at the end gets its summary line."""
    bars = ProgressBars(console, bytes_mode=bytes_mode, enabled=enabled, interval=interval)
    with bars.progress:
        try:
            yield bars
        except BaseException:
            bars.finish(stopped=True)
            raise
        bars.finish()
