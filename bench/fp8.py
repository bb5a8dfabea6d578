"""Float8 GEMMs (`model.precision: fp8`, issue 23) on one GPU: correctness, GEMM speed and training quality.

Subcommands (`run` does check + quality in fresh processes and writes one JSON; `report` merges it with a
`bench/train_throughput.py run --fp8` result into the committed JSON and draws the loss curves):
  check    fp8_linear against a float64 reference of the same bf16 operands at the 1b stage's layer shapes
           (forward, data gradient, weight gradient; bias; an odd token count), saturation of the cast, and
           one 1b layer's four linears, forward + backward at 16,384 tokens, timed in bf16 and in fp8.
  breakdown  per GEMM and per cast of one 1b layer, bf16 against fp8, and a profile of the fp8 layer step.
  resume   (--resume-check) the 125m stage in fp8, 20 steps straight and resumed from its step-10 checkpoint.
  quality  the 125m stage from one init on the bundled sample tokens, N steps in bf16 and then in fp8
           (same data order): validation losses, the loss curves, and the largest jump of the training
           loss over its minimum of the previous 20 steps (a spike).

    python bench/fp8.py run --mixture .gpu_data/fx/mixture.yaml --work /tmp/fp8 --out $OUT/fp8-run.json
    python bench/fp8.py run --mixture .gpu_data/fx/mixture.yaml --out $OUT/fp8-resume.json --skip-check \\
        --skip-quality --resume-check
    python bench/fp8.py report --run fp8-run.json --speed train_throughput-h200-2026-12-01.json \\
        --resume fp8-resume.json --out bench/results/fp8-h200-2026-12-01.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

QUALITY = ["train.global_batch=16", "train.micro_batch=16", "train.eval_every=50", "train.eval_batches=8",
           "train.save_every=0", "train.keep_last=1", "train.log_every=1", "optim.warmup_steps=30",
           "train.precision=bf16"]
LAYER = {"tokens": 16384, "hidden": 2048, "ffn": 5632}
"""The 1b stage's layer (SwiGLU: FFN in is 2 x 5632 wide) at micro-batch 8 x seq 2048."""
SPIKE_WINDOW = 20


def rel(a: Any, ref: Any) -> float:
    return float((a.double() - ref).norm() / ref.norm())


def check() -> dict[str, Any]:
    import torch

    from flm.train.model.fp8 import E4M3, E5M2, check_fp8_device, dequantize, fp8_linear, quantize, quantize_reference

    dev = torch.device("cuda")
    check_fp8_device(dev)
    torch.manual_seed(0)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(), "capability": torch.cuda.get_device_capability()}
    errs = {}
    for name, (m, k, n, bias) in {"qkv": (4096, 2048, 6144, True), "fc2": (4096, 5632, 2048, False),
                                  "odd_tokens": (4000 + 3, 2048, 2048, True)}.items():
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16, requires_grad=True)
        w = (torch.randn(n, k, device=dev) * k**-0.5).to(torch.bfloat16).requires_grad_()
        b = torch.randn(n, device=dev, dtype=torch.bfloat16, requires_grad=True) if bias else None
        g = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
        y = fp8_linear(x, w, b)
        gx, gw, *gb = torch.autograd.grad(y, [x, w, *([b] if bias else [])], g)
        xd, wd, gd = x.detach().double(), w.detach().double(), g.double()
        ref = xd @ wd.t() + (b.detach().double() if bias else 0)
        errs[name] = {"forward": rel(y, ref), "data_grad": rel(gx, gd @ wd), "weight_grad": rel(gw, gd.t() @ xd)}
        if bias:
            errs[name]["bias_grad"] = rel(gb[0], gd.sum(0))
    out["rel_error_vs_fp64"] = errs
    q = {}
    for dtype in (E4M3, E5M2):
        x = torch.randn(1 << 20, device=dev) * 3.0
        x8, _, inv = quantize(x[None], dtype)
        q[str(dtype).split(".")[-1]] = {"round_trip_rel_error": rel(dequantize(x8, inv)[0], x.double()),
                                        "max_abs_in_format": float(x8.float().abs().max()),
                                        "format_max": torch.finfo(dtype).max}
    out["quantize"] = q
    same = {}
    for dtype in (E4M3, E5M2):  # the Triton cast against the torch reference, bit for bit
        x = torch.randn(3000 + 5, 2048 + 16, device=dev, dtype=torch.bfloat16) * 7.0
        y, yt, inv = quantize(x, dtype, transpose=True)
        ry, ryt, rinv = quantize_reference(x, dtype, transpose=True)
        same[str(dtype).split(".")[-1]] = {
            "bytes_equal_fraction": float((y.view(torch.uint8) == ry.view(torch.uint8)).float().mean()),
            "transpose_equal": bool(torch.equal(yt.view(torch.uint8), ryt.view(torch.uint8))
                                    and torch.equal(yt.t().view(torch.uint8), y.view(torch.uint8))),
            "inv_scale_equal": bool(inv == rinv)}
    out["cast_vs_reference"] = same
    limits = {"forward": 0.05, "data_grad": 0.1, "weight_grad": 0.1, "bias_grad": 0.02}
    out["passed"] = all(v <= limits[k] for e in errs.values() for k, v in e.items()) and all(
        c["transpose_equal"] and c["inv_scale_equal"] and c["bytes_equal_fraction"] > 0.999 for c in same.values())
    out["limits"] = limits
    out["layer_timing"] = layer_timing()
    return out


