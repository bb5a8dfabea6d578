"""The CLI surface: groups, help texts, config show, and honest 'not built' exits."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flm.cli.main import app

runner = CliRunner()


def test_help_lists_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("data", "train", "grow", "eval", "config"):
        assert group in result.output
    data = runner.invoke(app, ["data", "--help"])
    for command in ("download", "prepare", "tokenize", "inspect"):
        assert command in data.output


def test_every_command_has_help_text() -> None:
    for command in (["data", "download"], ["data", "prepare"], ["data", "tokenize"], ["data", "inspect"],
                    ["train"], ["grow"], ["eval"], ["config", "show"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


def test_config_show_resolves_overrides() -> None:
    result = runner.invoke(app, ["config", "show", "tiny", "--set", "optim.lr=1e-3", "--json"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert cfg["name"] == "tiny" and cfg["optim"]["lr"] == 1e-3


def test_config_show_bad_key_is_clear_error() -> None:
    result = runner.invoke(app, ["config", "show", "tiny", "--set", "optim.lrr=1"])
    assert result.exit_code == 1
    assert "unknown key 'optim.lrr'" in result.output


def test_config_show_unknown_name() -> None:
    result = runner.invoke(app, ["config", "show", "nope"])
    assert result.exit_code == 1 and "available:" in result.output


def test_startup_loads_no_heavy_or_data_only_libraries() -> None:
    """`flm` must start fast and on the GPU image, which lacks the data-path libraries."""
    import subprocess
    import sys

    code = ("import sys, flm.cli.main; "
            "print(','.join(m for m in ('torch', 'datatrove', 'orjson', 'zstandard') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
