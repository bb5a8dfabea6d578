"""`flm generate`: continue prompts with a trained (or grown) checkpoint."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from flm.cli.plain import echo
from flm.cli.render import emit_json


def generate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint (runs/NAME/checkpoints/step-N) or a run dir.")],
    prompt: Annotated[list[str], typer.Option(help="A prompt to continue; repeat for several.")],
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer directory; default: the one that made the "
                                                         "checkpoint's training data (from its manifest).")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate per prompt at most.")] = 48,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature; 0 = greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option(min=0, help="Sample among the k most likely tokens (0 = all).")] = 40,
    seed: Annotated[int, typer.Option(help="Sampling seed (same seed, same text).")] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Generate text from a checkpoint given one or more prompts."""
    from flm.train.tools.generate import generate as run_generate

    results = run_generate(checkpoint, prompt, tokenizer_dir=tokenizer, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, seed=seed)
    if json_:
        emit_json({"checkpoint": str(checkpoint), "generations": [asdict(r) for r in results]})
        return
    for r in results:
        echo(f"[bold]{escape(r.prompt)}[/]{escape(r.text)}")  # whole lines, as generated
