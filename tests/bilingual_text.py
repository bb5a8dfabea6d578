"""Generated bilingual documents and clean-text shards for the tokenizer tests (nothing downloaded)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import zstandard

EN_VOCABULARY = (
    "the of and to in is was that for it with as on be by this at from or an are which not have had but were "
    "his her they one all their there been has more when will would who so no can if out about up into some "
    "time could other than then these two may first only new also any like over after such most very well "
    "model data training token language corpus shard memory growth layer attention scale width depth loss "
    "python function return value string number error file line source subset manifest tokenizer encode"
)
EN_WORDS = EN_VOCABULARY.split()
ZH_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后"
    "多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合"
    "还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只"
    "没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边"
    "流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造"
    "百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例"
    "真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且"
    "究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何"
    "除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满"
    "县局照参红细引听该铁价严模型数据训练语料"
)
CODE = ("def f(x):\n    return x * 2\n", "for i in range(10):\n\tprint(i)\n", "if (a && b) { return -1; }\n",
        "SELECT id, name FROM users WHERE age > 21;\n", "x = [1, 2, 3]  # list\n")
EMOJI = "😀👍🏽🇨🇳🚀✨❤️👨‍👩‍👧"


def english(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(EN_WORDS) for _ in range(rng.randint(4, 14))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 10 ** rng.randint(1, 7))))
        out.append(" ".join(words).capitalize() + rng.choice(".!?") + rng.choice((" ", " ", "\n", "\n\n")))
    return "".join(out)


def chinese(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        clauses = []
        for _ in range(rng.randint(1, 3)):
            words = ["".join(rng.choice(ZH_CHARS[:200]) for _ in range(rng.randint(1, 3)))
                     for _ in range(rng.randint(2, 8))]
            if rng.random() < 0.2:
                words.append(str(rng.randint(1, 2030)) + "年")
            clauses.append("".join(words))
        out.append("，".join(clauses) + rng.choice("。！？") + rng.choice(("", "", "\n")))
    return "".join(out)


def document(rng: random.Random) -> str:
    """One document: English, Chinese, or a mix with code and emoji."""
    kind = rng.random()
    if kind < 0.45:
        text = english(rng, rng.randint(3, 20))
    elif kind < 0.9:
        text = chinese(rng, rng.randint(3, 20))
    else:
        text = english(rng, 3) + chinese(rng, 3) + rng.choice(CODE) + " ".join(rng.sample(EMOJI, 3))
    return text


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [document(rng) for _ in range(n)]


def write_clean(directory: Path, source: str, records: list[dict | bytes], per_file: int) -> list[Path]:
    """Write records (dicts, or raw lines as bytes to plant bad input) as CLEAN/<source>/NNNNN.jsonl.zst."""
    out = Path(directory) / source
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, len(records), per_file):
        lines = b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records[i:i + per_file])
        path = out / f"{i // per_file:05d}.jsonl.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(lines))
        paths.append(path)
    return paths


def pile_record(text: str, i: int, subset: str = "Pile-CC") -> dict:
    return {"text": text, "id": f"pile-{i}", "source": "pile", "meta": {"pile_set_name": subset}}


def wudao_record(text: str, i: int) -> dict:
    return {"text": text, "id": f"wudao-{i}", "source": "wudao", "meta": {"dataType": "百科", "title": f"t{i}"}}
