"""The recipe's loss picture: the data it draws (smoothed curves, held-out points, growth and its continuity)."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

from flm.recipe.plot import Growth, ema, human, loss_story, percent_change, plot_story, read_curve


def write_metrics(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def noisy_run(steps: range, start: float, slope: float, seed: int, val_every: int = 50) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for step in steps:
        record = {"step": step, "loss": start - slope * step + rng.uniform(-0.15, 0.15), "tokens_seen": 2048 * step}
        if step % val_every == 0:
            record["val_loss"] = start - slope * step
        records.append(record)
    return records


def test_read_curve_last_value_of_a_step_wins_and_skips_gaps(tmp_path: Path) -> None:
    path = write_metrics(tmp_path / "m.jsonl", [
        {"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0}, {"step": 2, "loss": 3.5},  # resumed over step 2
        {"step": 3, "loss": None, "teacher_loss": 0.7}, {"step": 4, "loss": 3.0, "val_loss": 3.2}])
    assert read_curve(path) == [(1, 5.0), (2, 3.5), (4, 3.0)]
    assert read_curve(path, "val_loss") == [(4, 3.2)]
    assert read_curve(tmp_path / "missing.jsonl") == []


def test_ema_is_debiased_and_smooths_step_noise() -> None:
    assert ema([(1, 4.0), (2, 4.0), (3, 4.0)]) == [(1, pytest.approx(4.0)), (2, pytest.approx(4.0)),
                                                   (3, pytest.approx(4.0))]
    rng = random.Random(0)
    raw = [(s, 5.0 + rng.uniform(-0.15, 0.15)) for s in range(1, 301)]
    smoothed = ema(raw)
    assert [s for s, _ in smoothed] == [s for s, _ in raw]
    tail = [v for _, v in smoothed[50:]]
    assert max(tail) - min(tail) < 0.5 * (max(v for _, v in raw) - min(v for _, v in raw))
    assert statistics.mean(tail) == pytest.approx(5.0, abs=0.02)
    assert ema([(10, 3.0)], start=5.0)[0][1] == pytest.approx(0.9 * 5.0 + 0.1 * 3.0)  # continues a curve


def test_story_of_a_grown_run(tmp_path: Path) -> None:
    first = write_metrics(tmp_path / "tiny" / "metrics.jsonl", noisy_run(range(1, 301), 7.0, 0.004, seed=1))
    second = write_metrics(tmp_path / "grown" / "metrics.jsonl", noisy_run(range(301, 501), 7.0, 0.004, seed=2))
    growth = Growth(step=300, from_run="tiny", to_run="grown", params_before=362_000, params_after=1_320_000,
                    val_before=5.8, val_after=5.8000001, eval_batches=16)
    story = loss_story("quickstart", [("tiny", first), ("grown", second)], growth,
                       {"tiny": 362_000, "grown": 1_320_000})

    assert story.title == "flm run quickstart: tiny (362k params) -> grown (1.32M params)\n500 steps, 1.02M tokens"
    tiny, grown = story.curves
    assert len(tiny.train) == 300 and len(grown.train) == 200 and tiny.params == 362_000
    assert tiny.val == [(s, pytest.approx(7.0 - 0.004 * s)) for s in (50, 100, 150, 200, 250, 300)]
    # the grown run's smoothed curve continues the first's: no artificial jump at the join
    assert abs(grown.smoothed[0][1] - tiny.smoothed[-1][1]) < 0.05
    # smoothing takes the +-0.15 step noise down to well under the trend's own change
    late = [v - (7.0 - 0.004 * s) for s, v in tiny.smoothed[100:]]
    assert max(map(abs, late)) < 0.1
    assert story.notes == ["growth at step 300: 362k -> 1.32M params; held-out loss 5.8000 -> 5.8000 (+1.7e-06%) "
                           "on the same 16 batches"]

    png = tmp_path / "loss.png"
    plot_story(story, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_story_without_growth_still_plots(tmp_path: Path) -> None:
    only = write_metrics(tmp_path / "m.jsonl", noisy_run(range(1, 40), 6.0, 0.01, seed=3))
    story = loss_story("short", [("tiny", only), ("absent", tmp_path / "none.jsonl")], None, {})
    assert story.growth is None and story.notes == []
    assert story.curves[1].train == []
    plot_story(story, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_growth_continuity_and_sizes_read_well() -> None:
    g = Growth(1, "a", "b", 1, 2, val_before=5.0, val_after=5.05, eval_batches=8)
    assert g.continuity() == "5.0000 -> 5.0500 (+1.000%)"
    assert percent_change(0.0) == "unchanged" and percent_change(-7.3e-9) == "-7.3e-07%"
    assert human(362_112) == "362k" and human(1_320_000) == "1.32M" and human(101_000_000_000) == "101B"
    assert human(512) == "512" and human(None) == "?"
