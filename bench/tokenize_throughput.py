"""`flm data tokenize` throughput next to HF tokenizers' encode_batch with the same tokenizer, same run.

Corpus: the bundled sample (data/sample/raw: Pile-style jsonl.zst + WuDao-style JSON) written as
clean text (CLEAN/<source>/*.jsonl.zst, no filtering) `--copies` times over (distinct ids), so the
fixed start-up of a run (loading the tokenizer, the identity check, spawning workers) is paid once
over tens of MB as in a real run; or any clean corpus with --input. Per repeat, timed on the same
texts, in turn:
  hf      tokenizers.Tokenizer.encode_batch(texts, add_special_tokens=False), batches of 1024
          documents, its own thread pool on all cores (the baseline);
  encode  flm's tokenizer.encode_batch(texts, num_threads=workers) (tiktoken, in memory);
  flm     tokenize_corpus(): what `flm data tokenize` runs: read zstd + JSON, encode in worker
          processes, write Arrow shards + manifest (wall time of the whole call).
Ids are checked identical: encode == hf on every document, and every shard row == hf ids + EOS.
Prints ONE JSON line: MB/s (UTF-8 text bytes) and tokens/s of each, best of --repeats, and ratios.
On a machine shared with other work, wall time depends on their load; CPU seconds (all threads and
worker processes counted) do much less, so each figure also comes as MB per CPU-second, with a ratio.

    python bench/tokenize_throughput.py --tokenizer DIR [--raw data/sample/raw | --input CLEAN]
        [--copies 8] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson
import tokenizers
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.clean_text import SkipLog, list_clean_sources, read_clean_file  # noqa: E402
from pipelines.token_shards import TokenShards  # noqa: E402
from pipelines.tokenize import tokenize_corpus  # noqa: E402
from tokenizer import ByteBPETokenizer, load_tokenizer  # noqa: E402

TARGET = 3.5
HF_BATCH = 1024


def clean_from_raw(raw: Path, out: Path, copies: int) -> None:
    """The raw sample as clean text (one shard per source per copy), ids made unique per copy."""
    pile: list[dict] = []
    for path in sorted((raw / "pile").glob("*.jsonl.zst")):
        data = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
        for i, line in enumerate(data.splitlines()):
            doc = orjson.loads(line)
            pile.append({"text": doc["text"], "id": f"{path.name}:{i}", "meta": doc.get("meta", {})})
    wudao: list[dict] = []
    for path in sorted((raw / "wudao").glob("*.json")):
        for doc in json.loads(path.read_text(encoding="utf-8")):
            wudao.append({"text": doc["content"], "id": str(doc["id"]),
                          "meta": {"dataType": doc.get("dataType", ""), "title": doc.get("title", "")}})
    for source, docs in (("pile", pile), ("wudao", wudao)):
        (out / source).mkdir(parents=True)
        for c in range(copies):
            lines = b"".join(orjson.dumps({**d, "id": f"{d['id']}#{c}", "source": source}) + b"\n" for d in docs)
            (out / source / f"{c:05d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(lines))


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True, help="an HF-backend tokenizer directory")
    parser.add_argument("--raw", type=Path, default=Path("data/sample/raw"))
    parser.add_argument("--input", type=Path, help="a clean corpus to use instead of --raw")
    parser.add_argument("--copies", type=int, default=8, help="times the raw sample is repeated")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="flm-tokbench-"))
    try:
        clean = args.input
        if clean is None:
            clean = work / "clean"
            clean_from_raw(args.raw, clean, args.copies)
        texts = [doc.text for source, paths in list_clean_sources(clean).items() for path in paths
                 for doc in read_clean_file(path, source, SkipLog())]
        text_bytes = sum(len(t.encode("utf-8")) for t in texts)
        tok = load_tokenizer(args.tokenizer)
        if not isinstance(tok, ByteBPETokenizer):
            raise SystemExit("the benchmark compares against HF tokenizers: give an hf-backend tokenizer")
        times: dict[str, list[float]] = {"hf": [], "encode": [], "flm": []}
        cpu: dict[str, list[float]] = {"hf": [], "encode": [], "flm": []}
        for r in range(args.repeats):
            start, start_cpu = time.perf_counter(), cpu_seconds()
            hf_ids = [e.ids for i in range(0, len(texts), HF_BATCH)
                      for e in tok.hf.encode_batch(texts[i:i + HF_BATCH], add_special_tokens=False)]
            times["hf"].append(time.perf_counter() - start)
            cpu["hf"].append(cpu_seconds() - start_cpu)
            start, start_cpu = time.perf_counter(), cpu_seconds()
            ours = tok.encode_batch(texts, num_threads=args.workers)
            times["encode"].append(time.perf_counter() - start)
            cpu["encode"].append(cpu_seconds() - start_cpu)
            out = work / f"tokens-{r}"
            start_cpu = cpu_seconds()
            result = tokenize_corpus(clean, out, args.tokenizer, workers=args.workers, command="bench")
            times["flm"].append(result.seconds)
            cpu["flm"].append(cpu_seconds() - start_cpu)
        identical_encode = ours == hf_ids
        shard_ids = []
        for source in sorted(list_clean_sources(clean)):
            shards = TokenShards(out / source, tokenizer_hash=tok.content_hash)
            shard_ids.extend(shards.document(i)[:-1].tolist() for i in range(shards.num_docs))
        identical_shards = shard_ids == hf_ids
        tokens = sum(map(len, hf_ids))
        best = {k: min(v) for k, v in times.items()}
        best_cpu = {k: min(v) for k, v in cpu.items()}

        def rates(name: str) -> dict:
            seconds = best[name]
            return {"mb_per_s": round(text_bytes / 1e6 / seconds, 2), "tokens_per_s": round(tokens / seconds),
                    "seconds": round(seconds, 3), "cpu_seconds": round(best_cpu[name], 3),
                    "mb_per_cpu_s": round(text_bytes / 1e6 / best_cpu[name], 2)}

        line = {
            "bench": "tokenize_throughput",
            "metric": "UTF-8 text MB/s and tokens/s, best of repeats",
            "flm_tokenize": rates("flm"), "flm_encode_in_memory": rates("encode"), "hf_encode_batch": rates("hf"),
            "ratio": round(best["hf"] / best["flm"], 2), "ratio_cpu": round(best_cpu["hf"] / best_cpu["flm"], 2),
            "ratio_encode_in_memory": round(best["hf"] / best["encode"], 2),
            "target_ratio": TARGET, "identical_ids": identical_encode and identical_shards,
            "identical_encode_vs_hf": identical_encode, "identical_shards_vs_hf": identical_shards,
            "engine": result.engine, "workers": args.workers, "repeats": args.repeats,
            "times_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "cpu_s": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
            "corpus": {"input": str(args.input or args.raw), "copies": None if args.input else args.copies,
                       "documents": len(texts), "text_bytes": text_bytes, "tokens": tokens,
                       "bytes_per_token": round(text_bytes / tokens, 3)},
            "tokenizer": {"dir": str(args.tokenizer), "vocab_size": tok.vocab_size, "hash": tok.content_hash[:16],
                          "trained_on": tok.meta.corpus.get("input", "")},
            "baseline": f"tokenizers {tokenizers.__version__} encode_batch, batches of {HF_BATCH}",
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "command": shlex.join(["python", *sys.argv]),
        }
        print(json.dumps(line, ensure_ascii=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
