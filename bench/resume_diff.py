"""Where a resumed run departs from an unbroken one: both save a checkpoint every step, and the checkpoints after
the resume are compared tensor by tensor (each weight, as its fp32 master where the checkpoint holds one; Adam's
moments and step) through flm's layout-independent checkpoint reader, beside the logged losses.

Data is generated (flm.train.teacher.counting, as in bench/freelm_gpu.py): counting token shards, with a teacher
step every 3rd step unless `--no-teacher`. The first differing step and the tensors that differ most there say
which state a resume restores wrongly.

    python bench/resume_diff.py --set train.device=cuda --set parallel.pp=2 --procs 2 --out /tmp/resume-diff.json
    python bench/resume_diff.py                                  # the CPU engine: every tensor equal

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
from flm_cli import REPO, flm

from flm.train.checkpoint.dist_tensors import MOMENTS
from flm.train.checkpoint.tensors import CheckpointTensors, open_tensors
from flm.train.teacher.counting import write_counting_data


def make_mixture(work: Path, teacher: bool) -> Path:
    mixture = write_counting_data(work, documents=600, doc_len=(20, 400), splits={"train": 800}, run_len=(6, 30),
                                  mixture={"seq_len": 128, "valid_fraction": 0.02,
                                           "teacher": {"every": 3, "batch": 64, "micro_batch": 16}},
                                  broken_by="reverse")
    if teacher:
        return mixture
    spec = json.loads(mixture.read_text(encoding="utf-8"))
    spec.pop("teacher")
    language_only = work / "mixture-language.yaml"
    language_only.write_text(json.dumps(spec), encoding="utf-8")
    return language_only


def tensor_diffs(a: CheckpointTensors, b: CheckpointTensors) -> dict[str, float]:
    """Largest absolute difference per tensor: `name` (weight), `name:exp_avg`, `name:exp_avg_sq`."""
    diffs: dict[str, float] = {}
    for name in sorted(a.shapes):
        diffs[name] = float((a.weight(name).float() - b.weight(name).float()).abs().max())
        ma, mb = a.moments(name), b.moments(name)
        for key in MOMENTS if ma is not None and mb is not None else ():
            diffs[f"{name}:{key}"] = float((ma[key].float() - mb[key].float()).abs().max())
    return diffs


def metrics(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-resume-diff")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--resume-at", type=int, default=3, help="the half run stops here (3: after a teacher step)")
    parser.add_argument("--no-teacher", dest="teacher", action="store_false")
    parser.add_argument("--procs", type=int, default=1, help="processes (torchrun) for a TP/PP/DP layout")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not 0 < args.resume_at < args.steps:
        raise SystemExit("--resume-at must lie between 0 and --steps")
    work = args.work.resolve()
    if (work / "straight").exists():
        raise SystemExit(f"{work} holds an earlier comparison: give a new --work")
    mixture = make_mixture(work / "data", args.teacher)
    common = ["train", "--stage", "tiny", "--mixture", str(mixture), "--set", "train.global_batch=32",
              "--set", "train.micro_batch=8", "--set", "train.eval_every=0", "--set", "train.save_every=1",
              "--set", "train.keep_last=0", "--set", f"optim.decay_steps={args.steps}",
              *[a for s in args.overrides for a in ("--set", s)]]
    straight, resumed = work / "straight", work / "resumed"
    flm(*common, "--run-dir", str(straight), "--steps", str(args.steps), procs=args.procs)
    flm(*common, "--run-dir", str(resumed), "--steps", str(args.resume_at), procs=args.procs)
    flm(*common, "--run-dir", str(resumed), "--steps", str(args.steps), procs=args.procs)
    logged_a, logged_b = metrics(straight), metrics(resumed)
    steps = []
    for step in range(args.resume_at, args.steps + 1):
        a = open_tensors(straight / "checkpoints" / f"step-{step}")
        b = open_tensors(resumed / "checkpoints" / f"step-{step}")
        diffs = tensor_diffs(a, b)
        differing = sorted(((d, n) for n, d in diffs.items() if d > 0), reverse=True)
        steps.append({"step": step, "signal": logged_a[step].get("signal", "language"),
                      "loss": [logged_a[step].get("loss"), logged_b[step].get("loss")],
                      "teacher_loss": [logged_a[step].get("teacher_loss"), logged_b[step].get("teacher_loss")],
                      "adam_step": [a.adam_step, b.adam_step], "tensors": len(diffs), "differing": len(differing),
                      "largest": [{"tensor": n, "max_abs_diff": d} for d, n in differing[:10]]})
    first = next((s["step"] for s in steps if s["differing"] or s["adam_step"][0] != s["adam_step"][1]), None)
    out = {"bench": "resume_diff", "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "teacher": args.teacher, "overrides": args.overrides, "procs": args.procs, "resume_at": args.resume_at,
           "first_differing_checkpoint": first, "steps": steps,
           "command": shlex.join(["python", "bench/resume_diff.py", *sys.argv[1:]])}
    print(json.dumps(out))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
