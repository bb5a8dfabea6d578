"""A GPU checkpoint resumed under another parallel layout: the resharding matrix on 2 GPUs.

For each source layout (TP=2, PP=2, DP=2 on two GPUs) `flm train` trains the 125m stage (dropout 0, so
the layouts compute the same function up to bf16 rounding) for SAVE_AT steps and saves; the same layout
then goes on to SAVE_AT + RESUMED steps (the reference), and every other layout, one GPU included,
resumes the same checkpoint to the same step. A cell is ok when every resumed step's loss is within
TOLERANCE of the reference's: bf16 keeps 8 significant bits (0.4% relative), and a loss near 3 moved by
the other reduction order of another TP/PP/DP split stays well inside 0.02.

Also times saving and loading the 1b stage on one GPU under each optimizer-checkpoint format
(--formats). Prints ONE JSON line and writes it to --out.

    python bench/train_1b.py make-shards --out .gpu_data/bytes
    python bench/reshard.py --shards .gpu_data/bytes --sources tp2,pp2,dp2 --out bench/results/reshard-x.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LAYOUTS = {"tp2": (2, ["parallel.tp=2"]), "pp2": (2, ["parallel.pp=2"]), "dp2": (2, []), "gpu1": (1, [])}
SAVE_AT = 20
RESUMED = 5
TOLERANCE = 0.02
COMMON = ["model.dropout=0", "train.global_batch=16", "train.micro_batch=4", "train.eval_every=0",
          "train.log_every=5", "optim.warmup_steps=5", f"optim.decay_steps={SAVE_AT + RESUMED}"]


def flm_train(procs: int, run_dir: Path, mixture: Path, steps: int, resume: str, sets: list[str],
              stage: str = "125m") -> dict:
    """`flm train` under torchrun with `procs` GPUs; returns its --json result."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
           "-m", "flm.cli.main", "train", "--stage", stage, "--mixture", str(mixture), "--run-dir", str(run_dir),
           "--steps", str(steps), "--resume", resume, "--json"]
    for item in sets:
        cmd += ["--set", item]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def losses(run_dir: Path) -> dict[int, float]:
    from flm.train.trainer.metrics import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}


def matrix(sources: list[str], work: Path, mixture: Path, cells: dict[str, dict], save: Callable[[], None]) -> None:
    """Fill `cells` ("from->to" -> result), calling `save` after each so a cut-off run keeps what it measured."""
    for source in sources:
        procs, sets = LAYOUTS[source]
        src_run = work / source
        flm_train(procs, src_run, mixture, SAVE_AT, "none", [*COMMON, *sets, f"train.save_every={SAVE_AT}"])
        checkpoint = src_run / "checkpoints" / f"step-{SAVE_AT}"
        reference = work / f"{source}-ref"
        flm_train(procs, reference, mixture, SAVE_AT + RESUMED, str(checkpoint), [*COMMON, *sets])
        ref = losses(reference)
        for target in LAYOUTS:
            if target == source:
                continue
            t_procs, t_sets = LAYOUTS[target]
            run_dir = work / f"{source}-to-{target}"
            cell = {"ok": False}
            try:
                flm_train(t_procs, run_dir, mixture, SAVE_AT + RESUMED, str(checkpoint), [*COMMON, *t_sets])
                got = losses(run_dir)
                diffs = [abs(got[s] - ref[s]) for s in range(SAVE_AT + 1, SAVE_AT + RESUMED + 1)]
                cell = {"ok": max(diffs) <= TOLERANCE, "max_abs_loss_diff": max(diffs),
                        "first_loss": got[SAVE_AT + 1], "reference_first_loss": ref[SAVE_AT + 1]}
            except RuntimeError as err:
                cell["error"] = str(err)[-1500:]
            cells[f"{source}->{target}"] = cell
            print(json.dumps({f"{source}->{target}": cell}), file=sys.stderr, flush=True)
            save()


def format_timings(formats: list[str], work: Path, mixture: Path) -> dict[str, dict]:
    """Save and load seconds of the 1b stage's checkpoint on one GPU, per optimizer-checkpoint format."""
    out = {}
    for fmt in formats:
        run_dir = work / f"1b-{fmt}"
        sets = ["train.global_batch=8", "train.micro_batch=4", "train.eval_every=0", "train.save_every=0",
                f"parallel.optimizer_checkpoint={fmt}"]
        first = flm_train(1, run_dir, mixture, 2, "none", sets, stage="1b")
        again = flm_train(1, run_dir, mixture, 3, "latest", sets, stage="1b")
        out[fmt] = {"save_s": round(first["save_seconds"][-1], 2), "load_s": round(again["load_seconds"], 2),
                    "bytes": sum(p.stat().st_size for p in (run_dir / "checkpoints").rglob("*") if p.is_file())}
        shutil.rmtree(run_dir)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/flm-reshard"))
    parser.add_argument("--sources", default="tp2,pp2,dp2")
    parser.add_argument("--formats", default="", help="e.g. dp_reshardable,fully_reshardable")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    mixture = args.work / "mixture.yaml"
    mixture.write_text(json.dumps({"seq_len": 1024, "seed": 1234, "valid_fraction": 0.01,
                                   "cache_dir": str(args.work / "index"),
                                   "sources": [{"name": "sample-bytes", "path": str(args.shards.resolve())}]}))
    started = time.perf_counter()
    report = {"bench": "reshard", "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
              "device": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "stage": "125m",
              "overrides": COMMON, "save_at": SAVE_AT, "resumed_steps": RESUMED, "tolerance": TOLERANCE}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    report["matrix"] = {}
    matrix([s for s in args.sources.split(",") if s], args.work, mixture, report["matrix"], save)
    save()
    formats = [f for f in args.formats.split(",") if f]
    if formats:
        report["checkpoint_formats_1b"] = format_timings(formats, args.work, mixture)
        save()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
