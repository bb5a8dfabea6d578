"""Exact and MinHash dedup on datatrove's stages, with two additions of ours.

- Signature steps that pass documents on: datatrove's signature steps end a pipeline, but ours
  computes exact and MinHash signatures and writes the filtered documents in the same pass.
- Character shingles for MinHash: datatrove shingles words from a word tokenizer, which says
  nothing useful about Chinese and misses near duplicates with small character edits.
"""

from __future__ import annotations

import contextlib
import unicodedata

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig as DTExactDedupConfig
from datatrove.pipeline.dedup.exact_dedup import ExactDedupSignature, ExactFindDedups
from datatrove.pipeline.dedup.minhash import MinhashConfig as DTMinhashConfig
from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupSignature, _mersenne_prime
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.batching import batched
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import NUMBERS_PATTERN, PUNCTUATION_TRANS, TextNormConfig, simplify_text
from datatrove.utils.typeshelper import ExtensionHelperSD, StatHints

from flm.pipelines.config import MinhashConfig
from flm.pipelines.prepare.accounting import record_drop
from flm.pipelines.prepare.batching import BATCH_DOCS
from flm.pipelines.prepare.filters import CJK
from flm.pipelines.prepare.ngrams import splitmix64

HASH = HashConfig(precision=64, hash_fc="sha1")
"""datatrove's default xxhash config fails with xxhash 4.x ("Strings must be encoded before hashing")."""

EXACT_REASON = "dedup/exact"
MINHASH_REASON = "dedup/minhash"
SIGNATURE_CHUNK = 512
"""Shingles hashed at once: CHUNK x hashes x 8 bytes (480 KB at 120 hashes) stays in a core's L2 cache through the
arithmetic's passes; 4096 spilled it and took 1.4x the CPU on the sample, for the same signatures."""


def dedup_content(doc: Document) -> str:
    """What exact dedup compares: the normalised text."""
    return doc.text


def exact_config() -> DTExactDedupConfig:
    return DTExactDedupConfig(content_getter=dedup_content, hash_config=HASH)


def minhash_config(cfg: MinhashConfig) -> DTMinhashConfig:
    return DTMinhashConfig(n_grams=cfg.n_grams, num_buckets=cfg.num_buckets,
                           hashes_per_bucket=cfg.hashes_per_bucket, seed=cfg.seed, hash_config=HASH)


class PassThroughExactSignature(ExactDedupSignature):
    """datatrove's exact-dedup stage 1, passing every document on to the next step."""

    name = "💥 exact-dedup signatures (pass-through)"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        signatures = []
        for doc_idx, doc in enumerate(data):
            with self.track_time():
                signatures.extend(self.get_hashes(doc, doc_idx))
            self.stat_update("total")
            yield doc
        self.save_hashes(rank, signatures)


class NonspacingMarks(dict[int, int | None]):
    """A `str.translate` table deleting every combining mark (category Mn), filled as characters are met.

    Listing all of them up front walks the 1.1M code points of Unicode: 1.5 s of CPU in every
    process that signs a document; the characters of real text are a few thousand.
    """

    def __missing__(self, cp: int) -> int | None:
        value = None if unicodedata.category(chr(cp)) == "Mn" else cp
        self[cp] = value
        return value


NONSPACING_MARKS = NonspacingMarks()


def simplify(text: str, config: TextNormConfig) -> str:
    """datatrove's `simplify_text`, with its per-character diacritics pass done by `str.translate`.

    The same string out (tests compare them); the generator over `unicodedata.category` was 60% of
    MinHash's text preparation. Weekday and month names (off in datatrove's default) go the slow way.
    """
    if config.norm_weekdays or config.norm_monthnames:
        return simplify_text(text, config)
    if config.lowercase:
        text = text.lower()
    if config.norm_numbers:
        text = NUMBERS_PATTERN.sub("0", text)
    if config.remove_punctuation:
        text = text.translate(PUNCTUATION_TRANS)
    if config.norm_whitespace:  # str.split's whitespace is the regex's \s (tests/test_prepare_speed.py): 5x faster
        text = " ".join(text.split())
    if config.norm_unicode_diacritics:
        text = unicodedata.normalize("NFD", text)
        if not text.isascii():
            text = text.translate(NONSPACING_MARKS)
    return text.strip()


MERSENNE_BITS = np.uint64(61)


def mod_mersenne(x: np.ndarray) -> np.ndarray:
    """x % (2**61 - 1) for uint64 x, in place, without a division: x = hi * 2**61 + lo, and 2**61 = 1 (mod p)."""
    hi = x >> MERSENNE_BITS
    np.bitwise_and(x, _mersenne_prime, out=x)
    x += hi  # < 2p, and >= p only where x & p >= p - 7: about once in 2**58 values
    if x.size and x.max() >= _mersenne_prime:  # one pass to rule it out, instead of a compare and a masked subtract
        np.subtract(x, _mersenne_prime, out=x, where=x >= _mersenne_prime)
    return x