def layer_timing() -> dict[str, Any]:
    """One 1b layer's four linears, forward + backward (no attention or norms), bf16 against fp8 (with its
    casts), median of 20 after warm-up; TFLOP/s counted on the bf16-equivalent 3 x 2 x tokens x K x N."""
    import torch
    import torch.nn.functional as F

    from flm.train.model.fp8 import fp8_linear

    dev = torch.device("cuda")
    t, h, f = LAYER["tokens"], LAYER["hidden"], LAYER["ffn"]
    shapes = {"qkv": (h, 3 * h), "proj": (h, h), "fc1": (h, 2 * f), "fc2": (f, h)}
    ws = {k: (torch.randn(n, kk, device=dev) * kk**-0.5).to(torch.bfloat16).requires_grad_()
          for k, (kk, n) in shapes.items()}
    xs = {k: torch.randn(t, kk, device=dev, dtype=torch.bfloat16, requires_grad=True) for k, (kk, _) in shapes.items()}
    gs = {k: torch.randn(t, n, device=dev, dtype=torch.bfloat16) for k, (_, n) in shapes.items()}
    flops = sum(3 * 2 * t * kk * n for kk, n in shapes.values())

    def step(fn: Any) -> None:
        for k in shapes:
            y = fn(xs[k], ws[k])
            y.backward(gs[k])

    res = {}
    for name, fn in (("bf16", F.linear), ("fp8", fp8_linear)):
        for _ in range(5):
            step(fn)
        times = []
        for _ in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            step(fn)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        med = statistics.median(times)
        res[name] = {"ms": round(med * 1e3, 3), "tflops_bf16_equivalent": round(flops / med / 1e12, 1)}
    res["speedup"] = round(res["bf16"]["ms"] / res["fp8"]["ms"], 3)
    res["shape"] = LAYER
    return res


