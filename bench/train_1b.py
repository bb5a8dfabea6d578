"""The `1b` stage on one GPU: 100 steps, checkpoint at 50, resume from it in a fresh process, same curve.

Data: byte-level token shards (token = UTF-8 byte, EOS 256, vocab 257 from their manifest) of the
bundled Pile + WuDao sample, made here with `make-shards` (this machine has zstandard; the GPU
image does not) and carried to the GPU. The model is the 1b stage's shape with the shards' vocabulary.

Phases, each a fresh process running the same `flm.train.trainer.loop.Trainer` that `flm train` runs:
  smoke    the tiny stage, 6 steps with a checkpoint at 3, then resumed from it (megatron path check);
  straight 1b, 100 steps from scratch, dist_checkpointing checkpoints at 50 and 100;
  resumed  1b, `--resume straight/checkpoints/step-50` in a new run dir, on to 100.
Prints ONE JSON line (and writes it to --out): both loss curves, the largest difference over steps
51-100, tokens/s, TFLOP/s and MFU, checkpoint save/load timings, the device and the exact command.

    python bench/train_1b.py make-shards --out .gpu_data/bytes
    python bench/train_1b.py run --shards .gpu_data/bytes --work /tmp/flm1b --out bench/results/x.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

EOS = 256
REPO = Path(__file__).resolve().parent.parent
STEPS = 100
RESUME_AT = 50
ONE_B = ["train.global_batch=16", "train.micro_batch=4", f"train.save_every={RESUME_AT}", "train.keep_last=2",
         f"train.eval_every={RESUME_AT}", "train.eval_batches=4", f"optim.decay_steps={STEPS}", "train.log_every=10"]
SMOKE = ["train.global_batch=8", "train.micro_batch=2", "train.save_every=3", "train.eval_every=3",
         "train.eval_batches=2", "optim.decay_steps=6", "train.precision=bf16"]


def make_shards(out: Path) -> None:
    import numpy as np
    import zstandard

    from flm.pipelines.token_shards import Manifest, documents_to_batch, write_shard

    sample = REPO / "data" / "sample" / "raw"
    texts = []
    for path in sorted((sample / "pile").glob("*.jsonl.zst")):
        with path.open("rb") as fh:
            raw = zstandard.ZstdDecompressor().stream_reader(fh).read().decode("utf-8")
        texts += [(json.loads(line)["text"], "pile") for line in raw.splitlines()]
    for path in sorted((sample / "wudao").glob("*.json")):
        texts += [(doc["content"], "wudao") for doc in json.loads(path.read_text(encoding="utf-8"))]
    tokens = [np.append(np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint32), EOS) for t, _ in texts]
    out.mkdir(parents=True, exist_ok=True)
    batch = documents_to_batch(tokens, [str(i) for i in range(len(tokens))], [s for _, s in texts], [""] * len(texts))
    info = write_shard(out / "part-00000.arrow", [batch])
    Manifest(tokenizer_hash="utf8-bytes-v1", vocab_size=EOS + 1, eos_id=EOS, shards=[info],
             command="python bench/train_1b.py make-shards").save(out)
    print(json.dumps({"docs": info.rows, "tokens": info.tokens, "out": str(out)}))


def phase(stage: str, mixture: Path, run_dir: Path, steps: int, resume: str, overrides: list[str]) -> None:
    """One training run in this process (what `flm train` does), logging to run_dir/metrics.jsonl."""
    import logging

    from flm.config import find_config, load_config
    from flm.train.config import StageConfig
    from flm.train.data.config import MixtureConfig
    from flm.train.trainer.loop import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stage_cfg = load_config(StageConfig, find_config(stage, "stages"), overrides)
    started = time.perf_counter()
    result = train(stage_cfg, load_config(MixtureConfig, mixture), run_dir, steps=steps, resume=resume)
    summary = {**result.__dict__, "wall_s": time.perf_counter() - started}
    (run_dir / "result.json").write_text(json.dumps(summary, default=str) + "\n")


def _spawn(name: str, *args: str) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "phase", *args]
    print(f"[{name}] {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def _curve(run_dir: Path) -> list[dict]:
    from flm.train.trainer.metrics import read_metrics

    return read_metrics(run_dir / "metrics.jsonl")


def run(shards: Path, work: Path, out: Path, command: str) -> dict:
    import torch

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    mixture = work / "mixture.yaml"
    mixture.write_text(json.dumps({"seq_len": 2048, "seed": 1234, "valid_fraction": 0.01,
                                   "cache_dir": str(work / "index"),
                                   "sources": [{"name": "sample-bytes", "path": str(shards.resolve())}]}))
    smoke_mix = work / "smoke.yaml"
    smoke_mix.write_text(mixture.read_text().replace('"seq_len": 2048', '"seq_len": 128'))
    timings = {}
    timings["smoke_first_s"] = _spawn("smoke", "tiny", str(smoke_mix), str(work / "smoke"), "3", "none", *SMOKE)
    timings["smoke_resume_s"] = _spawn("smoke", "tiny", str(smoke_mix), str(work / "smoke"), "6", "latest", *SMOKE)
    straight, resumed = work / "straight", work / "resumed"
    timings["straight_s"] = _spawn("straight", "1b", str(mixture), str(straight), str(STEPS), "none", *ONE_B)
    shutil.rmtree(straight / "checkpoints" / f"step-{STEPS}")  # disk: keep only what the resume needs
    timings["resumed_s"] = _spawn("resumed", "1b", str(mixture), str(resumed), str(STEPS),
                                  str(straight / "checkpoints" / f"step-{RESUME_AT}"), *ONE_B)
    a, b = _curve(straight), _curve(resumed)
    loss_a = {r["step"]: r["loss"] for r in a}
    loss_b = {r["step"]: r["loss"] for r in b}
    after = [s for s in range(RESUME_AT + 1, STEPS + 1)]
    diffs = [abs(loss_a[s] - loss_b[s]) for s in after]
    steady = [r for r in a if r["step"] > 5 and not r.get("val_loss")]
    result_a = json.loads((straight / "result.json").read_text())
    result_b = json.loads((resumed / "result.json").read_text())
    smoke = json.loads((work / "smoke" / "result.json").read_text())
    report = {
        "bench": "train_1b",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "stage": "1b",
        "overrides": ONE_B,
        "params": result_a["params"],
        "seq_len": 2048,
        "tokens_per_step": 16 * 2048,
        "data": "UTF-8 bytes of the bundled Pile + WuDao sample (vocab 257 from the shards' manifest)",
        "steps": STEPS,
        "resume_at": RESUME_AT,
        "loss_first": loss_a[1],
        "loss_at_resume": loss_a[RESUME_AT],
        "loss_last_straight": loss_a[STEPS],
        "loss_last_resumed": loss_b[STEPS],
        "val_loss_straight": result_a["val_loss"],
        "val_loss_resumed": result_b["val_loss"],
        "resumed_steps": sorted(loss_b),
        "max_abs_loss_diff_after_resume": max(diffs),
        "mean_abs_loss_diff_after_resume": statistics.fmean(diffs),
        "bit_identical_after_resume": max(diffs) == 0.0,
        "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in steady),
        "tflops_per_gpu_median": statistics.median(r["tflops_per_gpu"] for r in steady),
        "mfu_median": statistics.median(r["mfu"] for r in steady) if steady[0]["mfu"] is not None else None,
        "skipped_steps": result_a["skipped_steps"] + result_b["skipped_steps"],
        "smoke_tiny": {"status": smoke["status"], "start_step": smoke["start_step"], "step": smoke["step"],
                       "loss": smoke["loss"]},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "checkpoint_save_s": [round(x, 1) for x in result_a["save_seconds"] + result_b["save_seconds"]],
        "checkpoint_load_s": round(result_b["load_seconds"], 1),
        "straight_curve": [[r["step"], r["loss"]] for r in a],
        "resumed_curve": [[r["step"], r["loss"]] for r in b],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if not k.endswith("_curve")}))
    return report


def baseline(shards: Path, work: Path, out: Path, command: str, steps: int) -> dict:
    """Two identical runs from scratch: how far GPU nondeterminism alone moves the loss curve."""
    import torch

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    mixture = work / "mixture.yaml"
    mixture.write_text(json.dumps({"seq_len": 2048, "seed": 1234, "valid_fraction": 0.01,
                                   "cache_dir": str(work / "index"),
                                   "sources": [{"name": "sample-bytes", "path": str(shards.resolve())}]}))
    overrides = [*ONE_B, "train.save_every=0", "train.eval_every=0", "train.keep_last=1"]
    for name in ("a", "b"):
        _spawn(name, "1b", str(mixture), str(work / name), str(steps), "none", *overrides)
        shutil.rmtree(work / name / "checkpoints")
    a = {r["step"]: r["loss"] for r in _curve(work / "a")}
    b = {r["step"]: r["loss"] for r in _curve(work / "b")}
    diffs = {s: abs(a[s] - b[s]) for s in range(1, steps + 1)}
    report = {"bench": "train_1b_nondeterminism", "command": command,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "steps": steps, "step1_identical": diffs[1] == 0.0, "step2_abs_diff": diffs[2],
              "max_abs_loss_diff": max(diffs.values()),
              "mean_abs_loss_diff_from_step_2": statistics.fmean(diffs[s] for s in range(2, steps + 1)),
              "curve_a": [[s, a[s]] for s in sorted(a)], "curve_b": [[s, b[s]] for s in sorted(b)]}
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("curve")}))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-shards")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("run")
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/flm-train-1b"))
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("baseline")
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/flm-train-1b-baseline"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=60)
    p = sub.add_parser("phase")
    p.add_argument("stage")
    p.add_argument("mixture", type=Path)
    p.add_argument("run_dir", type=Path)
    p.add_argument("steps", type=int)
    p.add_argument("resume")
    p.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.cmd == "make-shards":
        make_shards(args.out)
    elif args.cmd == "baseline":
        baseline(args.shards, args.work, args.out, "python bench/train_1b.py " + " ".join(sys.argv[1:]), args.steps)
    elif args.cmd == "run":
        run(args.shards, args.work, args.out, "python bench/train_1b.py " + " ".join(sys.argv[1:]))
    else:
        phase(args.stage, args.mixture, args.run_dir, args.steps, args.resume, args.overrides)


if __name__ == "__main__":  # dist_checkpointing starts worker processes that re-import this file
    main()
