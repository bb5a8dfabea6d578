"""`flm data tokenize` throughput next to HF tokenizers' encode_batch with the same tokenizer, same run.

Corpus: the bundled sample (data/sample/raw: Pile-style jsonl.zst + WuDao-style JSON) written as
clean text (CLEAN/<source>/*.jsonl.zst, no filtering) `--copies` times over (distinct ids), so the
fixed start-up of a run (interpreter, imports, loading the tokenizer, the identity check, workers)
is paid once over ~100 MB as in a real run; or any clean corpus with --input. Per repeat, in turn:
  hf      tokenizers.Tokenizer.encode_batch(texts, add_special_tokens=False) on the texts in memory,
          batches of 1024 documents, its own thread pool on all cores: the baseline;
  flm     `flm data tokenize --workers N --json` as its own process: read zstd + JSON, encode in
          worker processes, write Arrow shards + manifest (wall time of the whole command);
  engine  flm's encoder (tiktoken) on the texts in memory, one thread: speed per core.
Once at the end, the flm command again on its finished output measures its fixed cost (start-up,
tokenizer load, identity check, resume scan), which a corpus of hundreds of GB does not notice.
Ids are checked identical: engine == hf on every document, and every shard row == hf ids + EOS.
Prints ONE JSON line: MB/s (UTF-8 text) and tokens/s of each, best of --repeats, and ratios.
On a machine shared with other work, wall time depends on their load; CPU seconds (all threads and
child processes counted) much less, so each figure also comes as MB per CPU-second, with a ratio.

    python bench/tokenize_throughput.py --tokenizer DIR [--raw data/sample/raw | --input CLEAN]
        [--copies 16] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import tokenizers
import zstandard

from flm.pipelines.clean_text import SkipLog, list_clean_sources, read_clean_file
from flm.pipelines.token_shards import TokenShards
from flm.tokenizer import ByteBPETokenizer, load_tokenizer

REPO = Path(__file__).resolve().parent.parent

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


def run_cli(clean: Path, out: Path, tokenizer: Path, workers: int) -> dict:
    """`flm data tokenize` in its own process, as a user runs it; its JSON result."""
    command = [sys.executable, "-m", "flm.cli.main", "data", "tokenize", "--input", str(clean), "--out", str(out),
               "--tokenizer", str(tokenizer), "--workers", str(workers), "--json"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"flm data tokenize failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True, help="an HF-backend tokenizer directory")
    parser.add_argument("--raw", type=Path, default=Path("data/sample/raw"))
    parser.add_argument("--input", type=Path, help="a clean corpus to use instead of --raw")
    parser.add_argument("--copies", type=int, default=16, help="times the raw sample is repeated")
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
        times: dict[str, list[float]] = {"hf": [], "flm": [], "engine": [], "startup": []}
        cpu: dict[str, list[float]] = {"hf": [], "flm": [], "engine": [], "startup": []}

        def timed(name: str, fn):  # type: ignore[no-untyped-def]
            start, start_cpu = time.perf_counter(), cpu_seconds()
            value = fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
            return value

        for _ in range(args.repeats):
            hf_ids = timed("hf", lambda: [e.ids for i in range(0, len(texts), HF_BATCH)
                                          for e in tok.hf.encode_batch(texts[i:i + HF_BATCH],
                                                                       add_special_tokens=False)])
            hf_ids = [np.asarray(ids, dtype=np.uint32) for ids in hf_ids]  # small, and not timed
            out = work / "tokens"
            shutil.rmtree(out, ignore_errors=True)
            result = timed("flm", lambda: run_cli(clean, out, args.tokenizer, args.workers))["tokenize"]  # noqa: B023
            ours = timed("engine", lambda: tok.encode_arrays(texts))
        startup = timed("startup", lambda: run_cli(clean, out, args.tokenizer, args.workers))["tokenize"]
        if startup["shards_written"] != 0:
            raise SystemExit("the rerun on finished shards wrote shards: resume is broken")
        identical_engine = all(np.array_equal(a, b) for a, b in zip(ours, hf_ids, strict=True))
        shard_ids = [shards.document(i)[:-1] for source in sorted(list_clean_sources(clean))
                     for shards in [TokenShards(out / source, tokenizer_hash=tok.content_hash)]
                     for i in range(shards.num_docs)]
        identical_shards = len(shard_ids) == len(hf_ids) and all(
            np.array_equal(a, b) for a, b in zip(shard_ids, hf_ids, strict=True))
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
            "flm_tokenize": rates("flm"), "hf_encode_batch": rates("hf"), "flm_engine_one_thread": rates("engine"),
            "ratio": round(best["hf"] / best["flm"], 2), "ratio_cpu": round(best_cpu["hf"] / best_cpu["flm"], 2),
            "ratio_engine_cpu": round(best_cpu["hf"] / best_cpu["engine"], 2),
            "flm_fixed_cost": {"seconds": round(best["startup"], 3), "cpu_seconds": round(best_cpu["startup"], 3),
                               "what": "the same command again on its finished output (all shards skipped)"},
            "target_ratio": TARGET, "identical_ids": identical_engine and identical_shards,
            "identical_engine_vs_hf": identical_engine, "identical_shards_vs_hf": identical_shards,
            "flm_reported": {k: result[k] for k in ("engine", "mb_per_s", "tokens_per_s", "seconds", "documents")},
            "workers": args.workers, "repeats": args.repeats,
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
