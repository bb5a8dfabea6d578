"""The datatrove stages of one source, assembled from its `PipelineConfig`.

    filter           read -> normalize -> [decontaminate] -> langid -> quality -> [PII] -> [exact sigs]
                     -> [MinHash sigs] -> filtered copy
    exact_find       datatrove ExactFindDedups, then the exact duplicates' MinHash sigs deleted   (1 task)
    minhash_buckets  datatrove MinhashDedupBuckets    (1 task per 256 MB of input, up to 1 per bucket)
    minhash_cluster  datatrove MinhashDedupCluster                    (1 task)
    write            filtered copy -> dedup filter (exact + MinHash) -> clean shards

Dedup compares documents across all tasks of a source, so it needs every task's signatures before
any document can be dropped. Both signatures are computed in the filter pass, which reads the raw
input once, and only ids and hashes move between the stages after it. If MinHash saw exact
copies, the two dedups could each keep a different copy of a pair and drop both: so the exact
duplicates' MinHash signatures are deleted before MinHash compares any, which is what signing a
second, exact-deduplicated pass would give. Both dedups' drops are indices in the filtered copy,
applied by one filter. With both dedups off, `filter` writes the clean shards itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import MinhashDedupCluster

from flm.pipelines.config import PipelineConfig
from flm.pipelines.prepare.audit import DROPPED_DIR, AuditWriter
from flm.pipelines.prepare.decontam import HITS_DIR, Decontaminate
from flm.pipelines.prepare.dedup import (
    EXACT_REASON,
    MINHASH_REASON,
    DedupFilter,
    ExactFindAndPrune,
    GroupedMinhashBuckets,
    PassThroughExactSignature,
    PassThroughMinhashSignature,
    bucket_tasks,
    exact_config,
    minhash_config,
)
from flm.pipelines.prepare.langid import LanguageId
from flm.pipelines.prepare.normalize import TextNormalizer
from flm.pipelines.prepare.pii import PiiRedactor
from flm.pipelines.prepare.quality import QualityFilters
from flm.pipelines.prepare.readers import RawReader
from flm.pipelines.prepare.source_plan import SourcePlan
from flm.pipelines.prepare.writer import CleanShardWriter, RankReader, intermediate_writer

FILTER, EXACT_FIND, MINHASH_BUCKETS, MINHASH_CLUSTER, WRITE = (
    "filter", "exact_find", "minhash_buckets", "minhash_cluster", "write")


@dataclass
class Stage:
    name: str
    pipeline: list[PipelineStep]
    tasks: int
    workers: int
    logging_dir: str
    outputs: list[str] = field(default_factory=list)
    """Folders this stage fills; cleared with its completions when an earlier stage had to run again."""


def audit(cfg: PipelineConfig, plan: SourcePlan, step: str, reason: str = "") -> AuditWriter | None:
    """The exclusion writer of a dropping step when the audit trail is on."""
    return AuditWriter(plan.clean_dir, step, cfg.audit, reason=reason) if cfg.audit.enabled else None


def head_steps(cfg: PipelineConfig, plan: SourcePlan) -> list[PipelineStep]:
    """read -> normalize -> decontaminate -> langid -> quality -> PII: everything before dedup."""
    steps: list[PipelineStep] = [RawReader(plan.input_dir, cfg.source, cfg.reader.patterns, cfg.reader.exclude,
                                           plan.work_dir, limit=cfg.reader.limit)]
    if cfg.normalize.enabled:
        steps.append(TextNormalizer(cfg.normalize, audit(cfg, plan, "normalize")))
    if cfg.decontam.enabled:
        steps.append(Decontaminate(plan.work_dir, f"{plan.work_dir}/{HITS_DIR}", audit(cfg, plan, "decontam")))
    if cfg.langid.enabled:
        steps.append(LanguageId(cfg.langid, cfg.quality, audit(cfg, plan, "langid")))
    if cfg.quality.enabled:
        steps.append(QualityFilters(cfg.quality, audit(cfg, plan, "quality")))
    if cfg.pii.enabled:
        steps.append(PiiRedactor(cfg.pii))
    return steps


def build_stages(cfg: PipelineConfig, plan: SourcePlan) -> list[Stage]:
    tasks, workers = plan.tasks, plan.workers
    writer = CleanShardWriter(plan.clean_dir, cfg.writer.docs_per_shard, plan.progress_dir("write"))
    dropped = f"{plan.clean_dir}/{DROPPED_DIR}"
    read_outputs = [plan.progress_dir("read"), f"{plan.work_dir}/bad_input", f"{plan.work_dir}/{HITS_DIR}",
                    *(f"{dropped}/{step}" for step in ("normalize", "decontam", "langid", "quality"))]
    if not (cfg.exact_dedup.enabled or cfg.minhash.enabled):
        return [Stage(FILTER, [*head_steps(cfg, plan), writer], tasks, workers, plan.stage_dir(FILTER),
                      [*read_outputs, plan.progress_dir("write")])]

    filtered = plan.data_dir("filtered")
    exact_sigs, exact_dups = plan.data_dir("exact_sigs"), plan.data_dir("exact_dups")
    mh_sigs, mh_buckets, mh_remove = (plan.data_dir("minhash_sigs"), plan.data_dir("minhash_buckets"),
                                      plan.data_dir("minhash_remove"))
    exact, minhash = cfg.exact_dedup.enabled, cfg.minhash.enabled
    mh = minhash_config(cfg.minhash)
    first = head_steps(cfg, plan)
    if exact:
        first.append(PassThroughExactSignature(exact_sigs, exact_config()))
    if minhash:
        first.append(PassThroughMinhashSignature(mh_sigs, cfg.minhash))
    first.append(intermediate_writer(filtered))
    stages = [Stage(FILTER, first, tasks, workers, plan.stage_dir(FILTER),
                    [*read_outputs, filtered, exact_sigs, mh_sigs])]
    if exact:  # also deletes the MinHash signatures of the exact duplicates
        stages.append(Stage(EXACT_FIND, [ExactFindAndPrune(exact_sigs, exact_dups, mh_sigs if minhash else None, tasks,
                                                            mh)], 1, 1, plan.stage_dir(EXACT_FIND), [exact_dups]))
    if minhash:
        buckets = bucket_tasks(plan.input_bytes, cfg.minhash.num_buckets)
        stages.append(Stage(MINHASH_BUCKETS, [GroupedMinhashBuckets(mh_sigs, mh_buckets, config=mh)], buckets,
                            min(workers, buckets), plan.stage_dir(MINHASH_BUCKETS), [mh_buckets]))
        stages.append(Stage(MINHASH_CLUSTER, [MinhashDedupCluster(mh_buckets, mh_remove, config=mh)], 1, 1,
                            plan.stage_dir(MINHASH_CLUSTER), [mh_remove]))
    writers = {EXACT_REASON: audit(cfg, plan, "exact_dedup", EXACT_REASON) if exact else None,
               MINHASH_REASON: audit(cfg, plan, "minhash", MINHASH_REASON) if minhash else None}
    last = [RankReader(filtered), DedupFilter(exact_dups if exact else None, mh_remove if minhash else None, writers),
            writer]
    write_outputs = [plan.progress_dir("write"), *(f"{dropped}/{step}" for step in ("exact_dedup", "minhash"))]
    stages.append(Stage(WRITE, last, tasks, workers, plan.stage_dir(WRITE), write_outputs))
    return stages
