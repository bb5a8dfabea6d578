"""Rebuild the bundled sample corpus (data/sample/raw/) from freely licensed Debian packages.

The sample lets the quickstart and the tests run the whole data path offline on real English and
Chinese text, in the formats the real corpora are published in:

- raw/pile/NN.jsonl.zst   Pile-style JSON lines {"text", "meta": {"pile_set_name"}}, zstd-compressed
- raw/wudao/part-NNNN.json WuDao-style JSON arrays of {"id", "dataType", "title", "content"}

Install the sources first (Debian 12 "bookworm"; any release with these packages works, the
output then differs in content):

    apt-get update
    apt-get install --no-install-recommends debian-reference-en debian-reference-zh-cn \
        debian-handbook git-doc fortunes fortunes-zh

then run ``python scripts/build_sample.py`` (options: ``--out DIR``). The output is deterministic:
inputs are read in sorted order and documents shuffled with a fixed seed, so rebuilding from the
same package versions gives byte-identical files. data/sample/LICENSE.md and README.md record the
package versions, licenses, subset assignment and the counts this script reports.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lxml.html
import zstandard
from inscriptis import Inscriptis
from inscriptis.model.config import ParserConfig

MIN_BYTES = 500  # pieces are packed together until a document reaches this size ...
MAX_BYTES = 10_000  # ... and split (sections, then paragraphs) so that none exceeds this one
PILE_SHARDS = 2
WUDAO_SHARDS = 3
SEED = 20260101
ZSTD_LEVEL = 19

PACKAGES = (
    "debian-reference-en",
    "debian-reference-zh-cn",
    "debian-handbook",
    "git-doc",
    "fortunes",
    "fortunes-zh",
)
DEBREF = Path("/usr/share/debian-reference")
HANDBOOK = Path("/usr/share/doc/debian-handbook/html")
GITDOC = Path("/usr/share/doc/git-doc")
FORTUNES = Path("/usr/share/games/fortunes")
# English fortune files left out: ASCII drawings are not text.
FORTUNES_SKIP = {"art", "ascii-art"}
FORTUNES_ZH = ("chinese", "song100", "tang300")
# The "chinese" fortune file quotes debian-reference-zh-cn at length; those entries are already in
# the sample through the manual itself, so they are dropped to avoid near-duplicates.
FORTUNES_ZH_DROP = re.compile(r"Debian 参考手册|Debian 参考卡片")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
ENGLISH_WORD = re.compile(r"^[A-Za-z][a-z']*[,.;:]?$")
# The Chinese debian-handbook leaves some paragraphs untranslated: a line with no CJK character and
# at least this many words, nearly all plain English words, is English prose (code lines are not).
UNTRANSLATED_MIN_WORDS = 10
MIN_CJK_SHARE = 0.25  # a Chinese document keeps at least this share of CJK among non-space characters
# Every k-th document of a source is kept, to hold the sample to a few MB on disk.
KEEP_EVERY = {"git-doc/": 2, "fortunes/": 2, "debian-handbook/en-US/": 2}
SECTION_CLASSES = {"chapter", "section", "appendix", "preface", "article", "sect1", "sect2", "sect3"}
DROP_CLASSES = {"navheader", "navfooter", "toc", "list-of-tables", "list-of-figures", "titlepage-legal", "index"}
HTML_CONFIG = ParserConfig(display_links=False, display_anchors=False, display_images=False)


@dataclass(frozen=True)
class Doc:
    """One sample document before it is written in its source's published format."""

    lang: str  # "en" -> The Pile, "zh" -> WuDao
    subset: str  # pile_set_name or WuDao dataType
    title: str
    text: str
    origin: str  # package and file, for the counts in README.md


def untranslated(line: str) -> bool:
    words = line.split()
    if len(words) < UNTRANSLATED_MIN_WORDS or CJK.search(line):
        return False
    return sum(bool(ENGLISH_WORD.match(w)) for w in words) >= 0.8 * len(words)


def cjk_share(text: str) -> float:
    chars = re.sub(r"\s", "", text)
    return len(CJK.findall(chars)) / max(1, len(chars))


