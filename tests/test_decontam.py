"""Benchmark decontamination: planted evaluation items found and removed, near misses kept, the report right.

A small generated raw corpus (English Pile lines, Chinese WuDao records) has benchmark items planted
inside some documents (with other case and punctuation around them) and shorter fragments of them
in others; three evaluation files (JSONL, CSV, Parquet) go through one prepare run.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from bilingual_text import chinese, english
from datatrove.utils.text import PUNCTUATION_TRANS

from flm.config import find_config, load_config
from flm.pipelines.config import BenchmarkConfig, DecontamConfig, PipelineConfig
from flm.pipelines.prepare import PrepareResult, prepare
from flm.pipelines.prepare.decontam import (
    META_FILE,
    SEPARATOR,
    DecontamError,
    DecontamIndex,
    ensure_index,
    read_items,
    simplify,
    text_units,
)
from flm.pipelines.prepare.filters import CJK

EN_ITEMS = [
    {"qid": "q1", "question": "Which river flows through the old harbour city before it reaches the northern sea "
                              "after passing seven bridges and two locks?", "answer": "The Elbe"},
    {"qid": "q2", "question": "A farmer plants twelve rows of apple trees with nine trees in every row and sells "
                              "a third of them; how many trees remain in his orchard?", "answer": "72"},
    {"qid": "q3", "question": "Name the composer who wrote nine symphonies, lost his hearing in later life and "
                              "still conducted the premiere of the last one in Vienna.", "answer": "Beethoven"},
]
ZH_ITEMS = [
    ("z1", "春眠不觉晓处处闻啼鸟夜来风雨声花落知多少这首诗的作者是谁", "孟浩然"),
    ("z2", "长方形的周长是三十厘米一条边长六厘米那么它的面积是多少平方厘米", "五十四"),
]


def pile_line(text: str, doc_id: str, subset: str = "Wikipedia (en)") -> bytes:
    return orjson.dumps({"text": text, "id": doc_id, "meta": {"pile_set_name": subset}})


def make_corpus(root: Path) -> dict[str, set[str]]:
    """Raw pile/ and wudao/ with planted items; returns the ids that must be removed and kept."""
    rng = random.Random(21)
    lines = [pile_line(english(rng, 14), f"en{i}") for i in range(12)]
    q1 = EN_ITEMS[0]["question"]
    lines += [
        pile_line(english(rng, 5) + " QUOTE: " + q1.upper().replace(",", ";") + " " + english(rng, 5), "has_q1"),
        pile_line(english(rng, 4) + "\n" + EN_ITEMS[2]["question"] + "\n" + english(rng, 4), "has_q3", "ArXiv"),
        pile_line(english(rng, 5) + " " + " ".join(q1.split()[:10]) + " " + english(rng, 5), "ten_words_of_q1"),
    ]
    (root / "pile").mkdir(parents=True)
    (root / "pile" / "00.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))
    records = [{"id": f"zh{i}", "dataType": "新闻", "title": f"标题{i}", "content": chinese(rng, 12)}
               for i in range(10)]
    z1 = ZH_ITEMS[0][1]
    records += [
        {"id": "has_z1", "dataType": "文学", "title": "诗", "content": chinese(rng, 4) + "春眠不觉晓，处处闻啼鸟。"
         "夜来风雨声，花落知多少。这首诗的作者是谁？" + chinese(rng, 4)},
        {"id": "part_of_z1", "dataType": "文学", "title": "诗", "content": chinese(rng, 4) + z1[:12] + chinese(rng, 4)},
    ]
    (root / "wudao").mkdir(parents=True)
    (root / "wudao" / "part-0000.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return {"removed": {"has_q1", "has_q3", "has_z1"}, "kept_candidates": {"ten_words_of_q1", "part_of_z1"}}


def write_benchmarks(folder: Path) -> list[BenchmarkConfig]:
    folder.mkdir(parents=True)
    with (folder / "trivia.jsonl").open("w", encoding="utf-8") as fh:
        for item in EN_ITEMS:
            fh.write(json.dumps(item) + "\n")
    with (folder / "cmath.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "题目", "答案"])
        writer.writerows(ZH_ITEMS)
    rng = random.Random(5)
    pq.write_table(pa.table({"text": [english(rng, 3) for _ in range(200)]}), folder / "other.parquet")
    return [BenchmarkConfig(name="trivia", path=str(folder / "trivia.jsonl"), fields=["question", "answer"],
                            id_field="qid"),
            BenchmarkConfig(name="cmath", path=str(folder / "cmath.csv"), fields=["题目"], id_field="id",
                            language="zh"),
            BenchmarkConfig(path=str(folder / "other.parquet"))]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, set[str]], Path, PrepareResult]:
    root = tmp_path_factory.mktemp("decontam")
    planted = make_corpus(root / "raw")
    benchmarks = write_benchmarks(root / "eval")
    configs = []
    for source in ("pile", "wudao"):
        cfg = load_config(PipelineConfig, find_config(source, "pipelines"),
                          ["executor.workers=1", "quality.enabled=false", "langid.enabled=false"])
        cfg.decontam = DecontamConfig(enabled=True, benchmarks=benchmarks)
        configs.append(cfg)
    return planted, root / "clean", prepare(configs, root / "raw", root / "clean")


def kept_ids(clean: Path, source: str) -> set[str]:
    ids = set()
    for path in (clean / source).glob("*.jsonl.zst"):
        for line in zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().splitlines():
            ids.add(orjson.loads(line)["id"])
    return ids


def test_planted_items_are_removed_and_counted_per_benchmark(run) -> None:
    planted, clean, result = run
    pile, wudao = result.sources["pile"].totals, result.sources["wudao"].totals
    assert pile.dropped.get("decontam/trivia") == 2
    assert wudao.dropped.get("decontam/cmath") == 1
    assert not any(k.startswith("decontam/other") for k in {**pile.dropped, **wudao.dropped})
    kept = kept_ids(clean, "pile") | kept_ids(clean, "wudao")
    assert not planted["removed"] & kept
    assert planted["kept_candidates"] <= kept  # fragments shorter than one n-gram are not contamination
    assert result.sources["pile"].balanced and result.sources["wudao"].balanced


def test_report_names_items_sources_and_subsets(run) -> None:
    _, clean, _ = run
    report = json.loads((clean / "pile" / "decontamination.json").read_text(encoding="utf-8"))
    trivia = report["benchmarks"]["trivia"]
    assert report["source"] == "pile" and report["items"] == {"trivia": 3, "cmath": 2, "other": 200}
    assert trivia["items_found"] == 2 and set(trivia["items"]) == {"q1", "q3"}
    assert trivia["items"]["q3"]["subsets"] == {"ArXiv": 1}
    assert trivia["docs_removed_by_subset"] == {"Wikipedia (en)": 1, "ArXiv": 1}
    zh = json.loads((clean / "wudao" / "decontamination.json").read_text(encoding="utf-8"))
    assert zh["benchmarks"]["cmath"]["items"]["z1"]["subsets"] == {"文学": 1}
    stats = json.loads((clean / "stats.json").read_text(encoding="utf-8"))
    assert stats["dropped"]["decontam/trivia"] == 2


def test_a_missing_field_names_the_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    path.write_text('{"question": "a b c", "answer": "d"}\n{"answer": "only an answer"}\n', encoding="utf-8")
    with pytest.raises(DecontamError, match=r"bench\.jsonl:2: no field 'question'"):
        list(read_items(BenchmarkConfig(path=str(path), fields=["question", "answer"])))
    with pytest.raises(DecontamError, match="does not exist"):
        list(read_items(BenchmarkConfig(path=str(tmp_path / "missing.csv"))))


def test_short_items_match_whole_and_tiny_ones_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "short.jsonl"
    items = ["one two three four five six seven eight nine", "too short"]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in items), encoding="utf-8")
    index, stats = DecontamIndex.build(DecontamConfig(benchmarks=[BenchmarkConfig(path=str(path))]))
    assert stats.items == {"short": 2} and stats.skipped_short == {"short": 1}
    assert index.matches("Say: One, two, three, four, five, six, seven, eight, nine! Done.") == {0: 1}
    assert index.matches("one two three four five six seven eight") == {}


def test_quickstart_prepare_decontaminates_against_the_sample_eval_sets_and_redacts_pii(quickstart) -> None:
    """The bundled eval sets hold items that really occur in the sample: the counts are not zero."""
    _, summary = quickstart
    found = summary["decontaminated"]
    assert found["pile/sample_qa_en"]["items_found"] >= 2 and found["wudao/sample_choice_zh"]["items_found"] >= 1
    assert summary["dropped"]["decontam/sample_qa_en"] >= 2
    assert summary["pii_redacted"]["email"] > 0 and summary["pii_redacted"]["ip"] > 0


# --- the vectorised matcher against a plain-Python reference ---------------------------------------------------

EN_VOCAB = ["alpha", "beta", "gamma", "delta", "epsilon"]
ZH_VOCAB = "天地玄黄"
SEPARATORS = [" ", ", ", " ; ", "\n", " — ", "! ", "\u00a0", "\t", " (", ") ", "...", "、", "」「"]


def render(rng: random.Random, units: list[str], chinese: bool) -> str:
    """Units joined by random punctuation and whitespace, in random case: simplify() must see through it."""
    out = []
    for unit in units:
        out.append(unit.upper() if rng.random() < 0.2 else unit)
        out.append(rng.choice(["", "，", "。", " "]) if chinese else rng.choice(SEPARATORS))
    return "".join(out)


def reference_matches(items: list[tuple[bool, str]], docs: list[str], cfg: DecontamConfig) -> list[list]:
    """The rule in plain Python: n-grams of simplify()'d words (characters for Chinese items) as tuples."""
    grams: dict[bool, dict[tuple[str, ...], list[int]]] = {False: {}, True: {}}
    lengths: dict[bool, set[int]] = {False: set(), True: set()}
    kept = 0
    for zh, text in items:
        units = list(simplify(text).replace(" ", "")) if zh else simplify(text).split()
        n = cfg.char_ngrams if zh else cfg.word_ngrams
        if len(units) < min(cfg.min_item_units, n):
            continue
        length = min(n, len(units))
        lengths[zh].add(length)
        for gram in {tuple(units[i:i + length]) for i in range(len(units) - length + 1)}:
            grams[zh].setdefault(gram, []).append(kept)
        kept += 1
    out = []
    for doc in docs:
        counts: dict[int, int] = {}
        for zh in (False, True):
            if zh and not CJK.search(doc):
                continue
            units = list(simplify(doc).replace(" ", "")) if zh else simplify(doc).split()
            for length in sorted(lengths[zh]):
                for i in range(len(units) - length + 1):
                    for item in grams[zh].get(tuple(units[i:i + length]), []):
                        counts[item] = counts.get(item, 0) + 1
        out.append(list(counts.items()))
    return out


