"""The CLI surface: the exact command tree, help on every command, config show, and how errors end a command."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import typer
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from flm.cli.main import FlmGroup, app
from flm.config import FlmError

runner = CliRunner()

CommandTree = dict[str, "CommandTree | None"]
"""A group's sub-commands by name; None marks a leaf command."""

EXPECTED_TREE: CommandTree = {
    "data": {"download": None, "prepare": None, "train-tokenizer": None, "tokenize": None, "inspect": None,
             "mix-report": None, "propositions": None},
    "config": {"show": None, "list": None, "fields": None},
    "train": None,
    "eval": None,
    "grow": None,
    "predict-loss": None,
    "generate": None,
    "export": None,
    "run": None,
}
"""What cli/main.py and cli/config_cmd.py register; a command added, renamed or lost must show up here."""


def command_tree(command: Any) -> CommandTree | None:
    """The sub-command names of a click command, recursively (None for a leaf)."""
    if not isinstance(command, TyperGroup):
        return None
    return {name: command_tree(sub) for name, sub in command.commands.items()}


def command_paths(tree: CommandTree, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path in a tree, groups before their sub-commands (the root is the empty path)."""
    paths = [prefix]
    for name, sub in tree.items():
        paths += command_paths(sub, (*prefix, name)) if sub is not None else [(*prefix, name)]
    return paths


def command_at(path: tuple[str, ...]) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def test_command_tree_is_exactly_the_expected_one() -> None:
    """Compares the registered click tree itself, not help text that would contain the names anyway."""
    root = typer.main.get_command(app)
    assert isinstance(root, FlmGroup)  # the group that renders FlmError as one line
    assert command_tree(root) == EXPECTED_TREE


@pytest.mark.parametrize("path", command_paths(EXPECTED_TREE), ids=lambda p: " ".join(p) or "flm")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    """A command without a docstring shows an empty help page; --help must work without any other argument."""
    command = command_at(path)
    assert (command.help or "").strip(), f"flm {' '.join(path)} has no help text"
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (path, result.output)
    assert "Usage:" in result.stdout


def test_config_show_resolves_overrides() -> None:
    result = runner.invoke(app, ["config", "show", "tiny", "--set", "optim.lr=1e-3", "--json"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert cfg["name"] == "tiny" and cfg["optim"]["lr"] == 1e-3


def test_config_show_unknown_name() -> None:
    result = runner.invoke(app, ["config", "show", "nope"])
    assert result.exit_code == 1 and "available:" in result.stderr


def assert_one_line_error(result: Any, starts_with: str) -> None:
    """exit 1 through SystemExit (nothing escaped), nothing on stdout, one `error: ...` line on stderr."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {starts_with}"), lines


def test_flm_error_in_a_command_is_one_line_on_stderr() -> None:
    """A bad --set key raises ConfigError (an FlmError) deep in the loader; FlmGroup turns it into one line."""
    result = runner.invoke(app, ["config", "show", "tiny", "--set", "optim.lrr=1"])
    assert_one_line_error(result, "unknown key 'optim.lrr'")


def make_probe_app(error: Exception) -> typer.Typer:
    """A throwaway app on flm's group class whose one real command raises `error`."""
    probe = typer.Typer(cls=FlmGroup)

    @probe.command("boom")
    def boom() -> None:
        """Raise the error under test."""
        raise error

    @probe.command("noop")
    def noop() -> None:
        """A second command, so that typer builds a group."""

    return probe


def test_flm_group_renders_flm_error_as_one_line() -> None:
    result = runner.invoke(make_probe_app(FlmError("run.yaml: bad value")), ["boom"])
    assert_one_line_error(result, "run.yaml: bad value")


def test_flm_group_does_not_swallow_other_exceptions() -> None:
    """Any other exception is a bug: it must propagate with its traceback, not become a tidy error line."""
    bug = RuntimeError("a bug, not a user error")
    result = runner.invoke(make_probe_app(bug), ["boom"])
    assert result.exception is bug
    assert result.exc_info is not None and result.exc_info[2] is not None
    assert "error:" not in result.stderr


def test_startup_loads_no_heavy_or_data_only_libraries() -> None:
    """`flm` must start fast and on the GPU image, which lacks the data-path libraries."""
    code = ("import sys, flm.cli.main; "
            "print(','.join(m for m in ('torch', 'datatrove', 'orjson', 'zstandard') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
