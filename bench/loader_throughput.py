"""Mixture loader throughput next to megatron-core's GPTDataset + BlendedDataset, same tokens, same run.

Writes one synthetic two-source corpus (log-normal document lengths, Pile-like median ~600 tokens,
random ids below vocab 100256, EOS-terminated) twice: as flm token shards and as Megatron .bin/.idx
through megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder. Both loaders blend the sources
0.7 / 0.3 into seq_len 2048 samples and are read through a torch DataLoader in the main process
(one worker, num_workers=0), micro-batch 8, over the same number of samples after a warm-up pass.
Megatron uses its prebuilt C++ helpers (helpers_cpp) and create_attention_mask=False (flm returns no
mask by default either). Prints ONE JSON line: tokens/s of each, ratio, index build times.

    python bench/loader_throughput.py [--tokens 64000000] [--batches 400] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from flm.config import load_config
from flm.pipelines.token_shards import Manifest, TokenShardWriter, documents_to_batch
from flm.train.data import Mixture
from flm.train.data.config import MixtureConfig

VOCAB = 100256
EOS = 100256 - 1
SEQ = 2048
MICRO_BATCH = 8
WEIGHTS = {"pile": 0.7, "wudao": 0.3}
DOCS_PER_BATCH = 4096


def synthetic_documents(tokens: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    docs, total = [], 0
    while total < tokens:
        lengths = np.clip(rng.lognormal(mean=6.4, sigma=1.1, size=4096), 16, 100_000).astype(np.int64)
        for length in lengths:
            doc = rng.integers(0, EOS, size=int(length), dtype=np.uint32)
            doc[-1] = EOS
            docs.append(doc)
            total += int(length)
            if total >= tokens:
                break
    return docs


def write_flm(directory: Path, docs: list[np.ndarray], source: str) -> None:
    directory.mkdir(parents=True)
    manifest = Manifest(tokenizer_hash="bench" * 8, vocab_size=VOCAB, eos_id=EOS, command="bench")
    writer = TokenShardWriter(directory / "shard-00000.arrow")
    for first in range(0, len(docs), DOCS_PER_BATCH):
        part = docs[first:first + DOCS_PER_BATCH]
        writer.write_batch(documents_to_batch(part, [str(i) for i in range(len(part))], [source] * len(part),
                                              [""] * len(part)))
    manifest.shards.append(writer.close())
    manifest.save(directory)


def write_many_documents(directory: Path, count: int, subsets: int = 20) -> None:
    """`count` short documents (4..40 tokens) spread over `subsets` subsets: an index-building load."""
    import pyarrow as pa

    from flm.pipelines.token_shards import SCHEMA
    rng = np.random.default_rng(7)
    directory.mkdir(parents=True)
    manifest = Manifest(tokenizer_hash="bench" * 8, vocab_size=VOCAB, eos_id=EOS, command="bench")
    names = np.array([f"subset-{i}" for i in range(subsets)], dtype=object)
    writer = TokenShardWriter(directory / "shard-00000.arrow")
    for part in np.array_split(np.arange(count), 16):
        lengths = rng.integers(4, 40, len(part))
        offsets = np.zeros(len(part) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = rng.integers(0, EOS, int(offsets[-1]), dtype=np.uint32)
        flat[offsets[1:] - 1] = EOS
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint32()))
        writer.write_batch(pa.record_batch([tokens, pa.array(part.astype(str)), pa.array(["many"] * len(part)),
                                            pa.array(names[rng.integers(0, subsets, len(part))])], schema=SCHEMA))
    manifest.shards.append(writer.close())
    manifest.save(directory)


def index_build_seconds(work: Path, count: int) -> dict[str, float]:
    """Cold open (index built: subsets, hold-out, streams) and first batch of a source of `count` documents."""
    directory = work / "flm" / "many"
    if not directory.exists():
        write_many_documents(directory, count)
    cfg = load_config(MixtureConfig, {"seq_len": SEQ, "cache_dir": str(work / "cache-many"), "sources": [
        {"name": "many", "path": str(directory), "subsets": {"subset-3": 2.0}}]})
    shutil.rmtree(work / "cache-many", ignore_errors=True)
    start = time.perf_counter()
    mixture = Mixture(cfg)
    opened = time.perf_counter() - start
    next(iter(mixture.train_loader(MICRO_BATCH)))
    first_batch = time.perf_counter() - start
    return {"documents": count, "open_s": round(opened, 3), "open_and_first_batch_s": round(first_batch, 3)}


def write_megatron(prefix: Path, docs: list[np.ndarray]) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    for doc in docs:
        builder.add_document(doc, [len(doc)])
    builder.finalize(f"{prefix}.idx")


def megatron_blend(prefixes: list[Path], num_samples: int, seed: int):  # type: ignore[no-untyped-def]
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer

    class Tokenizer(MegatronLegacyTokenizer):
        vocab_size = VOCAB
        eod = EOS

        vocab = inv_vocab = {}

        def tokenize(self, text: str) -> np.ndarray:
            raise NotImplementedError

    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=SEQ, blend=([str(p) for p in prefixes], list(WEIGHTS.values())),
        split="100,0,0", tokenizer=Tokenizer("synthetic"), reset_position_ids=False, reset_attention_mask=False,
        eod_mask_loss=False, create_attention_mask=False)
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [num_samples, 0, 0], lambda: True, config).build()
    return train


def timed(batches, count: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds to pull `count` batches (each must hold MICRO_BATCH samples of SEQ + 1 or SEQ tokens)."""
    iterator = iter(batches)
    start = time.perf_counter()
    for _ in range(count):
        batch = next(iterator)
        assert batch["tokens"].shape[0] == MICRO_BATCH
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64_000_000, help="corpus size in tokens (both sources)")
    parser.add_argument("--batches", type=int, default=400, help="micro-batches timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--index-docs", type=int, default=2_000_000, help="documents of the index-build test (0: skip)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the corpus here (default: a temp dir)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="flm-loader-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "done").exists():
        for seed, (name, weight) in enumerate(WEIGHTS.items()):
            docs = synthetic_documents(int(args.tokens * weight), seed)
            write_flm(work / "flm" / name, docs, name)
            (work / "megatron").mkdir(exist_ok=True)
            write_megatron(work / "megatron" / name, docs)
        (work / "done").touch()

    samples = args.batches * MICRO_BATCH
    cfg = load_config(MixtureConfig, {
        "seq_len": SEQ, "seed": 1234, "valid_fraction": 0.01, "cache_dir": str(work / "cache"),
        "sources": [{"name": n, "path": str(work / "flm" / n), "weight": w} for n, w in WEIGHTS.items()]})
    prefixes = [work / "megatron" / n for n in WEIGHTS]
    megatron_blend(prefixes, 8, seed=0)  # imports and first-use costs, outside the timings
    Mixture(dataclasses.replace(cfg, cache_dir=work / "warmup"))  # the same for flm (pyarrow's lazy imports)
    build: dict[str, list[float]] = {"flm": [], "megatron": []}
    for cold in (True, False):  # cold: caches removed, indexes built; warm: loaded from the caches
        if cold:
            shutil.rmtree(work / "cache", ignore_errors=True)
            for cache in (work / "megatron").glob("*/cache"):
                shutil.rmtree(cache)
        start = time.perf_counter()
        mixture = Mixture(cfg)
        next(iter(mixture.train_loader(MICRO_BATCH)))  # the first epoch order is built on first use
        build["flm"].append(time.perf_counter() - start)
        start = time.perf_counter()
        mega = megatron_blend(prefixes, samples * (args.repeats + 1), seed=1234)
        build["megatron"].append(time.perf_counter() - start)

    flm_times, mega_times = [], []
    for repeat in range(args.repeats + 1):  # repeat 0 warms the page cache and both indexes
        offset = repeat * samples
        ours = mixture.train_loader(MICRO_BATCH, consumed_samples=offset)
        theirs = torch.utils.data.DataLoader(torch.utils.data.Subset(mega, range(offset, offset + samples)),
                                             batch_size=MICRO_BATCH, num_workers=0)
        t_flm, t_mega = timed(ours, args.batches), timed(theirs, args.batches)
        if repeat:
            flm_times.append(t_flm)
            mega_times.append(t_mega)

    many = index_build_seconds(work, args.index_docs) if args.index_docs else None
    tokens = samples * SEQ
    flm_rate = tokens / statistics.median(flm_times)
    mega_rate = tokens / statistics.median(mega_times)
    total_tokens = sum(s.shards.num_tokens for s in mixture.sources)
    total_docs = sum(s.shards.num_docs for s in mixture.sources)
    result = {
        "bench": "loader_throughput",
        "metric": "tokens/s delivered by one worker (seq 2048, micro-batch 8, blend 0.7/0.3)",
        "flm_tokens_per_s": round(flm_rate),
        "megatron_tokens_per_s": round(mega_rate),
        "ratio": round(flm_rate / mega_rate, 2),
        "target_tokens_per_s": 20_000_000,
        "flm_index_cold_s": round(build["flm"][0], 3), "flm_index_warm_s": round(build["flm"][1], 3),
        "megatron_index_cold_s": round(build["megatron"][0], 3),
        "megatron_index_warm_s": round(build["megatron"][1], 3),
        "flm_index_many_docs": many,
        "corpus": {"tokens": total_tokens, "documents": total_docs, "sources": list(WEIGHTS)},
        "timed_samples_per_repeat": samples, "repeats": args.repeats,
        "flm_s": [round(t, 4) for t in flm_times], "megatron_s": [round(t, 4) for t in mega_times],
        "baseline": "megatron-core GPTDataset + BlendedDataset (helpers_cpp), torch DataLoader num_workers=0",
        "megatron_core": _version("megatron-core"), "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "command": " ".join(["python", *sys.argv]),
    }
    print(json.dumps(result))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def _version(package: str) -> str:
    from importlib.metadata import version
    return version(package)


if __name__ == "__main__":
    main()