def cuda_ms(fn: Any, reps: int = 10) -> float:
    """Median milliseconds of fn() over reps, timed with CUDA events after 3 warm-up calls."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return round(statistics.median(times), 4)


def breakdown(table_path: Path | None) -> dict[str, Any]:
    """Where one 1b layer's fp8 linears spend their time: each GEMM in bf16 and in fp8 (operands cast
    beforehand; with and without fast accumulation), each cast (amax + scale + cast, with and without the
    transposed copy), and a torch.profiler table of the whole fp8 layer step."""
    import torch

    from flm.train.model.fp8 import E4M3, E5M2, _mm, fp8_linear, quantize

    dev = torch.device("cuda")
    t, h, f = LAYER["tokens"], LAYER["hidden"], LAYER["ffn"]
    shapes = {"qkv": (h, 3 * h), "proj": (h, h), "fc1": (h, 2 * f), "fc2": (f, h)}
    out: dict[str, Any] = {}
    for name, (k, n) in shapes.items():
        x = torch.randn(t, k, device=dev, dtype=torch.bfloat16)
        w = (torch.randn(n, k, device=dev) * k**-0.5).to(torch.bfloat16)
        g = torch.randn(t, n, device=dev, dtype=torch.bfloat16)
        x8, x8t, sx = quantize(x, E4M3, transpose=True)
        w8, w8t, sw = quantize(w, E4M3, transpose=True)
        g8, g8t, sg = quantize(g, E5M2, transpose=True)
        row: dict[str, Any] = {"bf16_fwd": cuda_ms(lambda x=x, w=w: x @ w.t()),
                               "bf16_dgrad": cuda_ms(lambda g=g, w=w: g @ w),
                               "bf16_wgrad": cuda_ms(lambda g=g, x=x: g.t() @ x)}
        for fast in (True, False):
            tag = "fast" if fast else "exact"
            for gemm, args in (("fwd", (x8, w8, sx, sw, torch.bfloat16)), ("dgrad", (g8, w8t, sg, sw, torch.bfloat16)),
                               ("wgrad", (g8t, x8t, sg, sx, torch.float32))):
                row[f"fp8_{gemm}_{tag}"] = cuda_ms(partial(_mm, *args, fast=fast))
        for label, tensor, dtype in (("x", x, E4M3), ("w", w, E4M3), ("g", g, E5M2)):
            row[f"cast_{label}"] = cuda_ms(lambda tensor=tensor, dtype=dtype: quantize(tensor, dtype))
            row[f"cast_{label}_with_t"] = cuda_ms(lambda tensor=tensor, dtype=dtype: quantize(tensor, dtype,
                                                                                             transpose=True))
        row["amax_x_eager"] = cuda_ms(lambda x=x: torch.linalg.vector_norm(x, float("inf")))
        out[name] = row
    if table_path is not None:
        ws = {k: (torch.randn(n, kk, device=dev) * kk**-0.5).to(torch.bfloat16).requires_grad_()
              for k, (kk, n) in shapes.items()}
        xs = {k: torch.randn(t, kk, device=dev, dtype=torch.bfloat16, requires_grad=True)
              for k, (kk, _) in shapes.items()}
        for _ in range(3):
            for k in shapes:
                fp8_linear(xs[k], ws[k]).sum().backward()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for k in shapes:
                fp8_linear(xs[k], ws[k]).sum().backward()
            torch.cuda.synchronize()
        table_path.write_text(prof.key_averages().table(sort_by="device_time_total", row_limit=40,
                                                        max_name_column_width=100))
    return out


# ------------------------------------------------------------------------------------------ quality


def phase(stage: str, mixture: Path, run_dir: Path, steps: int, overrides: list[str], resume: str = "none") -> None:
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
    (run_dir / "result.json").write_text(json.dumps({**result.__dict__, "wall_s": time.perf_counter() - started},
                                                    default=str) + "\n")


def largest_spike(losses: list[float]) -> float:
    """The largest rise of a step's loss over the minimum of the previous SPIKE_WINDOW steps."""
    return max((losses[i] - min(losses[i - SPIKE_WINDOW:i]) for i in range(SPIKE_WINDOW, len(losses))),
               default=0.0)


