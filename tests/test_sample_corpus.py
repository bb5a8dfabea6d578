"""The bundled sample corpus is in the published Pile / WuDao formats and within its stated bounds.

Bounds come from data/sample/README.md and scripts/build_sample.py: documents of 100 B to 10 KB of
text, a few thousand per language, a few MB on disk in all, Chinese documents mostly CJK.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import zstandard

MAX_DOC_BYTES = 10_000
MIN_DOC_BYTES = 100
MAX_DISK_BYTES = 5_000_000
MIN_DOCS_PER_LANGUAGE = 1_000
PILE_SET_NAMES = {"Pile-CC", "Books3", "Github", "StackExchange"}
WUDAO_DATA_TYPES = {"技术", "文学"}
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def cjk_share(text: str) -> float:
    chars = re.sub(r"\s", "", text)
    return len(CJK.findall(chars)) / max(1, len(chars))


@pytest.fixture(scope="module")
def pile_docs(sample_dir: Path) -> list[dict]:
    files = sorted((sample_dir / "pile").glob("*.jsonl.zst"))
    assert len(files) >= 2, f"expected Pile shards under {sample_dir / 'pile'}"
    docs = []
    for path in files:
        with path.open("rb") as fh:
            raw = zstandard.ZstdDecompressor().stream_reader(fh).read().decode("utf-8")
        for lineno, line in enumerate(raw.splitlines(), 1):
            docs.append((f"{path.name}:{lineno}", json.loads(line)))
    return docs


@pytest.fixture(scope="module")
def wudao_docs(sample_dir: Path) -> list[dict]:
    files = sorted((sample_dir / "wudao").glob("*.json"))
    assert len(files) >= 2, f"expected WuDao files under {sample_dir / 'wudao'}"
    docs = []
    for path in files:
        records = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(records, list), f"{path.name}: a WuDao file is a JSON array"
        docs += [(f"{path.name}[{i}]", record) for i, record in enumerate(records)]
    return docs


def test_pile_records_have_published_fields(pile_docs):
    for where, doc in pile_docs:
        assert set(doc) == {"text", "meta"}, where
        assert isinstance(doc["text"], str) and doc["text"].strip(), where
        assert doc["meta"]["pile_set_name"] in PILE_SET_NAMES, where
        assert MIN_DOC_BYTES <= len(doc["text"].encode()) <= MAX_DOC_BYTES, where
    assert len(pile_docs) >= MIN_DOCS_PER_LANGUAGE


def test_pile_has_prose_and_technical_subsets(pile_docs):
    subsets = Counter(doc["meta"]["pile_set_name"] for _, doc in pile_docs)
    assert subsets["Pile-CC"] >= 500 and subsets["Github"] >= 500, subsets
    # The technical subset really is code-heavy: option flags and command lines are common in it.
    github = [doc["text"] for _, doc in pile_docs if doc["meta"]["pile_set_name"] == "Github"]
    assert sum("--" in text or "$ " in text for text in github) > len(github) / 2


def test_wudao_records_have_published_fields(wudao_docs):
    ids = []
    for where, doc in wudao_docs:
        assert set(doc) == {"id", "dataType", "title", "content"}, where
        assert isinstance(doc["id"], int) and isinstance(doc["title"], str), where
        assert doc["dataType"] in WUDAO_DATA_TYPES, where
        assert isinstance(doc["content"], str) and doc["content"].strip(), where
        assert MIN_DOC_BYTES <= len(doc["content"].encode()) <= MAX_DOC_BYTES, where
        ids.append(doc["id"])
    assert len(set(ids)) == len(ids), "WuDao ids must be unique"
    assert len(wudao_docs) >= MIN_DOCS_PER_LANGUAGE
    assert set(Counter(doc["dataType"] for _, doc in wudao_docs)) == WUDAO_DATA_TYPES


def test_wudao_text_is_mostly_chinese(wudao_docs, pile_docs):
    for where, doc in wudao_docs:
        assert cjk_share(doc["content"]) >= 0.25, where
    assert cjk_share("".join(doc["content"] for _, doc in wudao_docs)) > 0.5
    assert cjk_share("".join(doc["text"] for _, doc in pile_docs)) < 0.01


def test_sample_is_a_few_megabytes(sample_dir: Path):
    files = [p for p in sample_dir.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert 1_000_000 < total <= MAX_DISK_BYTES, total
    assert {p.parent.name for p in files} == {"pile", "wudao"}
