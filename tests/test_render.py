"""Progress rendering: finished counts collapse to one line, open-ended counts have no `/?`, logs get plain lines."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console

from flm.cli.progress import CountColumn, RemainingColumn, amount, per_second, progress_on

BAR_GLYPHS = ("━", "╸", "╺")


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100, color_system=None), buf


def test_log_file_gets_plain_lines_and_summaries_no_bars() -> None:
    con, buf = console(terminal=False)
    with progress_on(con, interval=0) as bars:
        assert not bars.live
        bars("read (MB)", 0.0, 0.58)
        bars("read (MB)", 0.29, 0.58)
        bars("tokens", 1000, None)
        bars("tokens", 250_000, None)
        bars("read (MB)", 0.58, 0.58)
        bars("read (MB)", 0.58, 0.58)  # a poller repeating a finished count: no second summary
    out = buf.getvalue()
    assert not any(glyph in out for glyph in BAR_GLYPHS)
    assert "\x1b[" not in out  # no cursor movement or colour codes in a log
    lines = out.splitlines()
    assert "  read (MB): 0.29/0.58 (50%) after" in out  # a periodic plain line, sub-1 MB amounts kept
    assert "/?" not in out
    summaries = [line for line in lines if line.startswith("✓")]
    assert len(summaries) == 2
    assert summaries[0].startswith("✓ read (MB): 0.58 in ")
    assert summaries[1].startswith("✓ tokens: 250,000 in ")  # closed at the end, though its total never came
    assert "/s" in summaries[1]


def test_plain_lines_wait_for_their_interval() -> None:
    con, buf = console(terminal=False)
    with progress_on(con, interval=3600) as bars:
        for step in range(1, 50):
            bars("train", step, 100)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1  # no line per update: only the summary at the end
    assert lines[0].startswith("✓ train: 49/100 (49%) in")


def test_terminal_bar_collapses_to_one_line_when_done() -> None:
    con, buf = console(terminal=True)
    with progress_on(con) as bars:
        assert bars.live
        bars("convert", 5, 10)
        bars("tokens", 7, None)
        assert len(bars.progress.tasks) == 2
        bars("convert", 10, 10)
        assert [t.description for t in bars.progress.tasks] == ["tokens"]  # only open work stays live
        bars.finish()  # a stage's end: the open-ended count stops its clock and becomes its line
        assert bars.progress.tasks == []
        bars("tokens", 3, None)  # the next stage may reuse a label
        assert [t.description for t in bars.progress.tasks] == ["tokens"]
    out = buf.getvalue()
    assert "✓ convert: 10 in" in out
    assert "✓ tokens: 7 in" in out
    assert "✓ tokens: 3 in" in out


def test_failure_marks_open_counts_stopped() -> None:
    con, buf = console(terminal=False)
    with pytest.raises(KeyboardInterrupt), progress_on(con) as bars:
        bars("train", 3, 10)
        raise KeyboardInterrupt
    assert "stopped train: 3/10 (30%) in" in buf.getvalue()


def test_columns_show_counts_without_unknown_totals() -> None:
    con, _ = console(terminal=True)
    with progress_on(con) as bars:
        bars("tokens", 1_256_974, None)
        bars("input", 512, 2048)
        tokens, data = bars.progress.tasks
        assert CountColumn(False).render(tokens).plain == "1,256,974"
        assert RemainingColumn().render(tokens).plain == ""
        assert CountColumn(False).render(data).plain == "512/2,048"
        assert CountColumn(True).render(data).plain == "512 bytes/2.0 kB"


def test_disabled_prints_nothing() -> None:
    con, buf = console(terminal=False)
    with progress_on(con, enabled=False) as bars:
        bars("x", 1, 1)
    assert buf.getvalue() == ""


def test_amount() -> None:
    assert amount(0.58) == "0.58"
    assert amount(1256974) == "1,256,974"
    assert amount(1256974.0) == "1,256,974"
    assert amount(3_200_000, bytes_mode=True) == "3.2 MB"
    assert per_second(983_820.7) == "983,821/s" and per_second(24.93) == "24.9/s" and per_second(0.0132) == "0.013/s"
    assert per_second(2_000_000, bytes_mode=True) == "2.0 MB/s"


def test_quickstart_summary_labels_its_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    from flm.cli import run_cmd

    wide = Console(file=io.StringIO(), width=400, color_system=None)
    monkeypatch.setattr(run_cmd, "console", wide)

    summary = {
        "recipe": "quickstart", "seconds": {"train": 12.0}, "eval_batches": 16, "artefacts": {},
        "train": {"step": 300, "loss": 5.91, "val_loss": 5.9299, "checkpoint": "c"},
        "growth": {"val_loss_before": 5.9299, "val_loss_after": 5.9299, "relative_change": 1e-8,
                   "params_before": 362_112, "params_after": 1_320_000},
        "generation_model": {"params": 1_320_000, "tokens_seen": 1_024_000},
        "generations": [{"prompt": "The Debian", "text": " package\n\nmanager [x]", "tokens": 4}],
    }
    run_cmd.render_summary(summary)
    out = wide.file.getvalue()
    assert "training loss 5.9100 (last step), val loss 5.9299 (16 held-out batches)" in out
    assert "362k -> 1.32M params, val loss 5.9299 -> 5.9299 (+1.0e-06%, the same 16 held-out batches)" in out
    assert "from a 1.32M-parameter model that has read 1.02M tokens: expect noise, not sentences" in out
    assert "The Debian package ↵ ↵ manager [x]" in out


def test_piped_output_keeps_its_lines_whole(tmp_path) -> None:
    """Off a terminal, rich would fold text at 80 columns; flm's consoles keep each line whole there."""
    done = subprocess.run([sys.executable, "-m", "flm.cli.main", "data", "download", "--list"], cwd=tmp_path,
                          capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "60"})
    line = next(x for x in done.stdout.splitlines() if x.startswith("pile: "))
    assert len(line) > 60 and "Arrives as" in line and line.rstrip().endswith(".")
