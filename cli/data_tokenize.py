"""`flm` commands: tokenize, train-tokenizer, inspect."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from flm.cli.render import console, emit_json, err_console, fail
from flm.config import ConfigError

if TYPE_CHECKING:
    from flm.pipelines.config import ExecutorConfig

DEFAULT_VOCAB = 100256
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]
VocabOpt = Annotated[int | None, typer.Option(
    "--vocab", help=f"Exact vocabulary size including special tokens (default: {DEFAULT_VOCAB} when training).")]
BackendOpt = Annotated[Literal["hf", "sentencepiece"], typer.Option(
    "--backend", help="hf (byte-level BPE, tiktoken fast path) or sentencepiece.")]
AllowSmallerOpt = Annotated[bool, typer.Option(
    "--allow-smaller", help="Keep a smaller vocabulary when the corpus cannot support --vocab, instead of failing.")]
SampleOpt = Annotated[float, typer.Option("--sample-mb", min=0.001,
                                          help="Byte budget of the tokenizer's training sample (MB).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the training sample.")]


class _Bars:
    """Progress callback: one bar per stage (input bytes with MB/s and ETA), tokens and tokens/s beside it."""

    LABELS = {"read": "sampling corpus", "input": "tokenizing"}

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.started = time.perf_counter()

    def __call__(self, label: str, completed: float, total: float | None = None) -> None:
        if label == "tokens":
            task = self.tasks.get("input")
            if task is not None:
                rate = completed / max(time.perf_counter() - self.started, 1e-6)
                self.progress.update(task, tokens=f"{completed / 1e6:,.1f}M tokens  {rate / 1e6:,.2f}M tok/s")
            return
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(self.LABELS.get(label, label), total=total, tokens="")
            self.started = time.perf_counter()
        self.progress.update(self.tasks[label], completed=completed, total=total)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                    TransferSpeedColumn(), TextColumn("{task.fields[tokens]}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err_console, disable=not enabled)


def _backend(value: str) -> Literal["hf", "sentencepiece"]:
    if value not in ("hf", "sentencepiece"):
        raise ValueError(f"--backend must be hf or sentencepiece, got {value!r}")
    return value  # type: ignore[return-value]


def _train(input_dir: Path, out: Path, vocab: int, backend: str | None, allow_smaller: bool, sample_mb: float,
           seed: int, overwrite: bool, show: bool) -> dict:
    from flm.pipelines.tokenize import train_from_clean
    from flm.tokenizer import TrainConfig

    config = TrainConfig(vocab_size=vocab, backend=_backend(backend or "hf"), allow_smaller=allow_smaller,
                         sample_bytes=int(sample_mb * 1e6), seed=seed)
    start = time.perf_counter()
    with _progress(show) as progress:
        bars = _Bars(progress)
        meta = train_from_clean(input_dir, out, config, overwrite=overwrite, progress=bars)
    if show:
        err_console.print(f"trained {meta.backend} tokenizer: vocab {meta.vocab_size}, "
                          f"{meta.corpus['sample_docs']} documents ({meta.corpus['sample_bytes'] / 1e6:.1f} MB) "
                          f"in {time.perf_counter() - start:.1f}s -> {out}", highlight=False)
    return {"tokenizer_dir": str(out), "trained": True, "vocab_size": meta.vocab_size, "backend": meta.backend,
            "content_hash": meta.content_hash, "special_ids": meta.special_ids, "corpus": meta.corpus,
            "seconds": round(time.perf_counter() - start, 2)}


def train_tokenizer(
    input_dir: Annotated[Path, typer.Option("--input", help="Clean text: CLEAN/<source>/*.jsonl.zst.")],
    out: Annotated[Path, typer.Option("--out", help="Tokenizer directory to write (tokenizer.json, meta.json).")],
    vocab: VocabOpt = None,
    backend: BackendOpt = "hf",
    allow_smaller: AllowSmallerOpt = False,
    sample_mb: SampleOpt = 1024.0,
    seed: SeedOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a tokenizer already in --out.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Train a byte-level BPE tokenizer on prepared text (HF tokenizers or SentencePiece)."""
    result = _train(input_dir, out, vocab or DEFAULT_VOCAB, backend, allow_smaller, sample_mb, seed, overwrite,
                    show=not json_)
    if json_:
        emit_json(result)
    else:
        console.print(f"tokenizer: {out}  vocab {result['vocab_size']}  hash {result['content_hash'][:12]}  "
                      f"specials {result['special_ids']}", highlight=False)


