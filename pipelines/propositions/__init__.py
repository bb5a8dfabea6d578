"""Task data as propositions (FreeLM's teacher signal): a YAML mapping over JSONL files -> proposition shards."""

from flm.pipelines.propositions.build import PropositionStats, build_propositions
from flm.pipelines.propositions.mapping import PropositionMapping, TaskMapping
from flm.pipelines.propositions.shards import (
    JUDGE_TOKEN,
    VERDICT_TOKENS,
    PropositionShards,
    teacher_token_ids,
)

__all__ = ["JUDGE_TOKEN", "VERDICT_TOKENS", "PropositionMapping", "PropositionShards", "PropositionStats",
           "TaskMapping", "build_propositions", "teacher_token_ids"]