def quality(mixture: Path, work: Path, steps: int, stage: str) -> dict[str, Any]:
    from flm.train.trainer.metrics import read_metrics

    runs = {}
    for name, extra in (("bf16", []), ("fp8", ["model.precision=fp8"])):
        run_dir = work / name
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.perf_counter()
        cmd = [sys.executable, str(Path(__file__).resolve()), "phase", stage, str(mixture), str(run_dir), str(steps),
               *QUALITY, *extra]
        print(f"[{name}] {' '.join(cmd)}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
        records = read_metrics(run_dir / "metrics.jsonl")
        train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
        val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        result = json.loads((run_dir / "result.json").read_text())
        steady = [r["tokens_per_s"] for r in records if r.get("tokens_per_s") and r["step"] > 5]
        runs[name] = {"val_loss": result["val_loss"], "final_loss": result["loss"],
                      "skipped_steps": result["skipped_steps"], "largest_spike": round(largest_spike(
                          [x for _, x in train]), 4), "tokens_per_s_median": statistics.median(steady) if steady
                      else None, "wall_s": round(time.perf_counter() - started, 1), "curve": train, "val_curve": val}
    bf, f8 = runs["bf16"]["val_loss"], runs["fp8"]["val_loss"]
    return {"stage": stage, "steps": steps, "overrides": QUALITY, "mixture": str(mixture),
            "val_loss_bf16": bf, "val_loss_fp8": f8, "val_loss_rel_diff": round(abs(f8 - bf) / bf, 5),
            "runs": runs}


def resume_check(mixture: Path, work: Path, stage: str, steps: int = 20) -> dict[str, Any]:
    """fp8 keeps no state: a run resumed from its step-steps/2 checkpoint continues the straight run's curve (up to
    the GPU's own nondeterminism, which bf16 shows as well: bench/results/train_1b-h200-2026-11-30.json)."""
    from flm.train.trainer.metrics import read_metrics

    half = steps // 2
    sets = [*QUALITY, "model.precision=fp8", f"train.save_every={half}", "train.eval_every=0", "train.keep_last=2"]
    straight, resumed = work / "resume-straight", work / "resume-resumed"
    for path in (straight, resumed):
        shutil.rmtree(path, ignore_errors=True)
    for run_dir, resume in ((straight, "none"), (resumed, str(straight / "checkpoints" / f"step-{half}"))):
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "phase", "--resume", resume, stage, str(mixture),
                        str(run_dir), str(steps), *sets], check=True)
    a = {r["step"]: r["loss"] for r in read_metrics(straight / "metrics.jsonl")}
    b = {r["step"]: r["loss"] for r in read_metrics(resumed / "metrics.jsonl")}
    diffs = [abs(a[s] - b[s]) for s in range(half + 1, steps + 1)]
    return {"stage": stage, "steps": steps, "resume_at": half, "resumed_steps": sorted(b),
            "max_abs_loss_diff_after_resume": max(diffs), "bit_identical_after_resume": max(diffs) == 0.0,
            "straight": [a[s] for s in sorted(a)], "resumed": [b[s] for s in sorted(b)]}


# ------------------------------------------------------------------------------------------- report


def report(run: dict[str, Any], speed: dict[str, Any], out: Path, command: str,
           resume: dict[str, Any] | None = None) -> dict[str, Any]:
    q = run["quality"]
    fp8 = speed.get("fp8") or {}
    result = {
        "bench": "fp8",
        "device": run["device"],
        "command": command,
        "commands": {"run": run["command"], "speed": speed["command"], "resume": resume and resume["command"]},
        "date": time.strftime("%Y-%m-%d"),
        "torch": run["torch"],
        "fp8_speedup_vs_bf16": fp8.get("speedup_vs_bf16"),
        "val_loss_bf16": q["val_loss_bf16"],
        "val_loss_fp8": q["val_loss_fp8"],
        "val_loss_rel_diff": q["val_loss_rel_diff"],
        "targets": {"fp8_speedup_vs_bf16": 1.3, "val_loss_rel_diff": 0.01},
        "met": {"speed": bool(fp8.get("met")), "quality": q["val_loss_rel_diff"] <= 0.01},
        "speed": {"tokens_per_s_bf16": speed["tokens_per_s"]["flm"], "tokens_per_s_fp8": fp8.get("tokens_per_s"),
                  "mfu_bf16": speed["mfu"], "mfu_fp8_bf16_equivalent": fp8.get("mfu_bf16_equivalent"),
                  "micro_batch_bf16": speed["flm"].get("micro_batch"),
                  "micro_batch_fp8": (fp8.get("run") or {}).get("micro_batch"),
                  "by_micro_batch": {"bf16": speed["flm"].get("tokens_per_s_by_micro_batch"),
                                     "fp8": (fp8.get("run") or {}).get("tokens_per_s_by_micro_batch")},
                  "peak_memory_gib": {"bf16": speed["flm"].get("peak_memory_gib"),
                                      "fp8": (fp8.get("run") or {}).get("peak_memory_gib")},
                  "source": "bench/train_throughput.py --fp8 (same run, same shape: the 1b stage at vocab 100256)"},
        "check": run["check"],
        "resume": resume and resume["resume"],
        "quality": {k: v for k, v in q.items() if k != "runs"} | {
            "runs": {n: {k: v for k, v in r.items() if k not in ("curve", "val_curve")} for n, r in q["runs"].items()}},
        "curves": {n: {"train": r["curve"], "val": r["val_curve"]} for n, r in q["runs"].items()},
        "png": out.with_suffix(".png").name,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(q, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k not in ("curves", "check", "quality")}))
    return result


