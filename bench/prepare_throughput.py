"""`flm data prepare` throughput per worker on the bundled sample, next to datatrove's Gopher filters, same run.

Runs the default pipeline of each source (configs/pipelines/{pile,wudao}.yaml: read, normalize,
decontamination against the bundled eval sets, language id, per-subset quality profiles, PII
redaction, exact + MinHash dedup, 16384-doc shards) with ONE worker
on data/sample/raw through `flm.pipelines.prepare.prepare`: what `flm data prepare --workers 1` runs,
child process and datatrove executors included. The same call on the finished output (every task
skipped) measures the fixed start-up, reported beside the throughput with and without it.

Baseline, timed in the same run: datatrove's GopherRepetitionFilter + GopherQualityFilter with
their defaults, in process, over the Pile sample's text (the DESIGN.md anchor: about 0.25 MB/s per
core for these two filters). MB are UTF-8 text bytes read. Wall time and CPU time are both
reported (the best of the repeats by CPU time): on a machine shared with other work, CPU seconds
(this process and the pipeline process it waits for) say what one worker costs, wall seconds also
what it waited for. Prints ONE JSON line.

    python bench/prepare_throughput.py [--raw data/sample/raw] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from flm.config import find_config, load_config
from flm.pipelines.config import PipelineConfig
from flm.pipelines.prepare import prepare
from flm.pipelines.prepare.source_plan import WORK_DIR
from flm.recipe.run import sample_eval_sets

SOURCES = ("pile", "wudao")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pipeline process and its workers)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def step_seconds(out: Path, source: str) -> dict[str, float]:
    """Seconds in each step of each stage (datatrove's own timers, from the stages' stats.json): where the time went."""
    seconds = {}
    for stats in sorted((out / WORK_DIR / source / "stages").glob("*/stats.json")):
        for step in json.loads(stats.read_text(encoding="utf-8")):
            if isinstance(step.get("time_stats"), dict):
                name = step["name"].split(": ", 1)[-1]
                seconds[f"{stats.parent.name}/{name}"] = round(step["time_stats"]["total"], 3)
    return seconds


def run_source(source: str, raw: Path, out: Path) -> dict:
    cfg = load_config(PipelineConfig, find_config(source, "pipelines"), ["executor.workers=1"])
    cfg.decontam.enabled, cfg.decontam.benchmarks = True, sample_eval_sets()  # the new steps on (PII is by default)
    start, cpu = time.perf_counter(), cpu_seconds()
    result = prepare([cfg], raw, out)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    start, startup_cpu = time.perf_counter(), cpu_seconds()
    prepare([cfg], raw, out)  # everything completed: start-up, planning and summary only
    startup, startup_cpu = time.perf_counter() - start, cpu_seconds() - startup_cpu
    t = result.sources[source].totals
    mb = t.bytes_in / 1e6
    return {"docs_in": t.docs_in, "docs_kept": t.docs_kept, "mb_in": round(mb, 3),
            "mb_kept": round(t.bytes_kept / 1e6, 3), "tasks": result.sources[source].tasks,
            "wall_s": round(wall, 2), "startup_s": round(startup, 2), "cpu_s": round(cpu, 2),
            "startup_cpu_s": round(startup_cpu, 2),
            "docs_per_s": round(t.docs_in / wall, 1), "mb_per_s": round(mb / wall, 4),
            "steady_docs_per_s": round(t.docs_in / (wall - startup), 1),
            "steady_mb_per_s": round(mb / (wall - startup), 4), "mb_per_cpu_s": round(mb / cpu, 4),
            "step_seconds": step_seconds(out, source), "dropped": t.dropped, "redacted": t.redacted}


def gopher_baseline(raw: Path) -> dict:
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    texts = []
    for path in sorted((raw / "pile").glob("*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as reader:
            texts += [json.loads(line)["text"] for line in reader.read().decode("utf-8").splitlines()]
    load_word_tokenizer("en").word_tokenize("warm up spaCy before timing")
    repetition, quality = GopherRepetitionFilter(), GopherQualityFilter()
    start, cpu = time.perf_counter(), time.process_time()
    kept = 0
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        kept += repetition.filter(doc) is True and quality.filter(doc) is True
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    return {"docs": len(texts), "kept": kept, "mb": round(mb, 3), "seconds": round(seconds, 2),
            "cpu_s": round(cpu, 2), "docs_per_s": round(len(texts) / seconds, 1), "mb_per_s": round(mb / seconds, 4),
            "mb_per_cpu_s": round(mb / cpu, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=Path("data/sample/raw"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append({s: run_source(s, args.raw, Path(tmp) / "clean") for s in SOURCES})
    best = {s: min((r[s] for r in runs), key=lambda x: x["cpu_s"]) for s in SOURCES}
    baseline = min((gopher_baseline(args.raw) for _ in range(args.repeats)), key=lambda x: x["cpu_s"])
    docs = sum(b["docs_in"] for b in best.values())
    mb = sum(b["mb_in"] for b in best.values())
    wall = sum(b["wall_s"] for b in best.values())
    steady = wall - sum(b["startup_s"] for b in best.values())
    cpu = sum(b["cpu_s"] for b in best.values())
    out = {
        "bench": "prepare_throughput",
        "metric": "documents/s and MB/s (UTF-8 text read) per worker, default pipeline, bundled sample",
        "workers": 1,
        "docs_per_s_per_worker": round(docs / wall, 1),
        "mb_per_s_per_worker": round(mb / wall, 4),
        "steady_docs_per_s_per_worker": round(docs / steady, 1),
        "steady_mb_per_s_per_worker": round(mb / steady, 4),
        "baseline": "datatrove GopherRepetitionFilter + GopherQualityFilter (defaults), in process, Pile sample",
        "baseline_mb_per_s": baseline["mb_per_s"],
        "baseline_docs_per_s": baseline["docs_per_s"],
        "ratio_mb_per_s_to_baseline": round((mb / wall) / baseline["mb_per_s"], 3),
        "ratio_steady_mb_per_s_to_baseline": round((mb / steady) / baseline["mb_per_s"], 3),
        "mb_per_cpu_s_per_worker": round(mb / cpu, 4),
        "baseline_mb_per_cpu_s": baseline["mb_per_cpu_s"],
        "ratio_mb_per_cpu_s_to_baseline": round((mb / cpu) / baseline["mb_per_cpu_s"], 3),
        "sources": best,
        "baseline_detail": baseline,
        "docs_in": docs,
        "mb_in": round(mb, 3),
        "repeats": args.repeats,
        "python": platform.python_version(),
        "cpu": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
