"""Exact and MinHash dedup on datatrove's stages, with two additions of ours.

- Signature steps that pass documents on: datatrove's signature steps end a pipeline, but ours
  computes exact and MinHash signatures and writes the filtered documents in the same pass.
- Character shingles for MinHash: datatrove shingles words from a word tokenizer, which says
  nothing useful about Chinese and misses near duplicates with small character edits.
"""

from __future__ import annotations

import unicodedata

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig as DTExactDedupConfig
from datatrove.pipeline.dedup.exact_dedup import ExactDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig as DTMinhashConfig
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature, _mersenne_prime
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import NUMBERS_PATTERN, PUNCTUATION_TRANS, WHITESPACE_PATTERN, TextNormConfig, simplify_text

from flm.pipelines.config import MinhashConfig
from flm.pipelines.prepare.filters import CJK
from flm.pipelines.prepare.ngrams import splitmix64

HASH = HashConfig(precision=64, hash_fc="sha1")
"""datatrove's default xxhash config fails with xxhash 4.x ("Strings must be encoded before hashing")."""

EXACT_REASON = "dedup/exact"
MINHASH_REASON = "dedup/minhash"
SIGNATURE_CHUNK = 4096
"""Shingles hashed at once: bounds memory to CHUNK x hashes x 8 bytes for book-length documents."""


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
    if config.norm_whitespace:
        text = WHITESPACE_PATTERN.sub(" ", text.strip())
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
    x += hi  # < 2p
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

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
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
        return [x.tolist() for x in np.split(mins.astype(hash_cfg.np_dtype), self.config.num_buckets)]
