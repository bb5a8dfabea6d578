"""PII redaction: emails, IP addresses, phone numbers and Chinese resident ID numbers become placeholders.

Each kind is a regular expression plus a check that the match is what it looks like, so that the
look-alikes technical text is full of survive:
- IPv4: four dot-separated numbers 0-255, not glued to a word or a longer dotted run (`v1.2.3.4`,
  `1.2.3.4.5`), is an address unless it is a version, a section number or a value that names no host:
  - a version or section word right before it, with only quotes, `=`, `:` or brackets between:
    `version 1.8.3.1`, `Version: 1.8.3.1`, `"version": "1.8.3.1"`, `AssemblyVersion("1.8.3.1")`,
    `revision`, `build`, `release`, `Section 9.2.1.4`, `chapter`, `figure`, `table`, `step`, `§`,
    `第 6.7.3.1 节`, `版本`;
  - a package's version: after `==`, `>=`, `~=`, `^` and the like, glued to a name by `-` or `_`
    (`sqlite-3.8.3.1`), a product token (`git/1.8.3.1`, not a path: `/pub/10.1.2.3/` is an address),
    or followed by a pre-release or build suffix (`1.8.3.1-rc1`, `1.8.3.1+dfsg`);
  - a changelog heading (`## [1.8.3.1] - 2020-01-05`, `1.8.3.1 (2020-01-05)`) or a numbered heading
    at the start of a line ("9.2.1.4. Creating tunnels");
  - the next of a list whose first is a version (`versions 1.8.3.0, 1.8.3.1 and 1.8.3.2`);
  - a netmask (255.255.255.0: ones then zeros), the "this network" block 0.0.0.0/8 (also Cisco's
    wildcard masks such as 0.0.0.255), loopback 127.0.0.0/8, multicast 224.0.0.0/4 or the broadcast
    255.255.255.255: they name no one's host.
  Any other dotted quad is an address, even 1.2.3.4 in prose (`bumped from 1.8.3.0` is redacted: a
  version needs one of the contexts above).
- IPv6: colon groups that `ipaddress` accepts, with at least three groups (`std::vector`, `a::b`,
  times like 12:30:45 are not addresses).
- Phone numbers: international (`+` country code, 8-15 digits in all), Chinese mobile (1[3-9] and
  9 digits, optionally +86, spaced 3-4-4) and Chinese landline (0 + 2-3 digit area code, a dash, 7-8
  digits). A digit run inside a longer one (order numbers, hashes, timestamps) is not a phone.
- Chinese resident ID numbers: 18 characters whose region starts with 1-8, whose birth date is a
  real date from 1900 on, and whose check digit (ISO 7064 MOD 11-2) is right.
- Emails: local@domain.tld with a letter-only TLD.
Boundaries are ASCII (re.ASCII): Chinese text runs straight into numbers ("电话13812345678").
Each replacement is counted per kind (`redacted` in stats.json); documents are never dropped.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from flm.pipelines.config import PiiConfig
from flm.pipelines.prepare.accounting import record_redactions
from flm.pipelines.prepare.batching import BATCH_DOCS
from flm.pipelines.prepare.schema import SOURCE, SUBSET

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                   r"[A-Za-z]{2,24}(?![\w-])", re.ASCII)
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
QUAD = rf"{OCTET}(?:\.{OCTET}){{3}}"
IPV4 = re.compile(rf"(?<![\w.]){QUAD}(?![\w.]\w|\w)", re.ASCII)
VERSION_WORDS = {"v", "ver", "version", "versions", "rel", "release", "rev", "revision", "build", "section",
                 "sections", "sect", "chapter", "figure", "fig", "table", "step", "appendix", "第", "版本", "版本号",
                 "§"}
LAST_WORD = re.compile(r"(?:([A-Za-z_]\w*)|(第|版本号?|§))[\s\"'=:：(<>\[{]*$", re.ASCII)
"""The word before a number, with only quotes, `=`, `:` and brackets between: `"version": "`, `<version>`."""
PINNED = re.compile(r"(?:[=!~<>]=|[\^~]|(?<![\w/])[A-Za-z][\w+]*[-_])$", re.ASCII)
"""A requirement (`==1.8.3.1`, `^1.8.3.1`) or a name glued by - or _ (`sqlite-3.8.3.1`)."""
PRODUCT = re.compile(r"(?:^|[\s\"'(])[A-Za-z][\w.+-]*/$", re.ASCII)
"""A product token, `git/1.8.3.1` (User-Agent style); a path such as /pub/10.1.2.3/ is not one."""
SUFFIX = re.compile(r"[-+~][A-Za-z]", re.ASCII)
"""A pre-release or build suffix: 1.8.3.1-rc1, 1.8.3.1+dfsg, 1.8.3.1~bpo."""
DATE = r"\(\d{4}-\d{2}-\d{2}\)|\d{4}-\d{2}-\d{2}"
CHANGELOG_PREFIX = re.compile(r"\s*(?:#{1,6}\s*\[?|\[)v?$")
CHANGELOG_REST = re.compile(rf"\]?\s*(?:[-–:]\s*)?(?:{DATE}|$)")
DATED_REST = re.compile(r"\]?\s*(?:[-–:]\s*)?\(\d{4}-\d{2}-\d{2}\)")
LISTED_AFTER = re.compile(rf"(?<![\w.])({QUAD})\s*(?:,|and|or|to|->|→|=>)\s*$", re.ASCII)


IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])", re.ASCII)
PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\w)", re.ASCII)
PHONE_CN_MOBILE = re.compile(r"(?<![\w+])(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\w)", re.ASCII)
PHONE_CN_LANDLINE = re.compile(r"(?<![\w-])(?:\(0\d{2,3}\)|0\d{2,3}-)\s?[2-9]\d{6,7}(?![\w-])", re.ASCII)
ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])[1-8]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                       r"(?![0-9A-Za-z])", re.ASCII)
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


def id_number_valid(value: str) -> bool:
    """A Chinese resident ID number: a real birth date (not in the future) and the right check digit."""
    try:
        born = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if born > datetime.date.today():
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], ID_WEIGHTS, strict=True))
    return ID_CHECK[total % 11] == value[17].upper()


def ipv6_valid(value: str) -> bool:
    groups = [g for g in value.split(":") if g]
    if len(groups) < 3:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def numbered_heading(text: str, start: int, end: int) -> bool:
    """A dotted quad alone at the start of its line, then '. ' or a capitalised word: "9.2.1.4. Tunnels"."""
    if text[text.rfind("\n", 0, start) + 1:start].strip():
        return False
    after = text[end:end + 2]
    return after in (". ", ".\n") or (after[:1] == " " and after[1:].isupper())


def no_host(quad: str) -> bool:
    """A value that names no one's host: a netmask (ones then zeros), 0.0.0.0/8, loopback, multicast, broadcast."""
    octets = [int(o) for o in quad.split(".")]
    value = int.from_bytes(bytes(octets), "big")
    inverted = ~value & 0xFFFFFFFF
    netmask = octets[0] == 255 and inverted & (inverted + 1) == 0  # 255.255.255.0, 255.255.254.0, 255.0.0.0
    return netmask or octets[0] in (0, 127) or 224 <= octets[0] <= 239 or value == 0xFFFFFFFF