def char_shingles(text: str, n: int) -> np.ndarray:
    """Hashes of the character n-grams of `text` (uint64, shape (N, 1)), vectorised; repeats are harmless."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size == 0:
        return np.zeros((0, 1), dtype=np.uint64)
    n = min(n, codes.size)
    count = codes.size - n + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for k in range(n):
        hashes = hashes * np.uint64(0x100000001B3) + codes[k:k + count]
    return splitmix64(hashes).reshape(-1, 1)


def is_cjk(text: str, threshold: float = 0.3) -> bool:
    sample = text[:2000]
    return bool(sample) and len(CJK.findall(sample)) / len(sample) >= threshold


class ShingledMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash stage 1 with character shingles (`char`, or `auto` for CJK-heavy text)."""

    name = "🎯 MinHash signatures"

    def __init__(self, output_folder: str, cfg: MinhashConfig) -> None:
        super().__init__(output_folder, config=minhash_config(cfg))
        self.shingle = cfg.shingle

    def get_shingles(self, text: str) -> np.ndarray:
        if self.shingle == "word" or (self.shingle == "auto" and not is_cjk(text)):
            return super().get_shingles(text)
        return char_shingles(simplify(text, self.config.norm_config), self.config.n_grams)

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        """The num_hashes minima of the permuted shingle hashes (datatrove's arithmetic, in chunks)."""
        a, b = self.parameters
        hash_cfg = self.config.hash_config
        mins = np.full(self.num_hashes, np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, shingles.shape[0], SIGNATURE_CHUNK):
            phv = shingles[start:start + SIGNATURE_CHUNK] * a
            phv += b
            phv = mod_mersenne(phv)
            if hash_cfg.precision == 32:
                phv = np.bitwise_and(phv, hash_cfg.max)
            mins = np.minimum(mins, phv.min(axis=0))
        return mins.astype(hash_cfg.np_dtype)

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        return [x.tolist() for x in np.split(self.signature(shingles), self.config.num_buckets)]


def signature_dtype(config: DTMinhashConfig) -> np.dtype:
    """One record of a datatrove MinHash bucket file: the bucket's hashes, then the document's index."""
    fmt = config.hash_config.struct_format
    return np.dtype([(f"h{i}", f"<{fmt}") for i in range(config.hashes_per_bucket)] + [("doc", "<u4")])


class PassThroughMinhashSignature(ShingledMinhashSignature):
    """MinHash stage 1 that passes every document on, so it signs in the filter pass, beside exact dedup.

    Writes datatrove's bucket files (`bucket_NNN/<rank>.minhash.sig`: per document its hashes of the
    bucket and its index, sorted), a batch of documents at a time instead of a struct per bucket and
    document. Documents an exact-dedup pass drops later are taken out of these files by
    `ExactFindAndPrune` before MinHash compares them, so the index is the one in the filtered copy.
    """

    name = "🎯 MinHash signatures (pass-through)"
    BATCH = 4096

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        names = [f"bucket_{bi:03d}/{rank:05d}.minhash.sig" for bi in range(self.config.num_buckets)]
        files = [self.output_folder.open(name, mode="wb") for name in names]
        sigs: list[np.ndarray] = []
        ids: list[int] = []
        try:
            doc_idx = 0
            for batch in batched(data, BATCH_DOCS):
                with self.track_time():
                    for doc in batch:
                        shingles = self.get_shingles(doc.text)
                        if shingles.size:
                            sigs.append(self.signature(shingles))
                            ids.append(doc_idx)
                        doc_idx += 1
                    if len(ids) >= self.BATCH:
                        self._write(files, sigs, ids)
                        sigs, ids = [], []
                self.stat_update("total", value=len(batch))
                yield from batch
            self._write(files, sigs, ids)
        finally:
            for fh in files:
                fh.close()
        with self.track_time():
            dtype = signature_dtype(self.config)
            for name in names:
                with self.output_folder.open(name, mode="rb") as fh:
                    records = np.frombuffer(fh.read(), dtype=dtype).copy()
                records.sort(order=dtype.names)
                with self.output_folder.open(name, mode="wb") as fh:
                    fh.write(records.tobytes())

    def _write(self, files: list, sigs: list[np.ndarray], ids: list[int]) -> None:
        if not ids:
            return
        per_bucket = np.stack(sigs).reshape(len(ids), self.config.num_buckets, self.config.hashes_per_bucket)
        records = np.empty(len(ids), dtype=signature_dtype(self.config))
        records["doc"] = ids
        for bi, fh in enumerate(files):
            for i in range(self.config.hashes_per_bucket):
                records[f"h{i}"] = per_bucket[:, bi, i]
            fh.write(records.tobytes())


