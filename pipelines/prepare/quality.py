"""Quality filtering by profile: each subset goes through its profile's chain of filters.

The chain is built from datatrove's filters (Gopher quality and repetition, C4) and ours
(filters.py); the first filter that rejects a document drops it, counted as
`quality/<filter>:<reason>`. The whole chain is one datatrove filter run by `BaseFilter.run`, so its
`exclusion_writer` (the audit trail) receives every document it drops.
"""

from __future__ import annotations

from dataclasses import asdict, fields

from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.pipeline.writers.disk_base import DiskWriter

from flm.pipelines.config import ProfileConfig, QualityConfig
from flm.pipelines.prepare.accounting import record_drop
from flm.pipelines.prepare.batching import BatchedFilter
from flm.pipelines.prepare.filters import (
    BoilerplateFilter,
    CharRepetitionFilter,
    ChineseQualityFilter,
    CodeQualityFilter,
)
from flm.pipelines.prepare.gopher_quality import FastGopherQualityFilter
from flm.pipelines.prepare.repetition import FastGopherRepetitionFilter
from flm.pipelines.prepare.routing import Router
from flm.pipelines.prepare.words import FastWordTokenizer

ENGLISH = "en"
"""Language of datatrove's word-based filters (only English subsets use them)."""


def build_chain(profile: ProfileConfig, word_tokenizer: str = "fast") -> list[tuple[str, BaseFilter]]:
    """(name, filter) for each filter the profile turns on, in the config's order (cheapest first)."""
    words = FastWordTokenizer(ENGLISH) if word_tokenizer == "fast" else ENGLISH
    factories = {
        "boilerplate": BoilerplateFilter,
        "code": CodeQualityFilter,
        "chinese": ChineseQualityFilter,
        "char_repetition": CharRepetitionFilter,
        "gopher_repetition": lambda c: FastGopherRepetitionFilter(**asdict(c), language=words),
        "gopher_quality": lambda c: FastGopherQualityFilter(**asdict(c), language=words),
        "c4": lambda c: C4QualityFilter(**asdict(c), language=words),
    }
    chain = []
    for f in fields(profile):
        section = getattr(profile, f.name)
        if f.name in factories and section is not None:
            chain.append((f.name, factories[f.name](section)))
    return chain


class QualityFilters(BatchedFilter):
    """Routes each document to its profile's chain; as a datatrove filter its drops reach `exclusion_writer`."""

    name = "🥇 quality (per-subset profiles)"

    def __init__(self, cfg: QualityConfig, exclusion_writer: DiskWriter | None = None) -> None:
        super().__init__(exclusion_writer)
        self.router = Router(cfg)
        self.chains = {name: build_chain(profile, cfg.word_tokenizer) for name, profile in cfg.profiles.items()}

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        profile = self.router.profile_name(doc)
        self.stat_update(f"profile_{profile}")
        for name, step in self.chains[profile]:
            kept, why = get_filter_result(step.filter(doc))
            if not kept:
                reason = f"quality/{name}:{why or 'dropped'}"
                record_drop(self, doc, reason)
                return False, reason
        return True