def check_packages() -> dict[str, str]:
    """Return {package: version}; exit with the apt-get command when any package is missing."""
    versions, missing = {}, []
    for pkg in PACKAGES:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", pkg], capture_output=True, text=True
        )
        status, _, version = out.stdout.partition(" ")
        if out.returncode != 0 or status != "installed":
            missing.append(pkg)
        else:
            versions[pkg] = version
    if missing:
        sys.exit(
            f"build_sample: missing Debian package(s): {', '.join(missing)}\n"
            f"install them with: apt-get update && apt-get install --no-install-recommends {' '.join(PACKAGES)}"
        )
    return versions


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def tidy(text: str) -> str:
    """Trim trailing spaces, collapse runs of blank lines, strip the ends."""
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def split_paragraphs(text: str, limit: int = MAX_BYTES) -> list[str]:
    """Split text at blank lines (then at lines) into pieces of at most `limit` bytes."""
    pieces: list[str] = []
    for para in text.split("\n\n"):
        if nbytes(para) <= limit:
            pieces.append(para)
            continue
        current: list[str] = []
        for line in para.split("\n"):
            if current and nbytes("\n".join([*current, line])) > limit:
                pieces.append("\n".join(current))
                current = []
            current.append(line[: limit // 4] if nbytes(line) > limit else line)
        pieces.append("\n".join(current))
    return pack([p for p in pieces if p.strip()], sep="\n\n")


def pack(pieces: list[str], sep: str) -> list[str]:
    """Greedily join consecutive pieces until each reaches MIN_BYTES, never exceeding MAX_BYTES."""
    out: list[str] = []
    for piece in pieces:
        if out and nbytes(out[-1]) < MIN_BYTES and nbytes(out[-1] + sep + piece) <= MAX_BYTES:
            out[-1] = out[-1] + sep + piece
        else:
            out.append(piece)
    if len(out) > 1 and nbytes(out[-1]) < MIN_BYTES and nbytes(out[-2] + sep + out[-1]) <= MAX_BYTES:
        out[-2:] = [out[-2] + sep + out[-1]]
    return out


def html_text(element: lxml.html.HtmlElement, lang: str) -> str:
    text = Inscriptis(element, HTML_CONFIG).get_text()
    if lang == "zh":
        text = "\n".join(line for line in text.splitlines() if not untranslated(line))
    return tidy(text)


def is_section(element: lxml.html.HtmlElement) -> bool:
    return element.tag == "div" and bool(SECTION_CLASSES & set((element.get("class") or "").split()))


def section_title(element: lxml.html.HtmlElement) -> str:
    heading = element.xpath("./div[@class='titlepage']//*[self::h1 or self::h2 or self::h3 or self::h4][1]")
    return " ".join(heading[0].text_content().split()) if heading else ""


def split_section(element: lxml.html.HtmlElement, title: str, lang: str) -> Iterator[tuple[str, str]]:
    """Yield (title, text) blocks of at most MAX_BYTES: the whole section if it fits, else its own
    text before the first subsection followed by each subsection, recursively."""
    title = section_title(element) or title
    text = html_text(element, lang)
    if nbytes(text) <= MAX_BYTES:
        yield title, text
        return
    children = [child for child in element if is_section(child)]
    if not children:
        for piece in split_paragraphs(text):
            yield title, piece
        return
    intro = copy.deepcopy(element)
    for child in intro:
        if is_section(child):
            intro.remove(child)
    intro_text = html_text(intro, lang)
    if intro_text:
        for piece in split_paragraphs(intro_text):
            yield title, piece
    for child in children:
        yield from split_section(child, title, lang)


def html_docs(path: Path, lang: str, subset: str, origin: str) -> Iterator[Doc]:
    """Documents of one DocBook/Publican HTML page: its outermost sections, split and packed."""
    root = lxml.html.parse(str(path)).getroot()
    for node in [el for el in root.iter("div") if DROP_CLASSES & set((el.get("class") or "").split())]:
        if node.getparent() is not None:
            node.getparent().remove(node)
    tops = [el for el in root.iter("div") if is_section(el) and not any(is_section(a) for a in el.iterancestors())]
    for top in tops:
        blocks = list(split_section(top, "", lang))
        titles = [t for t, _ in blocks]
        texts = pack([b for _, b in blocks], sep="\n\n")
        # A packed document keeps the title of the first block it starts with.
        cursor = 0
        for text in texts:
            while cursor < len(blocks) - 1 and not text.startswith(blocks[cursor][1][:50]):
                cursor += 1
            yield Doc(lang, subset, titles[cursor], text, origin)


ASCIIDOC_HEADING = re.compile(r"^(?P<title>[^\n]+)\n(?:-+|=+)\n", re.MULTILINE)


def asciidoc_docs(path: Path, subset: str, origin: str) -> Iterator[Doc]:
    """git's AsciiDoc sources, split at section headings (setext underlines), then packed."""
    raw = path.read_text(encoding="utf-8").strip()
    starts = [m.start() for m in ASCIIDOC_HEADING.finditer(raw) if m.start() > 0]
    sections = [raw[a:b].strip() for a, b in zip([0, *starts], [*starts, len(raw)], strict=True)]
    pieces = [p for s in sections for p in ([s] if nbytes(s) <= MAX_BYTES else split_paragraphs(s))]
    for text in pack(pieces, sep="\n\n"):
        yield Doc("en", subset, path.stem, text, origin)


def fortunes(path: Path) -> list[str]:
    """The entries of a strfile source: '%'-separated, ANSI colour codes removed."""
    raw = ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
    return [tidy(entry) for entry in re.split(r"^%$", raw, flags=re.MULTILINE) if entry.strip()]


def fortune_docs(path: Path, lang: str, subset: str, origin: str, drop: re.Pattern | None = None) -> Iterator[Doc]:
    entries = [e for e in fortunes(path) if not (drop and drop.search(e))]
    for text in pack(entries, sep="\n\n%\n\n"):
        yield Doc(lang, subset, f"fortune {path.name}", text, origin)


def extract() -> Iterator[Doc]:
    """All documents, sources in a fixed order, files sorted by name."""
    for path in sorted(DEBREF.glob("*.en.html")):
        if not path.name.startswith("index."):
            yield from html_docs(path, "en", "Pile-CC", f"debian-reference-en/{path.name}")
    for path in sorted((HANDBOOK / "en-US").glob("*.html")):
        if path.name != "index.html":
            yield from html_docs(path, "en", "Books3", f"debian-handbook/en-US/{path.name}")
    for path in sorted(GITDOC.rglob("*.txt")):
        yield from asciidoc_docs(path, "Github", f"git-doc/{path.relative_to(GITDOC)}")
    names = sorted(p.name for p in FORTUNES.iterdir() if p.is_file() and not p.is_symlink() and p.suffix == "")
    for name in names:
        if name not in FORTUNES_SKIP and name not in FORTUNES_ZH:
            yield from fortune_docs(FORTUNES / name, "en", "Pile-CC", f"fortunes/{name}")
    for path in sorted(DEBREF.glob("*.zh-cn.html")):
        if not path.name.startswith("index."):
            yield from html_docs(path, "zh", "技术", f"debian-reference-zh-cn/{path.name}")
    for path in sorted((HANDBOOK / "zh-CN").glob("*.html")):
        if path.name != "index.html":
            yield from html_docs(path, "zh", "技术", f"debian-handbook/zh-CN/{path.name}")
    for name in FORTUNES_ZH:
        yield from fortune_docs(FORTUNES / name, "zh", "文学", f"fortunes-zh/{name}", FORTUNES_ZH_DROP)


def collect() -> list[Doc]:
    """The documents kept: every KEEP_EVERY-th of the thinned sources, Chinese ones mostly Chinese."""
    kept: list[Doc] = []
    seen = dict.fromkeys(KEEP_EVERY, 0)
    for doc in extract():
        prefix = next((p for p in KEEP_EVERY if doc.origin.startswith(p)), None)
        if prefix is not None:
            seen[prefix] += 1
            if seen[prefix] % KEEP_EVERY[prefix]:
                continue
        if doc.text.strip() and (doc.lang != "zh" or cjk_share(doc.text) >= MIN_CJK_SHARE):
            kept.append(doc)
    return kept


def shards(items: list, n: int) -> list[list]:
    size = -(-len(items) // n)
    return [items[i : i + size] for i in range(0, len(items), size)]


def write(docs: list[Doc], out: Path) -> dict[str, dict[str, int]]:
    """Write both formats under out/raw/; return {lang/subset: {docs, text_bytes}}."""
    rng = random.Random(SEED)
    english = [d for d in docs if d.lang == "en"]
    chinese = [d for d in docs if d.lang == "zh"]
    rng.shuffle(english)
    rng.shuffle(chinese)
    pile_dir, wudao_dir = out / "raw" / "pile", out / "raw" / "wudao"
    for directory in (pile_dir, wudao_dir):
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    for i, shard in enumerate(shards(english, PILE_SHARDS)):
        lines = [json.dumps({"text": d.text, "meta": {"pile_set_name": d.subset}}, ensure_ascii=False) for d in shard]
        (pile_dir / f"{i:02d}.jsonl.zst").write_bytes(compressor.compress(("\n".join(lines) + "\n").encode("utf-8")))
    next_id = 0
    for i, shard in enumerate(shards(chinese, WUDAO_SHARDS)):
        records = []
        for d in shard:
            records.append(
                json.dumps(
                    {"id": next_id, "dataType": d.subset, "title": d.title, "content": d.text}, ensure_ascii=False
                )
            )
            next_id += 1
        (wudao_dir / f"part-{i:04d}.json").write_text("[\n" + ",\n".join(records) + "\n]\n", encoding="utf-8")
    counts: dict[str, dict[str, int]] = {}
    for d in docs:
        for key in (f"{d.lang}/{d.subset}", f"package/{d.lang}/{d.origin.split('/')[0]}"):
            entry = counts.setdefault(key, {"docs": 0, "text_bytes": 0})
            entry["docs"] += 1
            entry["text_bytes"] += nbytes(d.text)
    for directory in (pile_dir, wudao_dir):
        counts[f"files/{directory.name}"] = {
            "files": len(list(directory.iterdir())),
            "disk_bytes": sum(p.stat().st_size for p in directory.iterdir()),
        }
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "sample")
    args = parser.parse_args()
    versions = check_packages()
    counts = write(collect(), args.out)
    print(json.dumps({"packages": versions, "counts": counts}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
