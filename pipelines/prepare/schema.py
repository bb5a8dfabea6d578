"""The document schema inside the pipeline and in the clean shards.

Inside the pipeline a datatrove `Document` carries, in `metadata`, the source, the subset (Pile's
`pile_set_name`, WuDao's `dataType`), the original metadata and the size of the text as read (so
dropped bytes add up to bytes in). Clean shards hold exactly `{"text", "id", "source", "meta"}`.
"""

from __future__ import annotations

from typing import Any

from datatrove.data import Document

SOURCE = "source"
SUBSET = "subset"
META = "meta"
BYTES_IN = "bytes_in"
LANG = "lang"
LANG_SCORE = "lang_score"

UNKNOWN_SUBSET = ""
"""Subset of a record whose subset could not be read (a malformed line, a corrupt file)."""


def make_document(text: str, doc_id: str, source: str, subset: str, meta: dict[str, Any], nbytes: int) -> Document:
    return Document(text=text, id=doc_id,
                    metadata={SOURCE: source, SUBSET: subset, META: meta, BYTES_IN: nbytes})


def clean_record(doc: Document) -> dict[str, Any]:
    """The line written to a clean shard; only the original metadata goes under `meta`."""
    return {"text": doc.text, "id": doc.id, "source": doc.metadata[SOURCE], "meta": doc.metadata.get(META, {})}

