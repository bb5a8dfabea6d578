"""`--help` that reads like other command-line tools': `--steps INTEGER`, `--format [flm|llama]`, flags bare.

Typer labels every value with its Python type (`<str>`, `<bool>`, `<list[str]>`); here each parameter without a
metavar of its own gets the conventional one before its help is drawn: TEXT, INTEGER, NUMBER, PATH, the
choices for a choice, nothing for a flag.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from typer._click import Command, Context
from typer.core import TyperArgument, TyperGroup, TyperOption

TYPE_NAMES = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH", bool: "BOOLEAN"}


def value_label(param: TyperOption | TyperArgument) -> str:
    """The conventional label of a parameter's value: [a|b] for choices, else its type's name."""
    desc = param.type_descriptor
    if desc.is_choice and desc.choices is not None:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices) + "]"
    annotation: Any = desc.annotation
    if typing.get_origin(annotation) in (list, tuple) and typing.get_args(annotation):
        annotation = typing.get_args(annotation)[0]
    return TYPE_NAMES.get(annotation, "VALUE")


class _Argument(TyperArgument):
    """An argument whose help panel shows its value's label instead of Typer's `<type>`."""

    def display_type_rich(self, ctx: Context) -> str | None:
        return value_label(self)

    def _usage_display_name(self) -> str:  # click's convention: NAME when required, [NAME] when not
        name = super()._usage_display_name()
        return name.replace("{", "").replace("}", "") if self.required else name


def tidy(command: Command, ctx: Context) -> None:
    """Give every parameter of `command` (its --help included) a conventional metavar, once."""
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            if type(param) is TyperArgument:
                param.__class__ = _Argument
        elif isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = "" if param.is_flag else "KEY=VALUE" if "--set" in param.opts else value_label(param)


class TidyHelpGroup(TyperGroup):
    """A command group whose commands' help uses conventional metavars (see `tidy`)."""

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy(command, ctx)
        return command

    def format_help(self, ctx: Context, formatter: Any) -> None:
        tidy(self, ctx)
        super().format_help(ctx, formatter)
