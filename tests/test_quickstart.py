"""End to end: a shortened `flm run quickstart` on the bundled sample, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flm.cli.main import app

SHORT = ["--set", "train.steps=30", "--set", "train.grown_steps=20", "--set", "train.ramp_steps=10",
         "--set", "train.eval_batches=4", "--set", "max_new_tokens=8",
         "--set", "train.overrides=[train.eval_every=1000, train.save_every=1000]"]


def test_quickstart_end_to_end_and_rerun_skips(tmp_path: Path, repo_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)  # the recipe names the sample by repository-relative paths
    out = tmp_path / "qs"
    result = CliRunner().invoke(app, ["run", "quickstart", "--out", str(out), "--json", *SHORT])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)

    docs = summary["documents"]
    assert 0 < docs["docs_kept"] < docs["docs_in"]
    assert docs["docs_in"] == docs["docs_kept"] + sum(summary["dropped"].values())
    assert summary["tokens"] > 100_000
    assert summary["train"]["step"] == 30 and summary["train_grown"]["step"] == 50
    assert summary["growth"]["relative_change"] < 1e-4  # growth keeps the function
    first_loss = json.loads((out / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert summary["train_grown"]["loss"] < first_loss
    assert [g["prompt"] for g in summary["generations"]] == ["The Debian package manager", "软件包管理"]
    assert all(g["tokens"] > 0 for g in summary["generations"])
    assert Path(summary["loss_plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rerun = CliRunner().invoke(app, ["run", "quickstart", "--out", str(out), "--json", *SHORT])
    assert rerun.exit_code == 0, rerun.output
    again = json.loads(rerun.stdout)
    assert again["train_grown"] == summary["train_grown"]  # nothing recomputed
    assert all(json.loads(p.read_text())["seconds"] == summary["seconds"][p.stem]
               for p in (out / ".recipe").glob("*.json"))