def test_vectorised_matches_equal_the_plain_python_rule(tmp_path: Path) -> None:
    """Short n-grams over a tiny vocabulary give hundreds of matches: counts, items and their order agree,
    in English and Chinese, for items shorter than one n-gram, and never across two documents of a batch."""
    rng = random.Random(27)
    en = [" ".join(rng.choices(EN_VOCAB, k=rng.randint(2, 9))) for _ in range(60)]
    zh = ["".join(rng.choices(ZH_VOCAB, k=rng.randint(3, 12))) for _ in range(40)]
    (tmp_path / "en.jsonl").write_text("".join(json.dumps({"q": t}) + "\n" for t in en), encoding="utf-8")
    (tmp_path / "zh.jsonl").write_text("".join(json.dumps({"q": t}, ensure_ascii=False) + "\n" for t in zh),
                                       encoding="utf-8")
    cfg = DecontamConfig(enabled=True, word_ngrams=5, char_ngrams=6, min_item_units=3, benchmarks=[
        BenchmarkConfig(path=str(tmp_path / "en.jsonl"), fields=["q"], language="en"),
        BenchmarkConfig(path=str(tmp_path / "zh.jsonl"), fields=["q"], language="zh")])
    docs = []
    for i in range(80):
        words = rng.choices(EN_VOCAB, k=rng.randint(0, 60))
        chars = rng.choices(ZH_VOCAB, k=rng.randint(0, 40)) if i % 3 else []
        docs.append(render(rng, words, False) + render(rng, chars, True))
    docs[10:12] = [en[0] + " " + en[1][:5], en[1][5:] + " " + en[2]]  # an item split over two documents
    docs.append("İstanbul ﬁle \ud800 😀 " + docs[5])  # lower() growing, a lone surrogate, a non-BMP character
    index, stats = DecontamIndex.build(cfg)
    expected = reference_matches([(False, t) for t in en] + [(True, t) for t in zh], docs, cfg)
    assert sum(map(len, expected)) > 200 and stats.skipped_short["en"] > 0
    assert [list(m.items()) for m in index.matches_batch(docs)] == expected
    assert [list(index.matches(d).items()) for d in docs[:20]] == expected[:20]