BUCKET_TASK_BYTES = 256 * 2**20
"""Raw input per MinHash bucket task: a small corpus compares all its buckets in one task (each task costs
a process set-up and its own logs), a large one gets a task per bucket."""


def bucket_tasks(input_bytes: int, num_buckets: int) -> int:
    """Tasks of the MinHash bucket stage, from the input's size (recorded in run.json, so a resume agrees)."""
    return max(1, min(num_buckets, -(-input_bytes // BUCKET_TASK_BYTES)))


class GroupedMinhashBuckets(MinhashDedupBuckets):
    """datatrove's MinHash stage 2 with any number of tasks up to one per bucket: task r compares the buckets
    r, r + tasks, ...; each exactly as datatrove's task for that bucket would."""

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for bucket in range(rank, self.config.num_buckets, world_size):
            super().run(data, bucket, self.config.num_buckets)


def exact_duplicates(folder: DataFolder, rank: int) -> np.ndarray:
    """Indices (sorted) of the documents of task `rank` that datatrove's ExactFindDedups marked duplicates."""
    names = [f"{sub}/{rank:05d}{ExtensionHelperSD.stage_2_duplicates}"
             for sub in folder.list_files(include_directories=True, recursive=False)]
    found = []
    for name in names:
        if folder.exists(name):
            with folder.open(name, "rb") as fh:
                found.append(np.frombuffer(fh.read(), dtype="<u4"))
    return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype="<u4")


class ExactFindAndPrune(ExactFindDedups):
    """datatrove's exact-dedup stage 2, then the exact duplicates' MinHash signatures are deleted (ids and hashes
    only: no document is read again), so MinHash compares only what exact dedup keeps, as if it had
    signed a second pass over the exact-deduplicated copy."""

    def __init__(self, data_folder: str, output_folder: str, minhash_folder: str | None, tasks: int,
                 minhash: DTMinhashConfig | None = None) -> None:
        super().__init__(data_folder, output_folder, exact_config())
        self.minhash_folder = get_datafolder(minhash_folder) if minhash_folder else None
        self.minhash = minhash
        self.tasks = tasks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        super().run(data, rank, world_size)
        if self.minhash_folder is None or self.minhash is None:
            return
        with self.track_time():
            for task in range(self.tasks):
                dups = exact_duplicates(self.output_folder, task)
                if dups.size == 0:
                    continue
                for bi in range(self.minhash.num_buckets):
                    name = f"bucket_{bi:03d}/{task:05d}.minhash.sig"
                    with self.minhash_folder.open(name, "rb") as fh:
                        raw = fh.read()
                    records = np.frombuffer(raw, dtype=signature_dtype(self.minhash))
                    with self.minhash_folder.open(name, "wb") as fh:
                        fh.write(records[~np.isin(records["doc"], dups)].tobytes())


class DedupFilter(PipelineStep):
    """Drops what exact dedup and MinHash marked, by index in the filtered copy that both signed in one pass.

    datatrove's two filters each count indices on the stream they receive, so they cannot follow each
    other; this one reads both lists and counts every drop under its reason, with its audit writer.
    """

    type = "🫂 - DEDUP"
    name = "🫂 exact + MinHash dedup filter"

    def __init__(self, exact_folder: str | None, minhash_folder: str | None,
                 writers: dict[str, DiskWriter | None]) -> None:
        super().__init__()
        self.exact_folder = get_datafolder(exact_folder) if exact_folder else None
        self.minhash_folder = get_datafolder(minhash_folder) if minhash_folder else None
        self.writers = writers

    def drops(self, rank: int) -> dict[int, str]:
        """Index in this task's filtered copy -> reason, for every document dedup removes."""
        out: dict[int, str] = {}
        if self.minhash_folder is not None and self.minhash_folder.isfile(f"{rank:06d}.remove"):
            with self.minhash_folder.open(f"{rank:06d}.remove", "rb") as fh:
                out.update(dict.fromkeys(np.frombuffer(fh.read(), dtype="<u4").tolist(), MINHASH_REASON))
        if self.exact_folder is not None:
            out.update(dict.fromkeys(exact_duplicates(self.exact_folder, rank).tolist(), EXACT_REASON))
        return out

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        drops = self.drops(rank)
        with contextlib.ExitStack() as stack:
            writers = {reason: stack.enter_context(w) for reason, w in self.writers.items() if w is not None}
            for idx, doc in enumerate(data):
                self.stat_update(StatHints.total)
                reason = drops.get(idx)
                if reason is None:
                    self.stat_update(StatHints.forwarded)
                    yield doc
                    continue
                self.stat_update(StatHints.dropped)
                record_drop(self, doc, reason)
                if reason in writers:
                    writers[reason].write(doc, rank=rank)
