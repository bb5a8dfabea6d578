"""Train the full-size (100256) tokenizer on a local corpus large enough for it, then tokenize that corpus.

The corpus is this machine's documentation, written as clean text (CLEAN/<lang>/*.jsonl.zst):
every readable file under /usr/share/doc and /usr/share/debian-reference (gzip and HTML unpacked,
binary and non-UTF-8 files left out; the Debian handbook ships in ~30 languages, zh-CN and ja-JP
among them), the Chinese gettext catalogs of /usr/share/locale/zh_*, and /usr/share/games/fortunes.
Documents with at least 25% CJK characters go to `zh`, the rest to `en`. It is the stand-in for the
prepared Pile + WuDao until those exist; it proves that `--vocab 100256` trains exactly and that the
fast path stays bit-identical at that size, not the quality of the vocabulary.

Prints ONE JSON line: corpus size, training time and peak memory (of this process, where training
runs), vocab and merges reached, and the throughput of tokenizing the whole corpus with it.

    python bench/tokenizer_vocab.py --work /tmp/flm-vocab [--vocab 100256] [--sample-mb 1024] [--workers 2]
"""

from __future__ import annotations

import argparse
import gettext
import gzip
import json
import os
import re
import resource
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import orjson
import zstandard

from flm.pipelines.tokenize import tokenize_corpus, train_from_clean
from flm.tokenizer import TrainConfig

DOC_ROOTS = (Path("/usr/share/doc"), Path("/usr/share/debian-reference"), Path("/usr/share/games/fortunes"))
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
SHARD_BYTES = 32 << 20
"""Text per clean file: these documents average ~30 kB, so 16384 per file would make one giant file."""
MAX_FILE = 50 << 20


class _Text(HTMLParser):
    """Visible text of an HTML page (scripts and styles dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _file_text(path: Path) -> str | None:
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE or path.suffix == ".dat":
        return None
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None
    if "\x00" in text:
        return None
    if path.name.removesuffix(".gz").endswith((".html", ".htm")):
        parser = _Text()
        parser.feed(text)
        text = re.sub(r"\n\s*\n+", "\n\n", "".join(parser.parts))
    return text if text.strip() else None


def local_documents() -> Iterator[tuple[str, str]]:
    """(name, text) of every usable local document, in sorted path order."""
    for root in DOC_ROOTS:
        for path in sorted(root.rglob("*")):
            text = _file_text(path)
            if text is not None:
                yield str(path), text
    for path in sorted(Path("/usr/share/locale").glob("zh_*/LC_MESSAGES/*.mo")):
        try:
            with path.open("rb") as fh:
                catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
        except (OSError, UnicodeDecodeError):
            continue
        text = "\n".join(v for v in catalog.values() if isinstance(v, str))
        if text.strip():
            yield str(path), text


def build_corpus(out: Path) -> dict:
    """Write the local documents as CLEAN/<lang>/NNNNN.jsonl.zst; counts per language."""
    writers: dict[str, list[bytes]] = {"en": [], "zh": []}
    pending = dict.fromkeys(writers, 0)
    counts = {lang: {"documents": 0, "bytes": 0, "files": 0} for lang in writers}

    def flush(lang: str) -> None:
        (out / lang).mkdir(parents=True, exist_ok=True)
        path = out / lang / f"{counts[lang]['files']:05d}.jsonl.zst"
        path.write_bytes(zstandard.ZstdCompressor(level=3).compress(b"".join(writers[lang])))
        counts[lang]["files"] += 1
        writers[lang].clear()
        pending[lang] = 0

    for name, text in local_documents():
        cjk = len(CJK.findall(text))
        lang = "zh" if cjk >= 0.25 * len(text.replace(" ", "")) else "en"
        writers[lang].append(orjson.dumps({"text": text, "id": name, "source": lang, "meta": {}}) + b"\n")
        counts[lang]["documents"] += 1
        counts[lang]["bytes"] += len(text.encode("utf-8"))
        pending[lang] += len(writers[lang][-1])
        if pending[lang] >= SHARD_BYTES:
            flush(lang)
    for lang in writers:
        if writers[lang]:
            flush(lang)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--vocab", type=int, default=100256)
    parser.add_argument("--sample-mb", type=float, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    clean, tok_dir, tokens = args.work / "clean", args.work / f"tokenizer-{args.vocab}", args.work / "tokens"

    counts = args.work / "corpus.json"
    start = time.perf_counter()
    if not counts.exists():  # the corpus is built once per --work; tokenizer and shards are made afresh
        shutil.rmtree(clean, ignore_errors=True)
        counts.write_text(json.dumps({**build_corpus(clean), "build_s": round(time.perf_counter() - start, 1)}))
    corpus = json.loads(counts.read_text())
    shutil.rmtree(tok_dir, ignore_errors=True)
    shutil.rmtree(tokens, ignore_errors=True)
    start = time.perf_counter()
    meta = train_from_clean(clean, tok_dir, TrainConfig(vocab_size=args.vocab, sample_bytes=int(args.sample_mb * 1e6)))
    train_s = time.perf_counter() - start
    result = tokenize_corpus(clean, tokens, tok_dir, workers=args.workers, command="bench/tokenizer_vocab.py")
    line = {
        "bench": "tokenizer_vocab",
        "vocab_requested": args.vocab, "vocab_size": meta.vocab_size, "merges": meta.trainer["merges"],
        "special_ids": meta.special_ids, "content_hash": meta.content_hash[:16],
        "corpus": corpus, "sample": {k: meta.corpus[k] for k in ("sample_docs", "sample_bytes", "seen_docs",
                                                                  "seen_bytes", "sources")},
        "train_s": round(train_s, 1),
        "tokenize": {"engine": result.engine, "fallback_reason": result.fallback_reason,
                     "documents": result.documents, "tokens": result.tokens, "text_bytes": result.text_bytes,
                     "bytes_per_token": round(result.text_bytes / result.tokens, 3),
                     "seconds": round(result.seconds, 1),
                     "mb_per_s": round(result.mb_per_s, 2), "tokens_per_s": round(result.tokens_per_s),
                     "skipped": result.skipped, "per_source": {k: v.__dict__ for k, v in result.sources.items()}},
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "workers": args.workers, "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "command": shlex.join(["python", *sys.argv]),
    }
    print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
