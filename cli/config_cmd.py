"""`flm config show`: print a resolved config (bundled name or YAML path, plus --set overrides)."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

from flm.cli.render import console, emit_json, fail
from flm.config import config_to_dict, find_config, load_config

config_app = typer.Typer(help="Inspect the typed configs under configs/ (stages, pipelines, mixtures, recipes).",
                         no_args_is_help=True)

KINDS = ("stages", "pipelines", "mixtures", "recipes")


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
    kind: Annotated[str, typer.Option(help=f"Which kind of config: {', '.join(KINDS)}.")] = "stages",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key, e.g. --set optim.lr=3e-4.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the resolved config as JSON.")] = False,
) -> None:
    """Print the fully resolved config: defaults, then the YAML file, then --set overrides."""
    if kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}; got {kind!r}")
    path = find_config(name, kind)
    cfg = load_config(config_class(kind), path, set_ or [])
    data = config_to_dict(cfg)
    if json_:
        emit_json(data)
        return
    console.print(f"# {kind[:-1]} config from {path}", style="dim", highlight=False)
    console.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip(), highlight=False)
