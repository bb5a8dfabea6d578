"""`flm export`: a checkpoint as a Hugging Face transformers model directory."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from flm.cli.plain import echo
from flm.cli.render import console, emit_json, err_console, progress_bars


def export(
    checkpoint: Annotated[Path, typer.Argument(help="A torch-format checkpoint (runs/NAME/checkpoints/step-N).")],
    out: Annotated[Path, typer.Option(help="Directory to write (must not exist).")],
    format_: Annotated[Literal["flm", "llama"], typer.Option(
        "--format", help="flm: FLMForCausalLM with its code (any flm model; load with trust_remote_code=True). "
                         "llama: plain LlamaForCausalLM, no remote code (RoPE + RMSNorm + SwiGLU models).")] = "flm",
    dtype: Annotated[Literal["bf16", "fp32"], typer.Option(help="Weight dtype.")] = "bf16",
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer directory (from `flm data train-tokenizer`) to "
                                                        "ship; default: the run's own, if its data names it.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Export a checkpoint to a directory that Hugging Face transformers loads (from_pretrained)."""
    from flm.train.export.huggingface import export_checkpoint

    command = shlex.join(["flm", "export", str(checkpoint), "--out", str(out), "--format", format_, "--dtype", dtype,
                          *(["--tokenizer", str(tokenizer)] if tokenizer is not None else [])])
    with progress_bars(enabled=not json_) as bars:
        summary = export_checkpoint(checkpoint, out, fmt=format_, dtype=dtype, tokenizer=tokenizer,
                                    progress=bars, command=command)
    if json_:
        emit_json(summary)
        return
    table = Table(title=f"exported {summary['stage']} step {summary['step']} as {summary['architecture']}")
    table.add_column("")
    table.add_column("", overflow="fold")
    table.add_row("directory", summary["out"])
    table.add_row("parameters", f"{summary['params']:,} ({summary['dtype']})")
    table.add_row("vocabulary", f"{summary['vocab_size']:,} (embedding padded to {summary['padded_vocab_size']:,})")
    table.add_row("files", ", ".join(summary["files"]))
    table.add_row("tokenizer", summary["tokenizer"] or "none")
    for i, fold in enumerate(summary["folded"]):
        table.add_row("folded" if i == 0 else "", fold)
    console.print(table)
    if summary["tokenizer_note"]:
        err_console.print(f"[yellow]note:[/] {summary['tokenizer_note']}", highlight=False)
    remote = ", trust_remote_code=True" if summary["trust_remote_code"] else ""
    echo(f"load with: AutoModelForCausalLM.from_pretrained({str(out)!r}{remote})")
    if summary["tokenizer"]:  # the tokenizer too: AutoTokenizer reads config.json, whose class is the shipped code
        echo(f"           AutoTokenizer.from_pretrained({str(out)!r}{remote})")
