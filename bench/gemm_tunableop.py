"""The 1b stage's GEMMs on one GPU: cuBLAS's default choice against PyTorch TunableOp (which times every
cuBLAS/cuBLASLt algorithm for a shape and keeps the fastest), one JSON line.

Shapes are one micro-batch of 8 x 2048 tokens through a layer of hidden 2048, SwiGLU FFN 5632 (fc1 11264
wide), 16 heads of 128, and the 100352-row output head: forward (Y = X W^T), input gradient (dX = dY W) and
weight gradient (dW = dY^T X, bf16 out; flm accumulates it into fp32 with torch.addmm(out_dtype=float32),
timed as `wgrad_acc`). `step_ms` sums, weighted by how often one step of 4 micro-batches runs each, the GEMMs flm runs.

    python bench/gemm_tunableop.py --out $OUT/gemm_tunableop-h100-<date>.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

TOKENS, HIDDEN, FC1, FFN, VOCAB, LAYERS, MICRO = 16384, 2048, 11264, 5632, 100352, 24, 4
LINEARS = {"qkv": (3 * HIDDEN, HIDDEN), "proj": (HIDDEN, HIDDEN), "fc1": (FC1, HIDDEN), "fc2": (HIDDEN, FFN),
           "head": (VOCAB, HIDDEN)}
"""name -> (out_features, in_features)."""


def cases() -> list[tuple[str, int, tuple[int, int, int]]]:
    """(name, calls per step, (m, n, k))."""
    out = []
    for name, (n_out, n_in) in LINEARS.items():
        calls = MICRO if name == "head" else MICRO * LAYERS
        out += [(f"{name}.fwd", calls, (TOKENS, n_out, n_in)), (f"{name}.dgrad", calls, (TOKENS, n_in, n_out)),
                (f"{name}.wgrad", calls, (n_out, n_in, TOKENS))]
    return out


def time_ms(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(3):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends, strict=True):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))
    return times[len(times) // 2]


def run_case(kind: str, m: int, n: int, k: int, reps: int) -> float:
    """One GEMM with the operand layouts of megatron's linear layers: fwd X @ W.t(), dgrad dY @ W,
    wgrad dY.t() @ X (and wgrad_acc: the same accumulated into an fp32 [m, n] gradient)."""
    g = torch.Generator(device="cuda").manual_seed(m * 7 + n * 3 + k)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", generator=g, dtype=torch.bfloat16)

    a = randn(k, m).t() if kind.startswith("wgrad") else randn(m, k)
    b = randn(n, k).t() if kind == "fwd" else randn(k, n)
    if kind == "wgrad_acc":
        acc = torch.randn(m, n, device="cuda", generator=g)
        return time_ms(lambda: torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc), reps)
    return time_ms(lambda: a @ b, reps)


def measure(reps: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, calls, (m, n, k) in cases():
        kind = name.split(".")[1]
        for variant in [kind, "wgrad_acc"] if kind == "wgrad" else [kind]:
            key = name.replace(kind, variant)
            out[key] = {"ms": run_case(variant, m, n, k, reps), "calls": calls, "tflop": 2 * m * n * k / 1e12}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--tuning-ms", type=int, default=300, help="TunableOp's time limit per shape")
    args = parser.parse_args()
    started = time.perf_counter()
    default = measure(args.reps)
    tunable = torch.cuda.tunable
    tunable.enable(True)
    tunable.tuning_enable(True)
    tunable.set_max_tuning_duration(args.tuning_ms)
    tunable.set_filename(str(args.out.with_suffix(".tunableop.csv")))
    tuned = measure(args.reps)
    tunable.enable(False)
    rows = {}
    for name, base in default.items():
        t = tuned[name]
        rows[name] = {"calls": base["calls"], "default_ms": round(base["ms"], 4), "tuned_ms": round(t["ms"], 4),
                      "default_tflops": round(base["tflop"] / base["ms"] * 1e3, 1),
                      "tuned_tflops": round(t["tflop"] / t["ms"] * 1e3, 1)}

    def in_step(name: str) -> bool:
        """flm accumulates the layers' weight gradients into fp32 (wgrad_acc); the output head's is plain."""
        if name.endswith("wgrad_acc"):
            return not name.startswith("head")
        return not name.endswith("wgrad") or name.startswith("head")

    def step_ms(which: str) -> float:
        return sum(r[which] * r["calls"] for name, r in rows.items() if in_step(name))

    report = {"bench": "gemm_tunableop", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "command": "python bench/gemm_tunableop.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"),
              "step_ms": {"default": round(step_ms("default_ms"), 1), "tunableop": round(step_ms("tuned_ms"), 1)},
              "gemms": rows, "wall_s": round(time.perf_counter() - started, 1)}
    report["speedup"] = round(report["step_ms"]["default"] / report["step_ms"]["tunableop"], 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
