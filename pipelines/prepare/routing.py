"""Which filter profile a document goes through: by its subset, from the pipeline config."""

from __future__ import annotations

from datatrove.data import Document

from flm.pipelines.config import ProfileConfig, QualityConfig
from flm.pipelines.prepare.schema import SUBSET


class Router:
    def __init__(self, cfg: QualityConfig) -> None:
        self.cfg = cfg

    def profile_name(self, doc: Document) -> str:
        return self.cfg.routes.get(doc.metadata[SUBSET], self.cfg.default_profile)

    def profile(self, doc: Document) -> ProfileConfig:
        return self.cfg.profiles[self.profile_name(doc)]
