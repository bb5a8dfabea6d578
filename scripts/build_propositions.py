"""Rebuild the bundled proposition set (data/sample/propositions/) from the bundled sample corpus.

Every statement is text of data/sample/raw/ (Debian documentation and fortunes; licences in
data/sample/LICENSE.md), so the set inherits the sample's licences. Six small tasks, three in English and
three in Chinese, one of each proposition kind per language:

- en_word_order, zh_char_order (statement): a sentence as written (true) or with its words/characters
  shuffled (false);
- en_source (classification: git manual, fortune, Debian documentation), zh_genre (classification: 诗词,
  技术文档): which kind of text a sentence comes from, read off the sample's own metadata;
- en_continuation, zh_continuation (multiple choice, 4 options): the right second half of a sentence among
  three second halves of other sentences.

Run ``python scripts/build_propositions.py`` (``--out DIR``, ``--per-task N``); the output is deterministic
(sorted inputs, fixed seed). `mapping.yaml` beside the JSONL files tells `flm data propositions` how to read
them and holds 20% of the instances out (OUT/valid).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "sample" / "raw"
OUT = ROOT / "data" / "sample" / "propositions"
SEED = 20261201
PER_TASK = 300
STATEMENTS_PER_INSTANCE = 4
"""A statement task gets 4 x per-task instances: one proposition each, as many as a 4-option multiple-choice
task's. With per-task instances they held 7% of the training propositions each, too few to learn from."""
EN_WORD = re.compile(r"^[A-Za-z][A-Za-z'’-]*[,.;:]?$")
CJK = re.compile(r"[\u4e00-\u9fff]")
ZH_SPLIT = re.compile(r"(?<=[。！？；])")

MAPPING = """\
# How `flm data propositions` reads the bundled proposition set (rebuilt by scripts/build_propositions.py).
valid_fraction: 0.2
max_tokens: 96
tasks:
  - {name: en_word_order, kind: statement, file: en_word_order.jsonl, lang: en}
  - {name: zh_char_order, kind: statement, file: zh_char_order.jsonl, lang: zh}
  - name: en_source
    kind: classification
    file: en_source.jsonl
    lang: en
    verbalizers:
      git: "From the git manual: {text}"
      fortune: "From a fortune cookie: {text}"
      debian: "From the Debian documentation: {text}"
  - name: zh_genre
    kind: classification
    file: zh_genre.jsonl
    lang: zh
    verbalizers:
      文学: "这句话出自诗词：{text}"
      技术: "这句话出自技术文档：{text}"
  - {name: en_continuation, kind: multiple_choice, file: en_continuation.jsonl, lang: en,
     template: "{question} {option}"}
  - {name: zh_continuation, kind: multiple_choice, file: zh_continuation.jsonl, lang: zh,
     template: "{question}{option}"}
"""


def text_kind(doc: dict) -> str:
    """git (the Github subset: the git manual), fortune or debian, for a Pile-style sample document.

    Fortune files separate fortunes by a line of '%'; a file of one fortune has none, and such files are as
    common as Debian pages in the non-Github subsets. The Debian documentation is rendered indented, a
    fortune is not: so a document without '%' lines is debian only when most of its lines are indented
    (without this, 64% of the sentences labelled debian were fortunes)."""
    text = doc["text"]
    if doc["meta"]["pile_set_name"] == "Github":
        return "git"
    if "\n%\n" in text:
        return "fortune"
    lines = [line for line in text.split("\n") if line.strip()]
    indented = sum(line.startswith((" ", "\t")) for line in lines)
    return "debian" if indented > len(lines) / 2 else "fortune"


