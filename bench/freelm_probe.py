"""Which proposition tasks a language-only checkpoint can learn from the teacher signal alone, and how fast.

A diagnostic for bench/freelm.py's tasks that stay at chance: from one language-only checkpoint, train only
teacher steps (constant learning rate, AdamW from zero state) on a chosen subset of a proposition set, then
score the held-out propositions per task. A task that learns alone but not in the mixture is short of teacher
steps (its share of them); one that does not learn alone is beyond the model at that size and training.

    python bench/freelm_probe.py --checkpoint CKPT --tokenizer TOK --variant all \\
        --variant en_source:tasks=en_source --variant old-en_source:mapping=OLD.yaml,tasks=en_source

A variant is NAME[:key=value,...] with keys tasks (a '+'-joined list; default all), mapping (default the bundled
set) and steps (default --steps). Prints one JSON line: per variant, held-out accuracy per task with its
majority and chance figures, and the last 50 steps' training accuracy.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml
from flm_cli import REPO, flm

from flm.pipelines.propositions import PropositionShards
from flm.train.checkpoint import load_checkpoint, read_meta, resolve_checkpoint
from flm.train.distributed.parallel import distributed
from flm.train.engine import make_engine
from flm.train.teacher import TeacherConfig, TeacherData, TeacherSourceConfig
from flm.train.teacher.evaluate import score_propositions, task_accuracy

BUNDLED = REPO / "data" / "sample" / "propositions" / "mapping.yaml"


def subset(mapping: Path, tasks: list[str] | None, out: Path) -> Path:
    """A copy of the mapping with only `tasks` (files made absolute), written to OUT."""
    doc = yaml.safe_load(mapping.read_text(encoding="utf-8"))
    doc["tasks"] = [{**t, "file": str((mapping.parent / t["file"]).resolve())} for t in doc["tasks"]
                    if tasks is None or t["name"] in tasks]
    if not doc["tasks"]:
        raise SystemExit(f"{mapping}: none of the tasks {tasks}")
    out.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out


def probe(checkpoint: Path, propositions: Path, steps: int, batch: int, lr: float) -> dict:
    path = resolve_checkpoint(checkpoint)
    meta = read_meta(path)
    stage = meta.load_stage()
    with distributed(stage, seed=stage.train.seed) as parallel:
        engine = make_engine(stage, stage.model.vocab_size, parallel)
        load_checkpoint(path, model=engine.module)
        cfg = TeacherConfig(sources=[TeacherSourceConfig(name="probe", path=propositions / "train")], batch=batch,
                            micro_batch=batch)
        data = TeacherData(cfg, seed=1, tokenizer_hash=meta.tokenizer_hash, vocab_size=stage.model.vocab_size,
                           max_seq=stage.model.seq_len)
        verdicts = torch.tensor([data.token_ids["false"], data.token_ids["true"]])
        for group in engine.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        accuracy = []
        started = time.process_time()
        for _ in range(steps):
            engine.zero_grad()
            _, right, count = engine.teacher_forward_backward(data.step_batches(0, 1), verdicts)
            engine.step(engine.grad_norm(), stage.optim.clip_grad)
            accuracy.append(right / count)
        valid = PropositionShards(propositions / "valid")
        tasks = task_accuracy(valid, score_propositions(engine.module, valid, engine.device))
    keep = ("accuracy", "majority", "choice_accuracy", "chance")
    return {"steps": steps, "cpu_seconds": round(time.process_time() - started, 1),
            "train_accuracy_last50": sum(accuracy[-50:]) / len(accuracy[-50:]),
            "tasks": {name: {k: t[k] for k in keep if k in t} for name, t in sorted(tasks.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a language-only checkpoint")
    parser.add_argument("--tokenizer", type=Path, required=True, help="the checkpoint's tokenizer folder")
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-freelm-probe")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # CPU seconds stay comparable on a shared machine
    results = {}
    for spec in args.variant:
        name, _, rest = spec.partition(":")
        opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        folder = args.work.resolve() / name
        folder.mkdir(parents=True, exist_ok=True)
        mapping = subset(Path(opts.get("mapping", BUNDLED)).resolve(),
                         opts["tasks"].split("+") if "tasks" in opts else None, folder / "mapping.yaml")
        flm("data", "propositions", str(mapping), "--tokenizer", str(args.tokenizer), "--out",
            str(folder / "propositions"))
        results[name] = probe(args.checkpoint, folder / "propositions", int(opts.get("steps", args.steps)),
                              args.batch, args.lr)
    out = {"bench": "freelm_probe", "checkpoint": str(args.checkpoint), "batch": args.batch, "lr": args.lr,
           "variants": results, "command": shlex.join(["python", "bench/freelm_probe.py", *sys.argv[1:]])}
    print(json.dumps(out, ensure_ascii=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
