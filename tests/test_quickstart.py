"""End to end: a shortened `flm run quickstart` on the bundled sample, through the CLI, from outside the repository
(the run itself is conftest's session fixture `quickstart`, shared with test_readme)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import EXTRA_TRAIN_OVERRIDES, short_run_flags
from typer.testing import CliRunner

from flm.cli.main import app
from flm.recipe.run import load_recipe


def test_short_run_keeps_the_recipes_own_train_overrides() -> None:
    """Cheap guard for the end-to-end test below: shortening must not drop e.g. train.device=cpu."""
    own = load_recipe("quickstart").train.overrides
    assert "train.device=cpu" in own, "the quickstart recipe pins train.device=cpu; this guard relies on it"
    values = short_run_flags()[1::2]  # the flags alternate "--set", "key=value"
    resolved = load_recipe("quickstart", values).train.overrides
    assert set(own) | set(EXTRA_TRAIN_OVERRIDES) == set(resolved)


def test_quickstart_end_to_end_and_rerun_skips(quickstart: tuple[Path, dict]) -> None:
    out, summary = quickstart
    flags = short_run_flags()
    docs = summary["documents"]
    assert 0 < docs["docs_kept"] < docs["docs_in"]
    assert docs["docs_in"] == docs["docs_kept"] + sum(summary["dropped"].values())
    assert summary["tokens"] > 100_000
    # the teacher signal is on: every 2nd step a teacher step, on top of the 30 + 20 language steps
    assert summary["train"]["step"] == 60 and summary["train_grown"]["step"] == 100
    for run in ("tiny", "tiny-grown"):  # held-out propositions judged, each figure beside its baseline
        assert set(summary["teacher"][run]) == {"accuracy", "majority", "choice_accuracy", "chance"}
    assert summary["growth"]["relative_change"] < 1e-4  # growth keeps the function
    first_loss = json.loads((out / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert summary["train_grown"]["loss"] < first_loss
    assert [g["prompt"] for g in summary["generations"]] == ["The Debian package manager", "软件包管理"]
    assert all(g["tokens"] > 0 for g in summary["generations"])
    assert Path(summary["loss_plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rerun = CliRunner().invoke(app, ["run", "quickstart", "--out", str(out), "--json", *flags])
    assert rerun.exit_code == 0, rerun.output
    again = json.loads(rerun.stdout)
    assert again["train_grown"] == summary["train_grown"]  # nothing recomputed
    assert all(json.loads(p.read_text())["seconds"] == summary["seconds"][p.stem]
               for p in (out / ".recipe").glob("*.json"))