def english_sentences() -> dict[str, list[str]]:
    """Lines of 6-16 plain words from the Pile-style sample, by kind: git, fortune, debian."""
    found: dict[str, list[str]] = {"git": [], "fortune": [], "debian": []}
    for path in sorted((RAW / "pile").glob("*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as raw:
            for line in io.TextIOWrapper(raw, encoding="utf-8"):
                doc = json.loads(line)
                kind = text_kind(doc)
                for text in doc["text"].split("\n"):
                    words = text.split()
                    if 6 <= len(words) <= 16 and all(EN_WORD.match(w) for w in words):
                        found[kind].append(" ".join(words))
    return {kind: sorted(set(lines)) for kind, lines in found.items()}


def chinese_sentences() -> dict[str, list[str]]:
    """Sentences of 8-30 characters, nearly all Chinese, from the WuDao-style sample, by dataType."""
    found: dict[str, list[str]] = {"文学": [], "技术": []}
    for path in sorted((RAW / "wudao").glob("*.json")):
        for doc in json.loads(path.read_text(encoding="utf-8")):
            for line in doc["content"].split("\n"):
                for text in ZH_SPLIT.split(line.strip()):
                    if 8 <= len(text) <= 30 and len(CJK.findall(text)) >= 0.8 * len(text):
                        found[doc["dataType"]].append(text)
    return {kind: sorted(set(lines)) for kind, lines in found.items()}


def shuffled(items: list[str], rng: random.Random) -> list[str]:
    out = items[:]
    while out == items:
        rng.shuffle(out)
    return out


def order_task(sentences: list[str], rng: random.Random, n: int, *, words: bool) -> list[dict]:
    records = []
    for text in rng.sample(sentences, n):
        parts = text.split() if words else list(text)
        true = rng.random() < 0.5
        statement = text if true else (" ".join if words else "".join)(shuffled(parts, rng))
        records.append({"text": statement, "label": true})
    return records


def source_task(by_kind: dict[str, list[str]], rng: random.Random, n: int) -> list[dict]:
    kinds = sorted(by_kind)
    records = [{"text": text, "label": kind} for kind in kinds for text in rng.sample(by_kind[kind], n // len(kinds))]
    rng.shuffle(records)
    return records


def continuation_task(sentences: list[str], rng: random.Random, n: int, *, words: bool) -> list[dict]:
    def halves(text: str) -> tuple[str, str]:
        if words:
            parts = text.split()
            return " ".join(parts[: len(parts) // 2]), " ".join(parts[len(parts) // 2:])
        return text[: len(text) // 2], text[len(text) // 2:]

    pool = [halves(t) for t in sentences if len(t.split() if words else t) >= 8]
    records = []
    for head, tail in rng.sample(pool, n):
        others = {t for _, t in rng.sample(pool, 8) if t != tail}
        options = [tail, *sorted(others)[:3]]
        rng.shuffle(options)
        records.append({"question": head, "options": options, "answer": options.index(tail)})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--per-task", type=int, default=PER_TASK)
    args = parser.parse_args()
    rng = random.Random(SEED)
    en, zh = english_sentences(), chinese_sentences()
    en_all = sorted({s for lines in en.values() for s in lines})
    zh_all = sorted({s for lines in zh.values() for s in lines})
    n = args.per_task
    tasks = {
        "en_word_order": order_task(en_all, rng, STATEMENTS_PER_INSTANCE * n, words=True),
        "zh_char_order": order_task(zh_all, rng, STATEMENTS_PER_INSTANCE * n, words=False),
        "en_source": source_task(en, rng, n),
        "zh_genre": source_task(zh, rng, n),
        "en_continuation": continuation_task(en_all, rng, n, words=True),
        "zh_continuation": continuation_task(zh_all, rng, n, words=False),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, records in tasks.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        (args.out / f"{name}.jsonl").write_text(lines, encoding="utf-8")
        print(f"{name}: {len(records)} instances")
    (args.out / "mapping.yaml").write_text(MAPPING, encoding="utf-8")
    print(f"sentences: en {', '.join(f'{k} {len(v)}' for k, v in en.items())}; "
          f"zh {', '.join(f'{k} {len(v)}' for k, v in zh.items())}")


if __name__ == "__main__":
    main()
