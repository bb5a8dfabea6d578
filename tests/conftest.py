"""Shared fixtures: paths to the repository, its configs and the bundled sample corpus, and one shortened
quickstart run per session (test_quickstart checks it, test_readme runs the README's examples on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

EXTRA_TRAIN_OVERRIDES = ["train.eval_every=1000", "train.save_every=1000"]
"""Stage overrides the short run adds: no mid-run evaluations or checkpoints in 30 steps."""


def short_run_flags() -> list[str]:
    """--set flags that shorten the recipe; train.overrides is a list that --set replaces, so it gets the recipe's
    own entries (train.device=cpu: CPU-format checkpoints, also on a GPU machine) plus ours."""
    from flm.recipe.run import load_recipe

    recipe_overrides = load_recipe("quickstart").train.overrides
    merged = [*recipe_overrides, *(o for o in EXTRA_TRAIN_OVERRIDES if o not in recipe_overrides)]
    return ["--set", "train.steps=30", "--set", "train.grown_steps=20", "--set", "train.ramp_steps=10",
            "--set", "train.eval_batches=4", "--set", "max_new_tokens=8",
            "--set", f"train.overrides={json.dumps(merged)}"]


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A shortened `flm run quickstart --json`, run once from outside the repository: (its --out, its summary).

    --out is CWD/work/quickstart, the default's layout, so that CWD stands for the repository root the README's
    examples run in."""
    from typer.testing import CliRunner

    from flm.cli.main import app

    cwd = tmp_path_factory.mktemp("quickstart")
    out = cwd / "work" / "quickstart"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)  # the recipe reads the bundled sample as package data, not by relative paths
        result = CliRunner().invoke(app, ["run", "quickstart", "--out", str(out), "--json", *short_run_flags()])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled sample corpus: data/sample/raw/{pile,wudao}/ in the published formats."""
    return REPO / "data" / "sample" / "raw"


@pytest.fixture(scope="session")
def sample_texts(sample_dir: Path) -> dict[str, list[str]]:
    """Every text of the bundled sample by source (Pile documents, WuDao records), as read from the raw files."""
    import zstandard

    pile = []
    for path in sorted((sample_dir / "pile").glob("*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as reader:
            pile += [json.loads(line)["text"] for line in reader.read().decode("utf-8").splitlines()]
    wudao = [r["content"] for path in sorted((sample_dir / "wudao").glob("*.json"))
             for r in json.loads(Path(path).read_text(encoding="utf-8"))]
    return {"pile": pile, "wudao": wudao}
