"""Training-step throughput on one GPU: flm's step (what `flm train` runs) against transformers + torch.compile.

Shape (issue 9, DESIGN.md anchors): Llama-shaped 1.6B, 24 layers, hidden 2048, 16 heads, SwiGLU FFN
5632, vocab 100256, seq 2048, untied embeddings: flm's `1b` stage at the tokenizer's vocabulary.

Phases, each a fresh process (allocator state and compiled graphs of one do not help another), in this order:
  flm        the 1b stage through `flm.train.engine.make_engine` (megatron-core DDP + distributed optimizer,
             bf16, the stage's `model.kernels` and `optim.fused`), stepped as Trainer._train_step does:
             LR schedule, zero_grad, forward_backward over the global batch's micro-batches, grad norm,
             clip + optimizer step. `--profile`: one more (untimed) step under torch.profiler, giving GPU
             time by kernel class and the attention kernels that ran.
  hf         LlamaForCausalLM of the same shape: fp32 weights, bf16 autocast, model + loss under
             torch.compile, fused AdamW, grad clipping, same global batch; every micro-batch of --hf-micro
             is tried (one process) and the fastest that fits is reported.
             With several --flm-micro, one phase per micro-batch (flm-mb8, flm-mb16, ...): the fastest
             that fits is reported, the others' tokens/s and errors (out of memory) beside it.
  fp8        `--fp8`: the same as flm with `model.precision=fp8` (float8 GEMMs in the transformer layers),
             over the same micro-batches; its speed-up over flm's bf16 step of this run is reported.
  variant-*  `--variant NAME:key=value,...`: flm runs with other stage settings (ablations).
  loss-*     the first steps' losses of the 1b stage from one init on one batch stream: bf16 with the
             kernels (fast), bf16 without them (plain) and fp32 without them (full-precision matmuls):
             the fast path must stay within bf16 tolerance of the fp32 reference.
FLOPs per token: 6·N + 12·L·h·s (flm.train.model.size.flops_per_token; N includes the output head). MFU is
against 989 TFLOP/s (H100 / H200 SXM dense bf16; fp8 runs are counted on the same bf16-equivalent FLOPs).
Prints ONE JSON line and writes it to --out.

    python bench/train_throughput.py run --out bench/results/train_throughput-h100-2026-11-23.json
    python bench/train_throughput.py run --flm-micro 8 16 --fp8 --hf-micro 16 8 --profile --skip-loss-check \
        --steps 5 --warmup 2 --out bench/results/train_throughput-h200-2026-12-01.json   # H200: micro-batches, fp8
    python bench/train_throughput.py run --tiny --out /tmp/tt.json     # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

PEAK_TFLOPS = 989.0
VOCAB = 100256
SEQ = 2048
GLOBAL_BATCH = 32
TINY = ["model.layers=2", "model.hidden=64", "model.heads=4", "model.ffn_hidden=96", "model.seq_len=32"]
PLAIN = ["model.kernels.compile=false", "model.kernels.fused_loss=false", "model.kernels.attention=flash",
         "model.kernels.fuse_wgrad=false", "optim.fused=false"]
"""The trainer as it was before issue 9 (eager pieces, megatron's loss, flash SDPA, foreach AdamW)."""
DESIGN_ANCHOR = 40900.0
"""transformers + torch.compile on this shape, 1x H100, as DESIGN.md's anchor table gives it (tokens/s)."""
LOSS_STEPS = 8
LOSS_SET = ["train.global_batch=8", "train.micro_batch=2", "optim.warmup_steps=2"]


def batch_pool(n: int, seq: int, vocab: int, seed: int) -> Any:
    """n token rows [n, seq + 1] from a fixed random Markov chain over 4096 ids (learnable, not uniform)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    states = rng.choice(vocab, size=min(4096, vocab), replace=False)
    succ = rng.integers(0, len(states), size=(len(states), 8))
    probs = 1.0 / np.arange(1, 9)
    probs /= probs.sum()
    rows = np.empty((n, seq + 1), dtype=np.int64)
    cur = rng.integers(0, len(states), size=n)
    for i in range(seq + 1):
        rows[:, i] = states[cur]
        cur = succ[cur, rng.choice(8, size=n, p=probs)]
    return rows


def stage_config(tiny: bool, overrides: list[str]) -> Any:
    from flm.config import find_config, load_config
    from flm.train.config import StageConfig

    sets = [f"model.vocab_size={300 if tiny else VOCAB}", f"train.global_batch={GLOBAL_BATCH}",
            *(TINY if tiny else []), *overrides]
    return load_config(StageConfig, find_config("1b", "stages"), sets)


def gpu_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def throughput(step_times: list[float], tokens_per_step: int, flops_per_token: float) -> dict[str, Any]:
    median = statistics.median(step_times)
    tps = tokens_per_step / median
    tflops = tps * flops_per_token / 1e12
    return {"tokens_per_s": round(tps, 1), "tflops_per_gpu": round(tflops, 1), "mfu": round(tflops / PEAK_TFLOPS, 4),
            "step_s_median": round(median, 4), "step_s": [round(t, 4) for t in step_times]}


# ------------------------------------------------------------------------------------------- flm


def run_flm(tiny: bool, overrides: list[str], steps: int, warmup: int, profile_dir: Path | None = None,
            fp32_matmul: bool = False) -> dict[str, Any]:
    """Train the 1b stage for warmup + steps steps through the engine `flm train` uses."""
    import torch

    from flm.train.distributed.parallel import distributed, seed_everything
    from flm.train.engine import make_engine
    from flm.train.model.fp8_layers import Fp8ColumnParallelLinear, Fp8RowParallelLinear
    from flm.train.model.size import flops_per_token
    from flm.train.trainer.lr_schedule import LRSchedule

    if fp32_matmul:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    stage = stage_config(tiny, overrides)
    cfg, train = stage.model, stage.train
    num_micro = train.global_batch // train.micro_batch
    total_steps = warmup + steps + (profile_dir is not None)  # the profiled step comes last, untimed
    rows = torch.from_numpy(batch_pool(train.global_batch * total_steps, cfg.seq_len, cfg.vocab_size, seed=7))
    losses, fb_s, opt_s, times = [], [], [], []
    with distributed(stage, seed=train.seed) as parallel:
        seed_everything(train.seed, cuda=parallel.cuda)
        engine = make_engine(stage, cfg.vocab_size, parallel)
        schedule = LRSchedule.from_config(stage.optim, warmup + steps)
        built = time.perf_counter()
        for step in range(total_steps):
            start = step * train.global_batch
            micro = [{"tokens": rows[start + i * train.micro_batch: start + (i + 1) * train.micro_batch]}
                     for i in range(num_micro)]
            prof = _profiler() if step == warmup + steps else None
            if prof is not None:
                prof.__enter__()
            gpu_sync()
            t0 = time.perf_counter()
            schedule.apply(engine.param_groups, step)
            engine.zero_grad()
            loss = float(engine.forward_backward(micro))
            gpu_sync()
            t1 = time.perf_counter()
            grad_norm = engine.grad_norm()
            if math.isfinite(loss) and math.isfinite(grad_norm):
                engine.step(grad_norm, stage.optim.clip_grad)
            gpu_sync()
            t2 = time.perf_counter()
            if prof is not None:
                prof.__exit__(None, None, None)
            losses.append(loss)
            if warmup <= step < warmup + steps:
                times.append(t2 - t0)
                fb_s.append(t1 - t0)
                opt_s.append(t2 - t1)
        warm_s = time.perf_counter() - built
        params = sum(p.numel() for p in engine.module.parameters())
        fp8_types = (Fp8ColumnParallelLinear, Fp8RowParallelLinear)
        fp8_linears = sum(isinstance(m, fp8_types) for m in engine.module.modules())
        out = {"overrides": overrides, "micro_batch": train.micro_batch, "global_batch": train.global_batch,
               "num_micro": num_micro, "params": params, "losses": [round(x, 5) for x in losses],
               **throughput(times, train.global_batch * cfg.seq_len, flops_per_token(cfg)),
               "forward_backward_s_median": round(statistics.median(fb_s), 4),
               "grad_norm_and_step_s_median": round(statistics.median(opt_s), 4),
               "warmup_and_steps_s": round(warm_s, 1), "peak_memory_gib": peak_gib(),
               "kernels": {"compile": cfg.kernels.compile, "fused_loss": cfg.kernels.fused_loss,
                           "attention": cfg.kernels.attention, "fused_adam": stage.optim.fused,
                           "wgrad_fusion_active": bool(engine.module.config.gradient_accumulation_fusion)},
               "precision": train.precision, "gemm_precision": cfg.precision, "fp8_linears": fp8_linears,
               "flops_per_token": flops_per_token(cfg)}
        if profile_dir is not None and prof is not None:
            table = profile_dir / f"profile_{cfg.precision}_mb{train.micro_batch}.txt"
            out["profile"] = _summarise_profile(prof, table)
    return out


def _profiler() -> Any:
    import torch

    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(activities=acts)


KERNEL_CLASSES = [
    ("attention", ("flash", "fmha", "cudnn", "attention", "sdpa", "mha")),
    ("gemm", ("gemm", "nvjet", "xmma", "cutlass", "sm90_", "cublas")),
    ("compiled (triton)", ("triton_",)),
    ("nccl", ("nccl",)),
    ("adam", ("adam",)),
    ("copy / cast / fill", ("copy", "fill", "cast", "memcpy", "memset")),
]


def _summarise_profile(prof: Any, table_path: Path) -> dict[str, Any]:
    """GPU time per kernel class and the attention kernels by name (the full table goes to a file)."""
    events = [e for e in prof.key_averages() if getattr(e, "device_time_total", 0) > 0
              and e.device_type.name == "CUDA"]
    total = sum(e.device_time_total for e in events) or 1.0
    classes: dict[str, float] = {}
    attention: dict[str, float] = {}
    for e in events:
        name = e.key.lower()
        label = next((c for c, keys in KERNEL_CLASSES if any(k in name for k in keys)), "other")
        classes[label] = classes.get(label, 0.0) + e.device_time_total
        if label == "attention":
            attention[e.key[:160]] = round(e.device_time_total / 1e3, 2)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table = prof.key_averages().table(sort_by="device_time_total", row_limit=60, max_name_column_width=110)
    table_path.write_text(table)
    top = sorted(events, key=lambda e: -e.device_time_total)[:25]
    return {"gpu_ms_total": round(total / 1e3, 1),
            "share_by_class": {k: round(v / total, 4) for k, v in sorted(classes.items(), key=lambda kv: -kv[1])},
            "attention_kernels_ms": attention,
            "top_kernels_ms": [[e.key[:120], round(e.device_time_total / 1e3, 2), e.count] for e in top]}


# -------------------------------------------------------------------------------------------- hf


def run_hf(tiny: bool, micro_batches: list[int], steps: int, warmup: int, compile_model: bool) -> dict[str, Any]:
    """LlamaForCausalLM + torch.compile, fp32 master weights with bf16 autocast (the usual recipe)."""
    import gc

    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from flm.train.model.size import flops_per_token

    stage = stage_config(tiny, [])
    m = stage.model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = LlamaConfig(vocab_size=m.vocab_size, hidden_size=m.hidden, intermediate_size=m.ffn_size,
                      num_hidden_layers=m.layers, num_attention_heads=m.heads, num_key_value_heads=m.heads,
                      max_position_embeddings=m.seq_len, rms_norm_eps=m.norm_eps, tie_word_embeddings=False,
                      use_cache=False, attn_implementation="sdpa")
    fpt = flops_per_token(replace(m, vocab_pad_multiple=1))  # transformers does not pad the vocabulary
    rows = torch.from_numpy(batch_pool(GLOBAL_BATCH * (warmup + steps), m.seq_len, m.vocab_size, seed=7))
    errors: dict[int, str] = {}
    tried: dict[int, float] = {}
    best: dict[str, Any] | None = None
    for micro in micro_batches:
        torch.manual_seed(stage.train.seed)
        with device:
            model = LlamaForCausalLM(cfg)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=stage.optim.lr, betas=(stage.optim.beta1, stage.optim.beta2),
                                eps=stage.optim.eps, weight_decay=stage.optim.weight_decay,
                                fused=device.type == "cuda")

        def loss_fn(ids: torch.Tensor, labels: torch.Tensor, model: torch.nn.Module = model) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(input_ids=ids).logits
            return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())

        step_fn = torch.compile(loss_fn) if compile_model else loss_fn
        num_micro = GLOBAL_BATCH // micro
        times, losses = [], []
        try:
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            for step in range(warmup + steps):
                start = step * GLOBAL_BATCH
                gpu_sync()
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                total = 0.0
                for i in range(num_micro):
                    chunk = rows[start + i * micro: start + (i + 1) * micro].to(device)
                    loss = step_fn(chunk[:, :-1], chunk[:, 1:]) / num_micro
                    loss.backward()
                    total += loss.detach()
                torch.nn.utils.clip_grad_norm_(model.parameters(), stage.optim.clip_grad)
                opt.step()
                losses.append(float(total))
                gpu_sync()
                if step >= warmup:
                    times.append(time.perf_counter() - t0)
        except torch.OutOfMemoryError as err:
            errors[micro] = str(err).splitlines()[0][:200]
        else:
            result = {"micro_batch": micro, "global_batch": GLOBAL_BATCH,
                      "params": sum(p.numel() for p in model.parameters()),
                      "losses": [round(x, 5) for x in losses], "compiled": compile_model,
                      **throughput(times, GLOBAL_BATCH * m.seq_len, fpt), "peak_memory_gib": peak_gib(),
                      "flops_per_token": fpt, "transformers": __import__("transformers").__version__}
            tried[micro] = result["tokens_per_s"]
            if best is None or result["tokens_per_s"] > best["tokens_per_s"]:
                best = result
        del model, opt, step_fn
        gc.collect()
        torch.cuda.empty_cache()
        torch._dynamo.reset()
    if best is None:
        raise RuntimeError(f"no micro-batch of {micro_batches} fits: {errors}")
    return {**best, "oom_at": errors, "tokens_per_s_by_micro_batch": tried}


# ----------------------------------------------------------------------------------------- runner


def _spawn(name: str, args: list[str], timeout: float, log_dir: Path) -> dict[str, Any]:
    out = log_dir / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "phase", "--result", str(out), *args]
    print(f"[{name}] {' '.join(cmd)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=max(timeout, 1), capture_output=True, text=True)
        tail = (proc.stdout + proc.stderr)[-1500:]
        ok = proc.returncode == 0 and out.exists()
    except subprocess.TimeoutExpired as err:
        tail, ok = f"timed out after {timeout:.0f}s: {str(err.stderr or '')[-800:]}", False
    (log_dir / f"{name}.log").write_text(tail)
    wall = round(time.perf_counter() - started, 1)
    if not ok:
        print(f"[{name}] FAILED in {wall}s:\n{tail}", file=sys.stderr, flush=True)
        return {"error": tail[-600:], "wall_s": wall}
    result = json.loads(out.read_text())
    result["wall_s"] = wall
    summary = {k: result.get(k) for k in ("tokens_per_s", "mfu", "micro_batch", "peak_memory_gib", "losses")}
    print(f"[{name}] {wall}s {json.dumps(summary)}", file=sys.stderr, flush=True)
    return result


def loss_check(runs: dict[str, dict[str, Any]], tol: float) -> dict[str, Any]:
    ref = runs.get("fp32", {}).get("losses")
    out: dict[str, Any] = {"steps": LOSS_STEPS, "tolerance_abs": tol, "settings": LOSS_SET,
                           "losses": {k: v.get("losses") for k, v in runs.items()}}
    if not ref:
        out["passed"] = False
        out["error"] = "no fp32 reference"
        return out
    for name, run in runs.items():
        if name != "fp32" and run.get("losses"):
            diffs = [abs(a - b) for a, b in zip(run["losses"], ref, strict=True)]
            out[f"max_abs_diff_{name}_vs_fp32"] = round(max(diffs), 5)
    fast = out.get("max_abs_diff_fast_vs_fp32")
    out["loss_fell"] = ref[-1] < ref[0] - 0.5
    out["passed"] = fast is not None and fast <= tol and out["loss_fell"]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    log_dir = args.logs
    log_dir.mkdir(parents=True, exist_ok=True)
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--tiny"] if args.tiny else [])

    def remaining() -> float:
        return args.budget_s - (time.perf_counter() - started)

    def phase(name: str, kind: str, extra: list[str], cap: float) -> dict[str, Any]:
        if remaining() < 30:
            return {"error": "skipped: out of time budget"}
        return _spawn(name, [kind, *common, *extra], min(cap, remaining() - 5), log_dir)

    def sweep(name: str, sets: list[str]) -> dict[str, Any]:
        """One flm phase per micro-batch of --flm-micro; the fastest that ran, with all tried beside it."""
        runs = {mb: phase(f"{name}-mb{mb}", "flm", ["--set", f"train.micro_batch={mb}", *args.flm_set, *sets], 240)
                for mb in args.flm_micro}
        ok = [r for r in runs.values() if "tokens_per_s" in r]
        best = max(ok, key=lambda r: r["tokens_per_s"]) if ok else next(iter(runs.values()))
        return {**best, "tokens_per_s_by_micro_batch": {mb: r.get("tokens_per_s", r.get("error", "")[-160:])
                                                        for mb, r in runs.items()}}

    results: dict[str, Any] = {}
    profile = ["--profile", str(log_dir)] if args.profile else []
    results["flm"] = sweep("flm", profile)
    flm_micro = [f"train.micro_batch={results['flm'].get('micro_batch', args.flm_micro[0])}"]
    if args.fp8:
        results["fp8"] = sweep("fp8", ["model.precision=fp8", *profile])
    results["hf"] = phase("hf", "hf", ["--hf-micro", *map(str, args.hf_micro)]
                          + ([] if args.tiny else ["--compile"]), 300)
    ablations = {}
    for spec in args.variant:
        name, _, sets = spec.partition(":")
        ablations[name] = phase(f"variant-{name}", "flm", ["--set", *flm_micro, *args.flm_set,
                                                           *[s for s in sets.split(",") if s]], 150)
    losses = {}
    if not args.skip_loss_check:
        variants = {"fast": [], "plain": PLAIN,
                    "fp32": [*PLAIN, "model.kernels.attention=auto", "train.precision=fp32"]}  # flash has no fp32
        for name, sets in variants.items():
            run_ = phase(f"loss-{name}", "flm", ["--steps", str(LOSS_STEPS), "--warmup", "0", "--set", *LOSS_SET,
                                                  *args.flm_set, *sets] + (["--fp32-matmul"] if name == "fp32" else []),
                         150)
            losses[name] = run_
    flm, hf = results["flm"], results["hf"]
    ratio = flm["tokens_per_s"] / hf["tokens_per_s"] if "tokens_per_s" in flm and "tokens_per_s" in hf else None
    fp8 = results.get("fp8")
    fp8_report = None
    if fp8 is not None:
        speedup = fp8["tokens_per_s"] / flm["tokens_per_s"] if "tokens_per_s" in fp8 and "tokens_per_s" in flm \
            else None
        fp8_report = {"speedup_vs_bf16": round(speedup, 4) if speedup else None, "target": 1.3,
                      "met": bool(speedup and speedup >= 1.3), "tokens_per_s": fp8.get("tokens_per_s"),
                      "mfu_bf16_equivalent": fp8.get("mfu"), "run": fp8,
                      "profile": fp8.pop("profile", None)}
    report = {
        "bench": "train_throughput",
        "device": device_name(),
        "command": args.command,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "shape": "24 layers, hidden 2048, 16 heads, SwiGLU FFN 5632, vocab 100256 (flm pads to 100352), seq 2048",
        "peak_tflops": PEAK_TFLOPS,
        "mfu": flm.get("mfu"),
        "ratio": round(ratio, 4) if ratio else None,
        "tokens_per_s": {"flm": flm.get("tokens_per_s"), "hf_compile": hf.get("tokens_per_s")},
        "tflops_per_gpu": {"flm": flm.get("tflops_per_gpu"), "hf_compile": hf.get("tflops_per_gpu")},
        "mfu_by_run": {"flm": flm.get("mfu"), "hf_compile": hf.get("mfu")},
        "peak_memory_gib": {"flm": flm.get("peak_memory_gib"), "hf_compile": hf.get("peak_memory_gib")},
        "target": {"mfu": 0.529, "ratio": 1.3},
        "design_anchor_hf_compile_tokens_per_s": DESIGN_ANCHOR,
        "ratio_vs_design_anchor": round(flm["tokens_per_s"] / DESIGN_ANCHOR, 4) if "tokens_per_s" in flm else None,
        "met": bool(flm.get("mfu") and ratio and flm["mfu"] >= 0.529 and ratio >= 1.3),
        "loss_check": loss_check(losses, args.loss_tol) if losses else None,
        "flm": flm,
        "hf_compile": hf,
        "ablations": {k: {key: v.get(key) for key in ("tokens_per_s", "mfu", "peak_memory_gib", "micro_batch",
                                                      "forward_backward_s_median", "grad_norm_and_step_s_median",
                                                      "overrides", "error")} for k, v in ablations.items()},
        "profile": results["flm"].pop("profile", None),
        "fp8": fp8_report,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--logs", type=Path, default=Path("/tmp/train_throughput"))
    p.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: a smoke test of this script")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--flm-micro", type=int, nargs="+", default=[8],
                   help="micro-batches to try for flm (and --fp8): the fastest that fits is reported")
    p.add_argument("--fp8", action="store_true", help="also run flm with model.precision=fp8 (float8 GEMMs)")
    p.add_argument("--flm-set", nargs="*", default=[], help="stage overrides for every flm run")
    p.add_argument("--hf-micro", type=int, nargs="+", default=[8, 4, 2],
                   help="micro-batches to try for the baseline: the fastest that fits is reported")
    p.add_argument("--variant", action="append", default=[], help="NAME:key=value,key=value (an extra flm run)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--skip-loss-check", action="store_true")
    p.add_argument("--loss-tol", type=float, default=0.05)
    p.add_argument("--budget-s", type=float, default=560)
    q = sub.add_parser("phase")
    q.add_argument("kind", choices=["flm", "hf"])
    q.add_argument("--result", type=Path, required=True)
    q.add_argument("--tiny", action="store_true")
    q.add_argument("--steps", type=int, default=6)
    q.add_argument("--warmup", type=int, default=3)
    q.add_argument("--set", nargs="*", default=[])
    q.add_argument("--hf-micro", type=int, nargs="+", default=[8, 4, 2])
    q.add_argument("--compile", action="store_true")
    q.add_argument("--fp32-matmul", action="store_true")
    q.add_argument("--profile", type=Path)
    args = parser.parse_args()
    if args.cmd == "run":
        args.command = "python bench/train_throughput.py " + " ".join(sys.argv[1:])
        run(args)
        return
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if args.kind == "flm":
        result = run_flm(args.tiny, args.set, args.steps, args.warmup, args.profile, args.fp32_matmul)
    else:
        result = run_hf(args.tiny, args.hf_micro, args.steps, args.warmup, args.compile)
    args.result.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":  # megatron / dist_checkpointing may start worker processes that re-import this file
    main()
