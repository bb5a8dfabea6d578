"""`flm data inspect`: what a token-shard directory (or one shard file) holds, per source, and a document decoded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from flm.pipelines.token_shards import MANIFEST_NAME, PROGRESS_NAME, TokenShardError, TokenShards
from flm.tokenizer import Tokenizer, TokenizerError, load_tokenizer


@dataclass
class SourceReport:
    path: str
    shards: int
    documents: int
    tokens: int
    avg_tokens: float
    vocab_size: int
    tokenizer_hash: str
    subsets: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    sample_doc: int = 0
    sample_id: str = ""
    sample_ids: list[int] = field(default_factory=list)
    """First token ids of the sample document."""
    sample_text: str | None = None
    """The sample decoded (EOS dropped, cut to max_chars); None without a matching tokenizer."""


@dataclass
class InspectReport:
    directory: str
    tokenizer_dir: str | None
    sources: dict[str, SourceReport]
    note: str = ""

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.sources.values())

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.sources.values())

    def to_json(self) -> dict:
        return {**asdict(self), "documents": self.documents, "tokens": self.tokens}


def shard_dirs(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """A token-shard directory itself, or each <source>/ below it with a manifest; and unfinished sources."""
    directory = Path(directory)
    if (directory / MANIFEST_NAME).exists():
        return {directory.name: directory}, []
    subdirs = sorted(d for d in directory.iterdir() if d.is_dir()) if directory.is_dir() else []
    found = {d.name: d for d in subdirs if (d / MANIFEST_NAME).exists()}
    unfinished = [d.name for d in subdirs if (d / PROGRESS_NAME).exists()]
    if not found:
        raise TokenShardError(f"{directory}: no {MANIFEST_NAME} here or in any subfolder; "
                              "is this the --out of `flm data tokenize` (and did it finish)?")
    return found, unfinished


def _tokenizer_for(shards: TokenShards, explicit: Path | None) -> tuple[Tokenizer | None, str]:
    """The tokenizer to decode with (explicit, else the one the manifest names), or None and why not."""
    path = explicit or shards.manifest.extra.get("tokenizer_dir")
    if not path:
        return None, "the manifest names no tokenizer; pass --tokenizer to decode"
    try:
        tokenizer = load_tokenizer(Path(path), fast=True)
    except TokenizerError as err:
        if explicit is not None:
            raise
        return None, f"cannot load the manifest's tokenizer ({err}); pass --tokenizer to decode"
    if tokenizer.content_hash != shards.manifest.tokenizer_hash or tokenizer.vocab_size != shards.vocab_size:
        raise TokenShardError(
            f"{shards.directory}: shards were made by tokenizer {shards.manifest.tokenizer_hash[:12]} "
            f"(vocab {shards.vocab_size}), but {path} is {tokenizer.content_hash[:12]} (vocab {tokenizer.vocab_size})")
    return tokenizer, ""


def _decode_sample(report: SourceReport, shards: TokenShards, doc: int, explicit: Path | None, max_chars: int,
                   notes: set[str]) -> str | None:
    """Fill the report's sample from global document `doc`; returns the tokenizer folder used, if any."""
    ids = shards.document(doc)
    report.sample_doc, report.sample_id = doc, shards.doc_id(doc)
    report.sample_ids = [int(i) for i in ids[:32]]
    tokenizer, why = _tokenizer_for(shards, explicit)
    if tokenizer is None:
        notes.add(why)
        return None
    body = ids[:-1] if len(ids) and int(ids[-1]) == shards.eos_id else ids
    # a token is at least one byte and a character at most four: enough for max_chars
    report.sample_text = tokenizer.decode(body[:4 * max_chars].tolist())[:max_chars]
    return str(tokenizer.directory)


def inspect_shard(path: Path, tokenizer_dir: Path | str | None = None, sample_doc: int = 0,
                  max_chars: int = 600) -> InspectReport:
    """One shard file (`part-00000.arrow`): its documents, tokens and subsets, and one of its documents decoded.

    The shard is read through the manifest beside it, which says its tokenizer and where its rows sit.
    """
    path = Path(path)
    if not (path.parent / MANIFEST_NAME).exists():
        raise TokenShardError(f"{path}: no {MANIFEST_NAME} beside it; `flm data inspect` reads a shard through "
                              "the manifest of its folder (the output of `flm data tokenize`)")
    shards = TokenShards(path.parent)
    first = 0
    for info in shards.manifest.shards:
        if info.name == path.name:
            break
        first += info.rows
    else:
        raise TokenShardError(f"{path}: not listed in {path.parent / MANIFEST_NAME} (an unfinished or foreign file?)")
    subsets: dict[str, dict[str, int]] = {}
    names = shards.subsets()[first:first + info.rows]
    lengths = shards.doc_lengths[first:first + info.rows]
    for name, length in zip(names.tolist(), lengths.tolist(), strict=True):
        entry = subsets.setdefault(name, {"documents": 0, "tokens": 0})
        entry["documents"] += 1
        entry["tokens"] += int(length)
    report = SourceReport(path=str(path), shards=1, documents=info.rows, tokens=info.tokens,
                          avg_tokens=round(info.tokens / info.rows, 2) if info.rows else 0.0,
                          vocab_size=shards.vocab_size, tokenizer_hash=shards.manifest.tokenizer_hash,
                          subsets=subsets)
    notes: set[str] = set()
    used = None
    if info.rows:
        explicit = Path(tokenizer_dir) if tokenizer_dir is not None else None
        used = _decode_sample(report, shards, first + min(sample_doc, info.rows - 1), explicit, max_chars, notes)
    return InspectReport(directory=str(path), tokenizer_dir=used, sources={path.parent.name: report},
                         note="; ".join(sorted(notes)))


def inspect_tokens(directory: Path | str, tokenizer_dir: Path | str | None = None, sample_doc: int = 0,
                   max_chars: int = 600) -> InspectReport:
    """Per-source documents, tokens and average length; document `sample_doc` of each source decoded.

    `directory` may also be one shard file (see `inspect_shard`).
    """
    if Path(directory).is_file():
        return inspect_shard(Path(directory), tokenizer_dir, sample_doc, max_chars)
    explicit = Path(tokenizer_dir) if tokenizer_dir is not None else None
    sources: dict[str, SourceReport] = {}
    notes: set[str] = set()
    used_tokenizer: str | None = None
    found, unfinished = shard_dirs(Path(directory))
    if unfinished:
        notes.add(f"unfinished (no manifest yet, rerun `flm data tokenize` to complete): {', '.join(unfinished)}")
    for name, path in found.items():
        shards = TokenShards(path)
        extra = shards.manifest.extra
        report = SourceReport(
            path=str(path), shards=len(shards.manifest.shards), documents=shards.num_docs, tokens=shards.num_tokens,
            avg_tokens=round(shards.num_tokens / shards.num_docs, 2) if shards.num_docs else 0.0,
            vocab_size=shards.vocab_size, tokenizer_hash=shards.manifest.tokenizer_hash,
            subsets=extra.get("subsets", {}), skipped=extra.get("skipped", {}))
        if shards.num_docs:
            used = _decode_sample(report, shards, min(sample_doc, shards.num_docs - 1), explicit, max_chars, notes)
            used_tokenizer = used or used_tokenizer
        sources[name] = report
    return InspectReport(directory=str(directory), tokenizer_dir=used_tokenizer, sources=sources,
                         note="; ".join(sorted(notes)))