def _tokenizer_ready(path: Path, vocab: int | None, backend: str | None) -> bool:
    """True when `path` holds a tokenizer to reuse; a clear error when it does not match what was asked."""
    from flm.tokenizer import TokenizerError, TokenizerMeta

    if not (path / "meta.json").exists():
        return False
    meta = TokenizerMeta.load(path)
    if vocab is not None and meta.vocab_size != vocab:
        raise TokenizerError(f"{path} holds a tokenizer of vocab {meta.vocab_size}, but --vocab {vocab} was asked; "
                             "pass a matching --vocab, or another --tokenizer directory to train a new one")
    if backend is not None and meta.backend != backend:
        raise TokenizerError(f"{path} holds a {meta.backend} tokenizer, but --backend {backend} was asked")
    return True


def _executor_config(kind: str, overrides: list[str]) -> ExecutorConfig:
    """--executor and --set executor.KEY=VALUE, read as prepare reads them (Slurm jobs named flm-tokenize)."""
    from flm.config import load_config
    from flm.pipelines.config import ExecutorConfig

    keys = []
    for item in overrides:
        if not item.startswith("executor."):
            raise ConfigError(f"--set {item!r}: tokenize takes executor.* settings only")
        keys.append(item.removeprefix("executor."))
    return load_config(ExecutorConfig, {"kind": kind, "slurm": {"job_name": "flm-tokenize"}}, keys)


