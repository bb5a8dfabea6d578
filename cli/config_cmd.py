"""`flm config show | list | fields`: resolved configs, the bundled ones, and what every key means."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal, get_args

import typer
import yaml

from flm.cli.helptext import TidyHelpGroup
from flm.cli.plain import echo, echo_raw
from flm.cli.render import emit_json
from flm.config import ConfigError, config_to_dict, find_config, load_config
from flm.config.bundled import configs_dir
from flm.config.reference import field_reference, select, to_markdown

config_app = typer.Typer(help="Inspect the typed configs under configs/ (stages, pipelines, mixtures, recipes).",
                         cls=TidyHelpGroup, no_args_is_help=True)

Kind = Literal["stages", "pipelines", "mixtures", "recipes"]
KINDS: tuple[str, ...] = get_args(Kind)
KindOpt = Annotated[Kind, typer.Option(help="Which kind of config.")]
REGENERATE = "flm config fields --markdown > docs/config-reference.md"
"""How docs/config-reference.md is made (tests/test_config_reference.py checks it is current)."""


def config_class(kind: str) -> type:
    """The dataclass that a config kind loads into (imported lazily: each package owns its own)."""
    if kind == "stages":
        from flm.train.config import StageConfig
        return StageConfig
    if kind == "pipelines":
        from flm.pipelines.config import PipelineConfig
        return PipelineConfig
    if kind == "mixtures":
        from flm.train.data.config import MixtureConfig
        return MixtureConfig
    from flm.recipe.run import Recipe
    return Recipe


@config_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A bundled config name (e.g. tiny, 101b) or a path to a YAML file.")],
    kind: KindOpt = "stages",
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="Override a key, e.g. --set optim.lr=3e-4.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the resolved config as JSON.")] = False,
) -> None:
    """Print the fully resolved config: defaults, then the YAML file, then --set overrides.

    The output is YAML that loads back into the same config: `flm config show 101b > my.yaml`.
    """
    path = find_config(name, kind)
    cfg = load_config(config_class(kind), path, set_ or [])
    data = config_to_dict(cfg)
    if json_:
        emit_json(data)
        return
    echo_raw(f"# {kind[:-1]} config from {path}\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                                                     width=float("inf")))


def bundled_configs() -> dict[str, dict[str, str]]:
    """Every bundled config by kind: name -> one-line description (its `description:`, else its header comment's
    first sentence)."""
    listing: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        listing[kind] = {}
        for path in sorted((configs_dir() / kind).glob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text) or {}
            comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
            comment = comment.split(". ")[0].rstrip(".") + "." if comment else ""
            description = data.get("description") if isinstance(data, dict) else None
            listing[kind][path.stem] = str(description or comment)
    return listing


@config_app.command("list")
def list_(
    kind: Annotated[Kind | None, typer.Option(help="Only this kind (default: all).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the listing as one JSON object.")] = False,
) -> None:
    """List the bundled configs (stages, pipelines, mixtures, recipes) with a one-line description each."""
    listing = bundled_configs()
    if kind is not None:
        listing = {kind: listing[kind]}
    if json_:
        emit_json(listing)
        return
    for group, configs in listing.items():
        echo(f"[bold]{group}[/] (flm config show NAME --kind {group})")
        width = max(map(len, configs), default=0)
        for name, description in configs.items():
            echo(f"  {name:<{width}}  {description}")


@config_app.command("fields")
def fields(
    section: Annotated[str | None, typer.Argument(help="Only this section or key, e.g. optim, model.mup, "
                                                       "train.steps (default: all).")] = None,
    kind: KindOpt = "stages",
    markdown: Annotated[bool, typer.Option("--markdown", help="All kinds as the Markdown of "
                                                              "docs/config-reference.md.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the fields as one JSON object.")] = False,
) -> None:
    """What every config key means: its type, default and description, from the config dataclasses."""
    if markdown:
        echo_raw(reference_markdown())
        return
    sections = field_reference(config_class(kind))
    if section is not None:
        chosen = select(sections, section)
        if not chosen:  # a single key: the section holding it, that field only
            chosen = [dataclasses.replace(s, fields=tuple(f for f in s.fields if f.key == section))
                      for s in sections]
            chosen = [s for s in chosen if s.fields]
        if not chosen:
            keys = [s.key for s in sections if s.key]
            raise ConfigError(f"no section or key {section!r} in {kind} configs; sections: {', '.join(keys)}")
        sections = chosen
    if json_:
        emit_json({s.key or kind: {"doc": s.doc, "fields": [dataclasses.asdict(f) for f in s.fields]}
                   for s in sections})
        return
    for s in sections:
        echo(f"[bold]{s.key or kind}[/]" + (f"  [dim]{s.doc}[/]" if s.doc else ""))
        for f in s.fields:
            default = f" = {f.default}" if f.default else ""
            echo(f"  [cyan]{f.key}[/]: {f.type}{default}" + (f"\n      {f.doc}" if f.doc else ""))


def reference_markdown() -> str:
    """docs/config-reference.md: every kind's keys (regenerate with REGENERATE)."""
    header = ("# Config reference\n\n"
              "Every key of flm's configs: its type, its default and what it means, generated from the config\n"
              "dataclasses' docstrings. Set any key in a YAML file or with `--set key=value`; `flm config fields\n"
              f"[SECTION] --kind KIND` prints the same in a terminal. Regenerate this file with\n`{REGENERATE}`.\n")
    parts = [header]
    for kind in KINDS:
        parts.append(to_markdown(f"{kind} (`flm config show NAME --kind {kind}`)", field_reference(config_class(kind))))
    return "\n".join(parts)
