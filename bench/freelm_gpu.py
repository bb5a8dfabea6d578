"""GPU check of the teacher signal (FreeLM) on the megatron engine: teacher steps interleaved with language steps
train, resume exactly and evaluate, on one GPU and, with two or more, under TP=2 (sequence parallel) and PP=2.

Data is generated (no tokenizer, no download, flm.train.teacher.counting): counting token shards (next token =
token + 1 mod 64) and propositions about counting (a run of counting is true; the same run counted down is
false: `broken_by="reverse"`, which the 2-layer tiny model learns after about 100 interleaved teacher steps at a
constant LR of 3e-4, where the harder neighbour swap needs far more; measured on the CPU engine).
Each layout trains `--steps` steps with a teacher step every 3rd, straight and as half + resume; the check
passes when every teacher step logged a finite teacher_loss, the resumed run's losses equal the straight run's
within `--tolerance`, the last 5 teacher steps' accuracy reaches `--min-acc`, and `flm eval --propositions`
reads the checkpoint.

    python bench/freelm_gpu.py [--layouts 1gpu,tp2-sp,pp2,dp2] --out bench/results/freelm-gpu-<device>-<date>.json

Prints one JSON line (per layout: teacher losses, accuracy, resume difference, eval accuracy).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from flm_cli import REPO, flm

from flm.train.teacher.counting import write_counting_data


def make_data(work: Path) -> tuple[Path, Path]:
    """(mixture YAML with a teacher source, held-out proposition shards)."""
    mixture = write_counting_data(work, documents=3000, doc_len=(20, 400), splits={"train": 4000, "valid": 200},
                                  run_len=(6, 30), mixture={"seq_len": 128, "valid_fraction": 0.02,
                                                            "teacher": {"every": 3, "batch": 64, "micro_batch": 16}},
                                  broken_by="reverse")
    return mixture, work / "valid"


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


LAYOUTS = {"1gpu": (1, []), "tp2-sp": (2, ["parallel.tp=2", "parallel.sequence_parallel=true"]),
           "pp2": (2, ["parallel.pp=2"]), "dp2": (2, ["parallel.dp=2"])}


def check_layout(work: Path, mixture: Path, valid: Path, name: str, nproc: int, sets: list[str], steps: int,
                 tolerance: float, min_acc: float) -> dict:
    common = ["train", "--stage", "tiny", "--mixture", str(mixture), "--set", "train.device=cuda",
              "--set", "train.global_batch=32", "--set", "train.micro_batch=8", "--set", "train.eval_every=0",
              "--set", "train.save_every=0", "--set", "train.precision=bf16",
              "--set", "optim.lr=3e-4", "--set", "optim.min_lr=3e-4",
              "--set", f"optim.decay_steps={steps}",  # the half run keeps the whole run's LR schedule
              *[a for s in sets for a in ("--set", s)]]
    straight, resumed = work / name / "straight", work / name / "resumed"
    started = time.perf_counter()
    done = flm(*common, "--run-dir", str(straight), "--steps", str(steps), procs=nproc)
    flm(*common, "--run-dir", str(resumed), "--steps", str(steps // 2), procs=nproc)
    flm(*common, "--run-dir", str(resumed), "--steps", str(steps), procs=nproc)
    a, b = metrics(straight), metrics(resumed)
    teacher = [r for r in a if r.get("signal") == "teacher"]
    diffs = [(abs((x.get(k) or 0) - (y.get(k) or 0)), x["step"], k, x.get(k), y.get(k))
             for x, y in zip(a, b, strict=True) for k in ("loss", "teacher_loss")]
    first_diff = next(({"step": d[1], "key": d[2], "straight": d[3], "resumed": d[4]}
                       for d in diffs if d[0] > tolerance), None)
    evaluated = flm("eval", "--checkpoint", done["checkpoint"], "--propositions", str(valid))
    last = teacher[-5:]
    return {
        "layout": name, "gpus": nproc, "sets": sets, "steps": done["step"],
        "seconds": round(time.perf_counter() - started, 1),
        "teacher_steps": len(teacher),
        "teacher_loss_first_last": [teacher[0]["teacher_loss"], teacher[-1]["teacher_loss"]],
        "teacher_acc_last5": sum(r["teacher_acc"] for r in last) / len(last),
        "all_finite": all(r["teacher_loss"] is not None for r in teacher),
        "resume_max_diff": max(d[0] for d in diffs),
        "resume_first_diff": first_diff, "eval_accuracy": evaluated["accuracy"],
        "eval_choice_accuracy": evaluated["tasks"]["count"].get("choice_accuracy"),
        "ok": bool(all(r["teacher_loss"] is not None for r in teacher) and first_diff is None
                   and sum(r["teacher_acc"] for r in last) / len(last) >= min_acc),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-freelm-gpu")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--min-acc", type=float, default=0.8, help="last 5 teacher steps' accuracy (chance 0.5)")
    parser.add_argument("--layouts", default="1gpu,tp2-sp,pp2,dp2",
                        help="comma-separated, of " + ", ".join(LAYOUTS) + " (2-GPU layouts need 2 GPUs)")
    parser.add_argument("--tolerance", type=float, default=1e-2, help="resume vs straight (bf16 on GPU)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for the GPU engine (tests/test_freelm.py covers the CPU one)")
    work = args.work.resolve()
    mixture, valid = make_data(work)
    gpus = torch.cuda.device_count()
    names = args.layouts.split(",")
    unknown = [n for n in names if n not in LAYOUTS or LAYOUTS[n][0] > gpus]
    if unknown:
        raise SystemExit(f"--layouts: unknown or needing more than {gpus} GPU(s): {', '.join(unknown)}")
    results = [check_layout(work, mixture, valid, name, *LAYOUTS[name], args.steps, args.tolerance, args.min_acc)
               for name in names]
    out = {"bench": "freelm_gpu", "device": torch.cuda.get_device_name(0), "gpus": gpus, "layouts": results,
           "ok": all(r["ok"] for r in results), "command": shlex.join(["python", "bench/freelm_gpu.py", *sys.argv[1:]])}
    print(json.dumps(out))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