def tokenize(
    input_dir: Annotated[Path, typer.Option("--input", help="Clean text: CLEAN/<source>/*.jsonl.zst.")],
    out: Annotated[Path, typer.Option("--out", help="Token shards: OUT/<source>/*.arrow + manifest.json.")],
    vocab: VocabOpt = None,
    tokenizer: Annotated[Path | None, typer.Option(
        "--tokenizer", help="Tokenizer directory; trained there first if it holds none (default: OUT/../tokenizer).")
    ] = None,
    backend: Annotated[Literal["hf", "sentencepiece"] | None, typer.Option(
        "--backend", help="hf or sentencepiece: checked against an existing --tokenizer (default: any), "
        "used when training one (default: hf).")] = None,
    allow_smaller: AllowSmallerOpt = False,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes (default: all cores).")]
    = None,
    sample_mb: SampleOpt = 1024.0,
    seed: SeedOpt = 0,
    executor: Annotated[str, typer.Option(
        "--executor", help="local (worker processes here), slurm or ray: one task per input file.")] = "local",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="An executor setting, as in prepare's configs, e.g. --set executor.slurm.partition=cpu.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Train (if needed) a byte-level BPE tokenizer and write Arrow token shards."""
    from flm.pipelines.tokenize import tokenize_corpus

    cluster = _executor_config(executor, set_ or [])

    tokenizer_dir = tokenizer or out.resolve().parent / "tokenizer"
    workers = workers or os.cpu_count() or 1
    command = shlex.join(["flm", "data", "tokenize", "--input", str(input_dir), "--out", str(out),
                          "--tokenizer", str(tokenizer_dir), "--workers", str(workers)]
                         + (["--backend", backend] if backend else []) + (["--vocab", str(vocab)] if vocab else [])
                         + ([] if executor == "local" else ["--executor", executor]))
    result: dict = {}
    if _tokenizer_ready(tokenizer_dir, vocab, _backend(backend) if backend else None):
        result["tokenizer"] = {"tokenizer_dir": str(tokenizer_dir), "trained": False}
    else:
        result["tokenizer"] = _train(input_dir, tokenizer_dir, vocab or DEFAULT_VOCAB, backend, allow_smaller,
                                     sample_mb, seed, overwrite=False, show=not json_)
    with _progress(not json_) as progress:
        run = tokenize_corpus(input_dir, out, tokenizer_dir, workers=workers, command=command, executor=cluster,
                              progress=_Bars(progress))
    result["tokenize"] = run.to_json()
    if json_:
        emit_json(result)
        return
    if run.submitted_jobs:
        console.print(f"submitted Slurm jobs {', '.join(run.submitted_jobs)}; run the same command again when they "
                      "finish to assemble the shards", highlight=False)
    if run.engine == "hf" and run.fallback_reason:
        err_console.print(f"[yellow]warning:[/] tiktoken fast path off: {run.fallback_reason}", highlight=False)
    table = Table("source", "shards", "documents", "tokens", "MB text", "skipped", title=f"token shards in {out}")
    for name, s in run.sources.items():
        table.add_row(name, str(s.shards), f"{s.documents:,}", f"{s.tokens:,}", f"{s.text_bytes / 1e6:,.1f}",
                      ", ".join(f"{k} {v}" for k, v in s.skipped.items() if v) or "0")
    console.print(table)
    where = f"{workers} workers" if run.executor == "local" else f"on {run.executor}"
    rate = (f"{run.mb_per_s:.2f} MB/s, {run.tokens_per_s / 1e6:.2f}M tokens/s with {run.engine} ({where}, "
            if run.run_text_bytes else f"nothing encoded by this command ({run.engine}, ")
    console.print(f"{run.shards_written} shards written, {run.shards_skipped} already done; {rate}"
                  f"{run.seconds:.1f}s)", highlight=False)


def inspect(
    tokens: Annotated[Path, typer.Argument(help="Token-shard directory (OUT of `flm data tokenize`, or one source), "
                                           "one shard file, or with --dropped a clean folder.")],
    tokenizer: Annotated[Path | None, typer.Option(
        "--tokenizer", help="Tokenizer to decode with (default: the one the manifest names).")] = None,
    doc: Annotated[int, typer.Option("--doc", min=0, help="Index of the document to decode in each source.")] = 0,
    dropped: Annotated[str | None, typer.Option(
        "--dropped", help="Show documents `flm data prepare` dropped for this reason (or reason prefix, e.g. "
                          "quality/gopher_quality; 'all' for every reason), from a clean folder prepared with "
                          "audit.enabled=true.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Dropped documents shown at most.")] = 5,
    json_: JsonOpt = False,
) -> None:
    """Summarize token shards per source and decode a sample document back to text; or show dropped documents."""
    if dropped is not None:
        _inspect_dropped(tokens, "" if dropped == "all" else dropped, limit, json_)
        return
    from flm.pipelines.token_inspect import inspect_tokens

    report = inspect_tokens(tokens, tokenizer, sample_doc=doc)
    if json_:
        emit_json(report.to_json())
        return
    table = Table("source", "shards", "documents", "tokens", "avg tokens/doc", "vocab", title=str(tokens))
    for name, s in report.sources.items():
        table.add_row(name, str(s.shards), f"{s.documents:,}", f"{s.tokens:,}", f"{s.avg_tokens:,.1f}",
                      str(s.vocab_size))
    console.print(table)
    for name, s in report.sources.items():
        if s.subsets:
            console.print(f"[bold]{name}[/] subsets: " + ", ".join(
                f"{k or '(none)'} {v['documents']:,} docs / {v['tokens']:,} tokens" for k, v in s.subsets.items()),
                highlight=False)
        console.print(f"[bold]{name}[/] document {s.sample_doc} ({s.sample_id}): ids {s.sample_ids[:16]} ...",
                      highlight=False)
        if s.sample_text is not None:
            console.print(s.sample_text, markup=False, highlight=False)
    if report.note:
        err_console.print(f"[yellow]note:[/] {report.note}", highlight=False)


def _inspect_dropped(folder: Path, reason: str, limit: int, json_: bool) -> None:
    from itertools import islice

    from flm.pipelines.prepare.audit import iter_dropped, matches_reason, reason_counts

    try:
        counts = reason_counts(folder)
        examples = list(islice(iter_dropped(folder, reason), limit))
    except FileNotFoundError as err:
        fail(str(err))
    matching = {k: v for k, v in counts.items() if matches_reason(k, reason)}
    if json_:
        emit_json({"folder": str(folder), "reason": reason or "all", "written_per_reason": counts,
                   "matching": matching, "examples": examples})
        return
    if not matching:
        fail(f"{folder}: no dropped document with reason {reason!r}; reasons written: {', '.join(counts) or 'none'}")
    table = Table("reason", "written", title=f"dropped documents in {folder}")
    for name, n in matching.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    for item in examples:
        console.print(f"[bold]{item['source']}/{item['subset'] or '-'}[/] {item['id']}  [yellow]{item['reason']}[/]",
                      highlight=False)
        console.print(item["text"][:600], markup=False, highlight=False)
        console.print()
