"""README.md's examples are true: its ```bash blocks run in order, from a repository-root-like folder holding a
quickstart output under work/quickstart/, and its Python snippet loads the export without a prompt.

A block preceded by `<!-- readme: no-run -->` (downloads, GPUs, clusters, long loops) is only parsed: each
`flm` command in it must name an existing command with options it accepts. A command whose comment starts
with `error` must fail. `--steps N` is shortened to a few steps (the examples' own numbers are for people).
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer._click import ClickException, Command
from typer.testing import CliRunner

from flm.cli.main import app

NO_RUN = "<!-- readme: no-run -->"
FENCE = re.compile(r"^```(\w+)\s*$")
SHORTER = {"--steps": "4"}
"""Option values the test shortens: training 300 steps proves nothing more than 4 here."""
OTHER_PROGRAMS = {"bash", "torchrun", "srun", "for", "done", "source", "export"}
"""Programs a no-run block may call besides flm (checked only for flm commands they launch)."""


@dataclass
class Block:
    lang: str
    line: int
    text: str
    run: bool


def readme_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        blocks.append(Block(match.group(1), i + 1, "\n".join(lines[i + 1:end]), before != NO_RUN))
        i = end + 1
    return blocks


def shell_lines(text: str) -> list[str]:
    """Logical lines of a shell block (backslash continuations joined), blank lines dropped."""
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", text).splitlines() if line.strip()]


def flm_argv(words: list[str]) -> list[str] | None:
    """The arguments of the flm command in a shell command, wherever it starts (torchrun --no-python flm ...)."""
    for i, word in enumerate(words):
        if word in ("flm", ".venv/bin/flm"):
            return words[i + 1:]
    return None


COMMAND = typer.main.get_command(app)


def check_parses(argv: list[str], where: str) -> None:
    """Resolve argv through flm's command tree and parse its options, without running anything."""
    command: Command = COMMAND
    ctx = COMMAND.make_context("flm", [], resilient_parsing=True)
    name, args = "flm", list(argv)
    while hasattr(command, "commands"):  # a group: the next word names a command in it
        assert args, f"{where}: `flm {' '.join(argv)}` names a group, not a command"
        sub = command.get_command(ctx, args[0])
        assert sub is not None, f"{where}: no command {args[0]!r} in `flm {' '.join(argv)}`"
        if hasattr(sub, "commands"):
            ctx = sub.make_context(args[0], [], parent=ctx, resilient_parsing=True)
        name, command, args = args[0], sub, args[1:]
    try:
        command.make_context(name, args, parent=ctx)
    except ClickException as err:
        pytest.fail(f"{where}: `flm {' '.join(argv)}` does not parse: {err.format_message()}")


def shortened(argv: list[str]) -> list[str]:
    return [SHORTER[argv[i - 1]] if i and argv[i - 1] in SHORTER else a for i, a in enumerate(argv)]


def run_line(line: str, where: str) -> None:
    expect_error = re.search(r"#\s*error\b", line) is not None
    words = shlex.split(line, comments=True)
    redirect = None
    if ">" in words:
        redirect = Path(words[words.index(">") + 1])
        words = words[:words.index(">")]
    argv = flm_argv(words)
    assert argv is not None and words[0] in ("flm", ".venv/bin/flm"), (
        f"{where}: `{line}` is not an flm command; mark its block with {NO_RUN} or make it one")
    result = CliRunner().invoke(app, shortened(argv))
    if expect_error:
        assert result.exit_code != 0, f"{where}: `{line}` was expected to fail:\n{result.output}"
        return
    assert result.exit_code == 0, f"{where}: `{line}` failed:\n{result.output}"
    if redirect is not None:
        redirect.write_text(result.stdout, encoding="utf-8")


def no_prompt_for_remote_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail where transformers would stop for its 15-second y/N prompt (trust_remote_code not given)."""
    from transformers.models.auto import configuration_auto, tokenization_auto

    def refuse(trust_remote_code: Any, model_name: Any, has_local_code: bool, has_remote_code: bool,
               *args: Any, **kwargs: Any) -> bool:
        if trust_remote_code is None and has_remote_code and not has_local_code:
            raise AssertionError(f"{model_name}: transformers would ask y/N to run its code")
        return bool(trust_remote_code)

    for module in (configuration_auto, tokenization_auto):
        monkeypatch.setattr(module, "resolve_trust_remote_code", refuse)


def test_readme_blocks_parse(repo_root: Path) -> None:
    """Every flm command in the README, run or not, names a real command with options it takes."""
    blocks = readme_blocks(repo_root / "README.md")
    assert any(not b.run for b in blocks) and any(b.run for b in blocks)
    for block in (b for b in blocks if b.lang == "bash"):
        for line in shell_lines(block.text):
            for part in line.split("&&"):
                command = shlex.split(part, comments=True)
                if not command:
                    continue
                argv = flm_argv(command)
                if argv is None:
                    assert not block.run or command[0] in OTHER_PROGRAMS, f"README.md:{block.line}: `{line}`"
                    continue
                if ">" in argv:
                    argv = argv[:argv.index(">")]
                check_parses([a for a in argv if a not in ("do",)], f"README.md:{block.line}")


def test_readme_examples_run_in_order(quickstart: tuple[Path, dict], repo_root: Path,
                                      monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """From a folder laid out like the repository root after `flm run quickstart`, every runnable block works.

    That folder is the quickstart's own (prepare and tokenize reruns find their earlier work by absolute path);
    the examples write only beside work/quickstart/, or rerun what is finished in it."""
    out, _ = quickstart
    root = out.parent.parent
    assert out == root / "work" / "quickstart"
    for entry in repo_root.iterdir():  # configs/, data/, scripts/, ...: what examples name relative to the root
        if not entry.name.startswith(".") and entry.name != "work" and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry)
    monkeypatch.chdir(root)
    no_prompt_for_remote_code(monkeypatch)
    ran = 0
    for block in readme_blocks(repo_root / "README.md"):
        if not block.run:
            continue
        where = f"README.md:{block.line}"
        if block.lang == "bash":
            for line in shell_lines(block.text):
                run_line(line, where)
                ran += 1
        elif block.lang == "python":
            with caplog.at_level(logging.WARNING, logger="transformers"):
                exec(compile(block.text, where, "exec"), {})  # noqa: S102 - the README's own snippet
            assert "model of type" not in caplog.text, f"{where}: {caplog.text}"
            ran += 1
    assert ran >= 15
