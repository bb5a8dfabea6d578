"""Train a tokenizer on the clean corpus: every clean document is offered to the byte-budget sampler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from flm.config.progress import Progress
from flm.pipelines.clean_text import SkipLog, list_clean_sources, read_clean_file
from flm.tokenizer import TokenizerMeta, TrainConfig, train_tokenizer


def train_from_clean(input_dir: Path, tokenizer_dir: Path, config: TrainConfig, *, overwrite: bool = False,
                     progress: Progress | None = None) -> TokenizerMeta:
    """Train a tokenizer on a byte-budget sample of every clean document (see tokenizer/sample.py).

    Skipped input (empty, non-UTF-8, malformed) is counted in meta.json's corpus summary, so the
    tokenizer records what it was and was not trained on.
    """
    files = [(name, path) for name, paths in list_clean_sources(input_dir).items() for path in paths]
    total = sum(p.stat().st_size for _, p in files)
    skips = SkipLog()

    def report(read: int) -> None:
        if progress:
            progress("read", read, total)

    def docs() -> Iterator[tuple[str, str]]:
        done = 0
        for name, path in files:
            for doc in read_clean_file(path, name, skips, lambda pos, base=done: report(base + pos)):
                yield name, doc.text
            done += path.stat().st_size
            report(done)

    info = {"input": str(Path(input_dir).resolve()), "files": len(files)}
    meta = train_tokenizer(docs(), tokenizer_dir, config, corpus_info=info, overwrite=overwrite)
    if skips.total:
        meta.corpus["skipped"] = skips.counts
        meta.save(Path(tokenizer_dir))
    return meta
