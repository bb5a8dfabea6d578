"""The `flm` application: command groups wired to their modules (each module owns its commands)."""

from __future__ import annotations

import logging
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from flm.cli import (
    data_download,
    data_mix,
    data_prepare,
    data_propositions,
    data_tokenize,
    export_cmd,
    generate_cmd,
    grow_cmd,
    predict_cmd,
    run_cmd,
    train_cmd,
)
from flm.cli.config_cmd import config_app
from flm.cli.helptext import TidyHelpGroup
from flm.cli.render import fail
from flm.config.errors import FlmError


class FlmGroup(TidyHelpGroup):
    """Renders flm's own errors (FlmError) as one line and exit code 1; any other exception is a bug and keeps
    its traceback."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except FlmError as err:
            fail(str(err))


app = typer.Typer(
    name="flm",
    cls=FlmGroup,
    help="flm: a data-pipeline-first LLM pretraining suite (FLM-101B recipe: Pile + WuDao, xPos, muP, growth).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Data: download corpora, prepare (clean + dedup), tokenize, inspect, mix.",
                       cls=TidyHelpGroup, no_args_is_help=True)

data_app.command("download")(data_download.download)
data_app.command("prepare")(data_prepare.prepare)
data_app.command("train-tokenizer")(data_tokenize.train_tokenizer)
data_app.command("tokenize")(data_tokenize.tokenize)
data_app.command("inspect")(data_tokenize.inspect)
data_app.command("mix-report")(data_mix.mix_report)
data_app.command("propositions")(data_propositions.propositions)

app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.command("train")(train_cmd.train)
app.command("eval")(train_cmd.evaluate)
app.command("grow")(grow_cmd.grow)
app.command("predict-loss")(predict_cmd.predict_loss)
app.command("generate")(generate_cmd.generate)
app.command("export")(export_cmd.export)
app.command("run")(run_cmd.run)


def flm_version() -> str:
    try:
        return version("flm")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"flm {flm_version()}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs from the library.")] = False,
    _version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                           help="Print flm's version and exit.")] = False,
) -> None:
    """flm: from raw Pile + WuDao text to a trained, grown bilingual model."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # megatron-core warns at import about optional CUDA extensions (Apex, TE) it lacks
        warnings.filterwarnings("ignore", module=r"megatron\.")


if __name__ == "__main__":
    app()