def test_separators_are_those_of_simplify() -> None:
    spaces = {c for c in range(0x110000) if chr(c).isspace()}
    assert set(np.flatnonzero(SEPARATOR).tolist()) == spaces | set(PUNCTUATION_TRANS)
    text = "Don't STOP—believing！  中文，标点。\u3000tab\there"
    units = text_units([text])
    assert units.chars.tolist() == [ord(c) for c in simplify(text).replace(" ", "")]
    assert units.words.tolist() == [text_units([w]).words[0] for w in simplify(text).split()]


# --- the index cache --------------------------------------------------------------------------------------------

def test_the_index_is_reused_by_content_hash_and_linked_between_folders(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"text": "one two three four five six seven eight nine"}) + "\n", encoding="utf-8")
    cfg = DecontamConfig(enabled=True, benchmarks=[BenchmarkConfig(path=str(path))])
    built: dict[str, Path] = {}
    assert ensure_index(cfg, tmp_path / "a", built) is True
    assert ensure_index(cfg, tmp_path / "a", built) is False  # a rerun: same files, same settings
    assert ensure_index(cfg, tmp_path / "b", built) is False  # another source of the run: linked
    assert (tmp_path / "b" / META_FILE).read_text() == (tmp_path / "a" / META_FILE).read_text()
    assert DecontamIndex.load(tmp_path / "b").matches("ONE two three four five six seven eight nine") == {0: 1}

    path.write_text(json.dumps({"text": "ten eleven twelve thirteen fourteen fifteen sixteen seventeen"}) + "\n",
                    encoding="utf-8")  # same name, new content
    assert ensure_index(cfg, tmp_path / "a") is True
    assert DecontamIndex.load(tmp_path / "a").matches("one two three four five six seven eight nine") == {}
    # rewritten without touching the hard-linked copy in b
    assert DecontamIndex.load(tmp_path / "b").matches("one two three four five six seven eight nine") == {0: 1}
    assert ensure_index(DecontamConfig(enabled=True, word_ngrams=7, benchmarks=cfg.benchmarks), tmp_path / "a")
    (tmp_path / "a" / META_FILE).write_text("{}")  # an index without a key (another flm) is never trusted
    assert ensure_index(cfg, tmp_path / "a") is True
