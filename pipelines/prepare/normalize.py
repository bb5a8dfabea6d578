"""Text normalisation: Unicode form, control characters, whitespace; indentation is kept (code)."""

from __future__ import annotations

import re
import unicodedata

from datatrove.data import Document
from datatrove.pipeline.writers.disk_base import DiskWriter

from flm.pipelines.config import NormalizeConfig
from flm.pipelines.prepare.accounting import record_drop
from flm.pipelines.prepare.batching import BatchedFilter

EMPTY = "normalize/empty"

# C0/C1 controls except tab and newline, plus invisible format characters (zero-width spaces and
# joiners, bidi marks, word joiner, BOM, soft hyphen).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_LINE_BREAK = re.compile("\r\n?|[\u2028\u2029\x85]")
_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING = re.compile("[ \t]+\n")
_BLANK_RUN = re.compile("\n{3,}")


def normalize_text(text: str, cfg: NormalizeConfig) -> str:
    """Each substitution runs only where a character it could change occurs (a test at C speed; `isascii` is
    free, CPython records it): ASCII text has no Unicode spaces, no forms to fix and one line break to
    rewrite, the carriage return."""
    if cfg.fix_whitespace and (not text.isascii() or "\r" in text):
        text = _LINE_BREAK.sub("\n", text)  # before control stripping: \r and \x85 are line breaks here
    if cfg.unicode_form != "none" and not text.isascii():
        text = unicodedata.normalize(cfg.unicode_form, text)
    if cfg.strip_control:
        text = _CONTROL.sub("", text)
    if cfg.fix_whitespace:
        if not text.isascii():
            text = _SPACES.sub(" ", text)
        if " \n" in text or "\t\n" in text:
            text = _TRAILING.sub("\n", text)
        if "\n\n\n" in text:
            text = _BLANK_RUN.sub("\n\n", text)
        text = text.strip()
    return text


class TextNormalizer(BatchedFilter):
    """Normalises each document's text; a document left empty is dropped (and counted)."""

    type = "✂️ - FORMAT"
    name = "🧹 normalize"

    def __init__(self, cfg: NormalizeConfig, exclusion_writer: DiskWriter | None = None) -> None:
        super().__init__(exclusion_writer)
        self.cfg = cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        doc.text = normalize_text(doc.text, self.cfg)
        if doc.text:
            return True
        record_drop(self, doc, EMPTY)
        return False, EMPTY
