"""Help and machine-readable output: conventional metavars, listed choices, --version, config list/fields/show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from flm.cli.config_cmd import KINDS, bundled_configs, config_class
from flm.cli.main import app
from flm.config import load_config

TYPE_METAVAR = re.compile(r"<(str|bool|int|float|path|file|dir|int range|float range|list\[[^>]*\])>")
COMMAND = typer.main.get_command(app)


def command_paths(group=COMMAND, prefix=()):  # type: ignore[no-untyped-def]
    """Every command as its argv prefix, groups included (`()` is `flm` itself)."""
    yield prefix
    for name, command in getattr(group, "commands", {}).items():
        yield from command_paths(command, (*prefix, name))


def help_of(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", list(command_paths()), ids=lambda p: " ".join(p) or "flm")
def test_help_has_no_python_type_metavars(path: tuple[str, ...]) -> None:
    text = help_of(path)
    assert not TYPE_METAVAR.search(text), f"flm {' '.join(path)} --help shows {TYPE_METAVAR.search(text)[0]}"
    assert "Usage: flm" in text


@pytest.mark.parametrize(("path", "option", "choices"), [
    (("export",), "--format", "[flm|llama]"),
    (("export",), "--dtype", "[bf16|fp32]"),
    (("predict-loss",), "--metric", "[loss|val_loss]"),
    (("predict-loss",), "--count", "[non-embedding|total]"),
    (("config", "show"), "--kind", "[stages|pipelines|mixtures|recipes]"),
    (("data", "prepare"), "--executor", "[local|slurm|ray]"),
    (("data", "tokenize"), "--backend", "[hf|sentencepiece]"),
])
def test_choice_options_list_their_values(path: tuple[str, ...], option: str, choices: str) -> None:
    line = next(line for line in help_of(path).splitlines() if f" {option} " in line)
    assert choices in line


def test_a_bad_choice_is_refused_naming_the_values() -> None:
    result = CliRunner().invoke(app, ["config", "show", "tiny", "--kind", "stage"])
    assert result.exit_code == 2
    assert "stages" in result.output and "recipes" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"flm \S+\n", result.output)


def test_config_list_names_every_bundled_config_with_a_description() -> None:
    listing = bundled_configs()
    assert set(listing) == set(KINDS)
    assert {"tiny", "101b"} <= set(listing["stages"]) and "quickstart" in listing["recipes"]
    assert all(description for configs in listing.values() for description in configs.values())
    result = CliRunner().invoke(app, ["config", "list"])
    assert result.exit_code == 0
    assert "tiny-grown" in result.output and "2-layer toy model" in result.output


def test_config_fields_explains_a_key() -> None:
    result = CliRunner().invoke(app, ["config", "fields", "optim.decay_steps"])
    assert result.exit_code == 0, result.output
    assert "optim.decay_steps: int | null = null" in result.output and "min_lr" in result.output
    result = CliRunner().invoke(app, ["config", "fields", "model.mup"])
    assert "model.mup.base_width" in result.output and "optim.lr" not in result.output
    result = CliRunner().invoke(app, ["config", "fields", "nosuch"])
    assert result.exit_code == 1 and "no section or key 'nosuch'" in result.output


def bundled() -> list[tuple[str, str]]:
    return [(kind, name) for kind, configs in bundled_configs().items() for name in configs]


@pytest.mark.parametrize(("kind", "name"), bundled(), ids=lambda v: v)
def test_config_show_round_trips_through_a_file(kind: str, name: str, tmp_path: Path) -> None:
    """`flm config show NAME > f.yaml` is the config itself: never wrapped, loads back equal."""
    result = CliRunner().invoke(app, ["config", "show", name, "--kind", kind], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    path = tmp_path / "shown.yaml"
    path.write_text(result.stdout, encoding="utf-8")
    yaml.safe_load(path.read_text(encoding="utf-8"))
    cls = config_class(kind)
    from flm.config import find_config

    assert load_config(cls, path) == load_config(cls, find_config(name, kind))


def test_dry_run_torchrun_line_is_one_line() -> None:
    result = CliRunner().invoke(app, ["train", "--stage", "101b", "--dry-run"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if "torchrun" in line)
    assert line.rstrip().endswith("--run-dir runs/101b")