def plot(q: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, color in (("bf16", "tab:blue"), ("fp8", "tab:red")):
        r = q["runs"][name]
        steps, losses = zip(*r["curve"], strict=True)
        ax.plot(steps, losses, color=color, lw=0.8, alpha=0.7, label=f"{name} train")
        vs, vl = zip(*r["val_curve"], strict=True)
        ax.plot(vs, vl, "o-", color=color, ms=3, label=f"{name} validation (final {r['val_loss']:.4f})")
    ax.set(xlabel="step", ylabel="loss", title=f"{q['stage']} stage, bf16 vs fp8 GEMMs, one init")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--mixture", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/flm-fp8"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage", default="125m")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--resume-check", action="store_true", help="also: fp8 run resumed from a checkpoint")
    p.add_argument("--skip-check", action="store_true")
    q = sub.add_parser("phase")
    q.add_argument("stage")
    q.add_argument("mixture", type=Path)
    q.add_argument("run_dir", type=Path)
    q.add_argument("steps", type=int)
    q.add_argument("--resume", default="none")
    q.add_argument("overrides", nargs="*")
    b = sub.add_parser("breakdown")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--table", type=Path)
    r = sub.add_parser("report")
    r.add_argument("--run", type=Path, required=True)
    r.add_argument("--speed", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--resume", type=Path, help="a `run --resume-check` result to include")
    args = parser.parse_args()
    command = "python bench/fp8.py " + " ".join(sys.argv[1:])
    if args.cmd == "breakdown":
        args.out.write_text(json.dumps(breakdown(args.table), indent=1) + "\n")
        print(args.out.read_text())
    elif args.cmd == "phase":
        phase(args.stage, args.mixture, args.run_dir, args.steps, args.overrides, args.resume)
    elif args.cmd == "report":
        report(json.loads(args.run.read_text()), json.loads(args.speed.read_text()), args.out, command,
               json.loads(args.resume.read_text()) if args.resume else None)
    else:
        import torch

        out: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "command": command}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not args.skip_check:
            out["check"] = check()
            args.out.write_text(json.dumps(out) + "\n")
            print(json.dumps({"check": out["check"]}), flush=True)
        if args.resume_check:
            out["resume"] = resume_check(args.mixture, args.work, args.stage)
            args.out.write_text(json.dumps(out) + "\n")
            print(json.dumps({k: v for k, v in out["resume"].items()}), flush=True)
        if not args.skip_quality:
            out["quality"] = quality(args.mixture, args.work, args.steps, args.stage)
            args.out.write_text(json.dumps(out) + "\n")
            print(json.dumps({k: v for k, v in out["quality"].items() if k != "runs"}), flush=True)


if __name__ == "__main__":  # dist_checkpointing may start worker processes that re-import this file
    main()
