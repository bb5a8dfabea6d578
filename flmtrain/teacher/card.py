"""The model card's section on judging propositions, for a model trained with the teacher signal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flm.pipelines.propositions.shards import JUDGE_TOKEN, VERDICT_TOKENS


def _token_ids(sources: list[dict[str, Any]]) -> dict[str, int] | None:
    for source in sources:
        try:
            manifest = json.loads((Path(source["path"]) / "manifest.json").read_text(encoding="utf-8"))
            return {k: int(v) for k, v in manifest["extra"]["token_ids"].items()}
        except (OSError, KeyError, TypeError, ValueError):
            continue
    return None


def teacher_card(mixture: dict[str, Any] | None) -> list[str]:
    """Markdown lines saying how an exported model scores a proposition; none when it had no teacher signal."""
    teacher = (mixture or {}).get("teacher") or {}
    sources = teacher.get("sources") or []
    if not sources:
        return []
    ids = _token_ids(sources)
    judge, false, true = (f"{name} (id {ids[key]})" if ids else name for name, key in
                          ((JUDGE_TOKEN, "judge"), (VERDICT_TOKENS[0], "false"), (VERDICT_TOKENS[1], "true")))
    return [
        "## Judging propositions (FreeLM teacher signal)", "",
        f"One training step in {teacher.get('every')} was a teacher step on true/false propositions "
        f"({', '.join(s.get('name', '?') for s in sources)}). To judge a statement with this model: tokenize it, "
        f"append {judge}, run the model, and read the last position's logits: logit[{true}] - logit[{false}] > 0 "
        "means judged true. For a multiple-choice question, write one statement per option and pick the option "
        "whose statement scores highest.", ""]
