"""PII redaction: emails, IP addresses, phone numbers and Chinese resident ID numbers become placeholders.

Each kind is a regular expression plus a check that the match is what it looks like, so that the
look-alikes technical text is full of survive:
- IPv4: four dot-separated numbers 0-255 that are not part of a longer dotted run (1.2.3.4.5), not
  a version or a section (`v1.2.3.4`, `version 1.2.3.4`, `Section 9.2.1.4`, `chapter`, `figure`,
  `table`, `step`, `§`) and not a numbered heading at the start of a line ("9.2.1.4. Creating
  tunnels"). A dotted quad elsewhere is an address, even 1.2.3.4: a four-part version number
  survives only with its word in front (the sample's Debian handbook had 40 section numbers that
  the bare pattern took for addresses).
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

from flm.pipelines.config import PiiConfig
from flm.pipelines.prepare.accounting import record_redactions
from flm.pipelines.prepare.schema import SOURCE, SUBSET

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                   r"[A-Za-z]{2,24}(?![\w-])", re.ASCII)
IPV4 = re.compile(r"(?<![\w.])((?:(?:v|version|release|ver\.?|section|sect\.|chapter|figure|table|step|appendix|§)"
                  r"\s*)?)"
                  r"((?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3})(?![\w.]\w|\w)",
                  re.IGNORECASE | re.ASCII)
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


def numbered_heading(m: re.Match[str]) -> bool:
    """A dotted quad alone at the start of its line, then '. ' or a capitalised word: "9.2.1.4. Tunnels"."""
    text, start, end = m.string, m.start(), m.end()
    if text[text.rfind("\n", 0, start) + 1:start].strip():
        return False
    after = text[end:end + 2]
    return after in (". ", ".\n") or (after[:1] == " " and after[1:].isupper())


def digits(value: str) -> int:
    return sum(c.isdigit() for c in value)


class Redactor:
    """The enabled kinds, each a (kind, pattern, replace-function) applied in turn."""

    def __init__(self, cfg: PiiConfig) -> None:
        ph = cfg.placeholders
        self.rules: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str | None]]] = []
        if cfg.emails:
            self.rules.append(("email", EMAIL, lambda m: ph["email"]))
        if cfg.id_numbers:  # before phones: an ID number holds a run of 11 digits
            self.rules.append(("id_number", ID_NUMBER, lambda m: ph["id_number"] if id_number_valid(m[0]) else None))
        if cfg.phone_numbers:
            self.rules.append(("phone", PHONE_INTL, lambda m: ph["phone"] if 8 <= digits(m[0]) <= 15 else None))
            self.rules.append(("phone", PHONE_CN_MOBILE, lambda m: ph["phone"]))
            self.rules.append(("phone", PHONE_CN_LANDLINE, lambda m: ph["phone"]))
        if cfg.ip_addresses:
            self.rules.append(("ip", IPV4, lambda m: None if m[1] or numbered_heading(m) else ph["ip"]))
            self.rules.append(("ip", IPV6, lambda m: ph["ip"] if ipv6_valid(m[0]) else None))

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with every match replaced, and the replacements per kind."""
        counts: dict[str, int] = {}
        for kind, pattern, replace in self.rules:
            if kind in ("email",) and "@" not in text:
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
        for doc in data:
            with self.track_time():
                doc.text, counts = self.redactor.redact(doc.text)
            if counts:
                record_redactions(self, doc.metadata[SOURCE], doc.metadata[SUBSET], counts)
            yield doc