def is_version(text: str, start: int, end: int) -> bool:
    """Whether the dotted quad text[start:end] is a version or section number (the module docstring's rules)."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    before, rest = text[line_start:start], text[end:len(text) if line_end < 0 else line_end]
    word = LAST_WORD.search(before[-40:])
    if word and ((word[1] or word[2]).lower() in VERSION_WORDS or "version" in (word[1] or "").lower()):
        return True
    if PINNED.search(before[-60:]) or SUFFIX.match(rest) or (PRODUCT.search(before[-60:]) and rest[:1] != "/"):
        return True
    if numbered_heading(text, start, end) or DATED_REST.match(rest):
        return True
    if CHANGELOG_PREFIX.fullmatch(before) and CHANGELOG_REST.match(rest):
        return True
    listed = LISTED_AFTER.search(before[-40:])
    return bool(listed) and is_version(text, start - len(listed[0]), start - len(listed[0]) + len(listed[1]))


def digits(value: str) -> int:
    return sum(c.isdigit() for c in value)


def always(text: str) -> bool:
    return True


def contains(needle: str) -> Callable[[str], bool]:
    return lambda text: needle in text


def searches(pattern: str) -> Callable[[str], bool]:
    return re.compile(pattern, re.ASCII).search  # type: ignore[return-value]


class Redactor:
    """The enabled kinds, each a (kind, gate, pattern, replace-function) applied in turn.

    A gate is a cheap test that every match of its pattern passes (a character or a short literal-led
    pattern, found at C speed): most documents hold no phone number or address, and a pattern that
    opens with a lookbehind is tried at every position of the text.
    """

    def __init__(self, cfg: PiiConfig) -> None:
        ph = cfg.placeholders
        self.rules: list[tuple[str, Callable[[str], bool], re.Pattern[str], Callable[[re.Match[str]], str | None]]] = []
        if cfg.emails:
            self.rules.append(("email", contains("@"), EMAIL, lambda m: ph["email"]))
        if cfg.id_numbers:  # before phones: an ID number holds a run of 11 digits
            self.rules.append(("id_number", always, ID_NUMBER,
                               lambda m: ph["id_number"] if id_number_valid(m[0]) else None))
        if cfg.phone_numbers:
            self.rules.append(("phone", contains("+"), PHONE_INTL,
                               lambda m: ph["phone"] if 8 <= digits(m[0]) <= 15 else None))
            self.rules.append(("phone", searches(r"1[3-9]\d"), PHONE_CN_MOBILE, lambda m: ph["phone"]))
            self.rules.append(("phone", searches(r"0\d\d"), PHONE_CN_LANDLINE, lambda m: ph["phone"]))
        if cfg.ip_addresses:
            self.rules.append(("ip", searches(r"\d\.\d"), IPV4,
                               lambda m: None if no_host(m[0]) or is_version(m.string, m.start(), m.end())
                               else ph["ip"]))
            self.rules.append(("ip", searches(r":[0-9A-Fa-f]{0,4}:"), IPV6,
                               lambda m: ph["ip"] if ipv6_valid(m[0]) else None))

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with every match replaced, and the replacements per kind."""
        counts: dict[str, int] = {}
        for kind, gate, pattern, replace in self.rules:
            if not gate(text):
                continue

            def sub(m: re.Match[str], kind: str = kind, replace: Callable = replace) -> str:
                out = replace(m)
                if out is None:
                    return m[0]
                counts[kind] = counts.get(kind, 0) + 1
                return out

            text = pattern.sub(sub, text)
        return text, counts


class PiiRedactor(PipelineStep):
    """Replaces PII in every document's text; counts replacements per kind, drops nothing."""

    type = "🫥 - PII"
    name = "🫥 PII redaction"

    def __init__(self, cfg: PiiConfig) -> None:
        super().__init__()
        self.redactor = Redactor(cfg)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for batch in batched(data, BATCH_DOCS):
            with self.track_time():
                found = [self.redactor.redact(doc.text) for doc in batch]
            for doc, (doc.text, counts) in zip(batch, found, strict=True):
                if counts:
                    record_redactions(self, doc.metadata[SOURCE], doc.metadata[SUBSET], counts)
                yield doc
