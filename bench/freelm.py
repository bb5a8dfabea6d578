"""FreeLM's teacher signal on the bundled sample: the same small model trained twice on the same language tokens,
language-only (the baseline) and with teacher steps interleaved (every k-th step one), then compared on
held-out propositions (teacher accuracy) and on the held-out language split (validation loss).

Data: the quickstart's data stages on the bundled sample (`flm run quickstart --stages
raw,prepare,tokenizer,tokenize,mixture`) and the bundled proposition set (data/sample/propositions, built
by scripts/build_propositions.py) made into shards with that tokenizer (`flm data propositions`; 20% of its
instances held out). The teacher run has language_steps + language_steps / (every - 1) steps, so both runs
train on exactly the same language samples in the same order.

    python bench/freelm.py --out bench/results/freelm-cpu-<date>.json

Prints one JSON line: held-out teacher accuracy with and without the teacher signal (per task, with the
majority-label and random-choice baselines), both validation losses and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import yaml
from flm_cli import REPO, flm

PROPOSITIONS = REPO / "data" / "sample" / "propositions" / "mapping.yaml"


def prepare(work: Path, every: int, batch: int, micro_batch: int) -> tuple[Path, Path, Path]:
    """(language-only mixture, mixture with teacher sources, held-out proposition shards), made once per --work."""
    if not (work / "mixture.yaml").is_file():
        flm("run", "quickstart", "--out", str(work), "--stages", "raw,prepare,tokenizer,tokenize,mixture")
    if not (work / "propositions" / "valid" / "manifest.json").is_file():
        flm("data", "propositions", str(PROPOSITIONS), "--tokenizer", str(work / "tokenizer"), "--out",
            str(work / "propositions"))
    mixture = yaml.safe_load((work / "mixture.yaml").read_text(encoding="utf-8"))
    mixture.pop("teacher", None)  # the quickstart's own teacher block (on by default) is not the baseline's
    language_only = work / "mixture-language.yaml"
    language_only.write_text(yaml.safe_dump(mixture, allow_unicode=True, sort_keys=False), encoding="utf-8")
    mixture["teacher"] = {"every": every, "batch": batch, "micro_batch": micro_batch,
                          "sources": [{"name": "sample-tasks", "path": str(work / "propositions" / "train")}]}
    with_teacher = work / "mixture-teacher.yaml"
    with_teacher.write_text(yaml.safe_dump(mixture, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return language_only, with_teacher, work / "propositions" / "valid"


def run(work: Path, name: str, stage: str, mixture: Path, steps: int, overrides: list[str], valid: Path) -> dict:
    run_dir = work / "runs" / stage / name  # one folder per model: a run dir resumes only its own
    started = time.perf_counter()
    trained = flm("train", "--stage", stage, "--mixture", str(mixture), "--run-dir", str(run_dir), "--steps",
                  str(steps), *[a for o in overrides for a in ("--set", o)])
    seconds = time.perf_counter() - started
    checkpoint = trained["checkpoint"]
    language = flm("eval", "--checkpoint", checkpoint)
    teacher = flm("eval", "--checkpoint", checkpoint, "--propositions", str(valid))
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    step_seconds = {signal: statistics.median(r["step_time_s"] for r in steps if r.get("signal", "language") == signal)
                    for signal in ("language", "teacher") if any(r.get("signal", "language") == signal for r in steps)}
    return {"device": trained["device"], "steps": trained["step"], "train_seconds": round(seconds, 1),
            "median_step_seconds": step_seconds,
            "tokens_seen": trained["tokens_seen"], "val_loss": language["val_loss"], "val_tokens": language["tokens"],
            **{f"teacher_{k}": teacher[k] for k in ("accuracy", "majority", "choice_accuracy", "chance")},
            "teacher_tasks": teacher["tasks"], "checkpoint": checkpoint}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-freelm")
    parser.add_argument("--stage", default="tiny", help="the model both runs train (a larger one on a GPU)")
    parser.add_argument("--language-steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=2, help="every k-th step is a teacher step")
    parser.add_argument("--batch", type=int, default=32, help="propositions per teacher step")
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--set", dest="overrides", action="append", default=["train.device=cpu", "train.save_every=0",
                                                                              "train.eval_every=0"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = args.work.resolve()
    started = time.perf_counter()
    load_start = os.getloadavg()[0]  # the machine may be shared: seconds are comparable only at similar load
    language_only, with_teacher, valid = prepare(work, args.every, args.batch, args.micro_batch)
    steps = args.language_steps + args.language_steps // (args.every - 1)
    base = run(work, "language-only", args.stage, language_only, args.language_steps, args.overrides, valid)
    teacher = run(work, "teacher", args.stage, with_teacher, steps, args.overrides, valid)
    if base["tokens_seen"] != teacher["tokens_seen"]:
        raise SystemExit(f"the runs saw different language tokens: {base['tokens_seen']} vs {teacher['tokens_seen']}")
    props = sum(t["propositions"] for t in teacher["teacher_tasks"].values())
    majority = sum(t["majority"] * t["propositions"] for t in teacher["teacher_tasks"].values()) / props
    choice = {name: {k: t.get(k) for k in ("lang", "choice_accuracy", "chance")}
              for name, t in teacher["teacher_tasks"].items() if "choice_accuracy" in t}
    result = {
        "bench": "freelm", "stage": args.stage,
        "device": teacher["device"] if teacher["device"] != "cpu"
        else f"cpu ({platform.processor() or platform.machine()})",
        "language_steps": args.language_steps, "teacher_every": args.every, "teacher_batch": args.batch,
        "teacher_steps": steps - args.language_steps, "language_tokens": teacher["tokens_seen"],
        "heldout_propositions": props,
        "teacher_accuracy": teacher["teacher_accuracy"], "baseline_teacher_accuracy": base["teacher_accuracy"],
        "majority_label_accuracy": majority,
        "choice_accuracy_all": teacher["teacher_choice_accuracy"],
        "baseline_choice_accuracy_all": base["teacher_choice_accuracy"], "choice_chance_all": teacher["teacher_chance"],
        "statement_accuracy": {name: t["accuracy"] for name, t in teacher["teacher_tasks"].items()
                               if "choice_accuracy" not in t},
        "statement_majority": {name: t["majority"] for name, t in teacher["teacher_tasks"].items()
                               if "choice_accuracy" not in t},
        "choice_accuracy": {name: c["choice_accuracy"] for name, c in choice.items()},
        "choice_chance": {name: c["chance"] for name, c in choice.items()},
        "baseline_choice_accuracy": {name: base["teacher_tasks"][name].get("choice_accuracy") for name in choice},
        "val_loss": teacher["val_loss"], "baseline_val_loss": base["val_loss"],
        "val_loss_ratio": teacher["val_loss"] / base["val_loss"],
        "runs": {"language-only": base, "teacher": teacher},
        "seconds": round(time.perf_counter() - started, 1),
        "command": shlex.join(["python", "bench/freelm.py", *sys.argv[1:]]),
        "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]},
    }
    line = json.dumps(result, ensure_ascii=False)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
