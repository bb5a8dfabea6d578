"""The datatrove stages of one source, assembled from its `PipelineConfig`.

    filter           read -> normalize -> [decontaminate] -> langid -> quality -> [PII] -> [exact sigs]
                     -> filtered copy -> [MinHash sigs]
    exact_find       datatrove ExactFindDedups                        (1 task)
    exact_filter     filtered copy -> exact filter -> unique copy -> MinHash sigs   (only with both dedups)
    minhash_buckets  datatrove MinhashDedupBuckets                    (1 task per bucket)
    minhash_cluster  datatrove MinhashDedupCluster                    (1 task)
    write            last copy -> [exact or MinHash filter] -> clean shards

Dedup compares documents across all tasks of a source. datatrove's dedup filters find documents
by their index in the stream their signatures were computed on, so two of them cannot follow each
other in one pass; and if MinHash saw exact copies, the two dedups could each keep a different
copy of a pair and drop both. So exact dedup runs first, on its own pass, and MinHash signs only
what it kept. With both dedups off, `filter` writes the clean shards itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter, ExactFindDedups

from flm.pipelines.config import PipelineConfig
from flm.pipelines.prepare.accounting import Accounted
from flm.pipelines.prepare.audit import DROPPED_DIR, AuditWriter
from flm.pipelines.prepare.decontam import HITS_DIR, Decontaminate
from flm.pipelines.prepare.dedup import (
    EXACT_REASON,
    MINHASH_REASON,
    PassThroughExactSignature,
    ShingledMinhashSignature,
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

FILTER, EXACT_FIND, EXACT_FILTER, MINHASH_BUCKETS, MINHASH_CLUSTER, WRITE = (
    "filter", "exact_find", "exact_filter", "minhash_buckets", "minhash_cluster", "write")


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

    filtered, unique = plan.data_dir("filtered"), plan.data_dir("unique")
    exact_sigs, exact_dups = plan.data_dir("exact_sigs"), plan.data_dir("exact_dups")
    mh_sigs, mh_buckets, mh_remove = (plan.data_dir("minhash_sigs"), plan.data_dir("minhash_buckets"),
                                      plan.data_dir("minhash_remove"))
    exact, minhash = cfg.exact_dedup.enabled, cfg.minhash.enabled
    first = head_steps(cfg, plan)
    if exact:
        first.append(PassThroughExactSignature(exact_sigs, exact_config()))
    first.append(intermediate_writer(filtered))
    if minhash and not exact:
        first.append(ShingledMinhashSignature(mh_sigs, cfg.minhash))
    stages = [Stage(FILTER, first, tasks, workers, plan.stage_dir(FILTER),
                    [*read_outputs, filtered, exact_sigs, mh_sigs])]
    last_copy = filtered
    if exact:
        stages.append(Stage(EXACT_FIND, [ExactFindDedups(exact_sigs, exact_dups, exact_config())], 1, 1,
                            plan.stage_dir(EXACT_FIND), [exact_dups]))
        exact_filter = Accounted(ExactDedupFilter(exact_dups, exact_config(),
                                                  exclusion_writer=audit(cfg, plan, "exact_dedup", EXACT_REASON)),
                                 EXACT_REASON)
    if exact and minhash:
        stages.append(Stage(EXACT_FILTER, [RankReader(filtered), exact_filter, intermediate_writer(unique),
                                           ShingledMinhashSignature(mh_sigs, cfg.minhash)],
                            tasks, workers, plan.stage_dir(EXACT_FILTER), [unique, mh_sigs, f"{dropped}/exact_dedup"]))
        last_copy = unique
    last: list[PipelineStep] = [RankReader(last_copy)]
    if minhash:
        mh = minhash_config(cfg.minhash)
        buckets = cfg.minhash.num_buckets
        stages.append(Stage(MINHASH_BUCKETS, [MinhashDedupBuckets(mh_sigs, mh_buckets, config=mh)], buckets,
                            min(workers, buckets), plan.stage_dir(MINHASH_BUCKETS), [mh_buckets]))
        stages.append(Stage(MINHASH_CLUSTER, [MinhashDedupCluster(mh_buckets, mh_remove, config=mh)], 1, 1,
                            plan.stage_dir(MINHASH_CLUSTER), [mh_remove]))
        last.append(Accounted(MinhashDedupFilter(mh_remove, exclusion_writer=audit(cfg, plan, "minhash",
                                                                                    MINHASH_REASON)),
                              MINHASH_REASON))
    else:
        last.append(exact_filter)
    last.append(writer)
    write_outputs = [plan.progress_dir("write"), f"{dropped}/{'minhash' if minhash else 'exact_dedup'}"]
    stages.append(Stage(WRITE, last, tasks, workers, plan.stage_dir(WRITE), write_outputs))
    return stages
