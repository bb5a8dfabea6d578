"""Growth streams: peak host memory of `flm grow` against its bound and against holding the models.

Writes a GPU-layout checkpoint of the 1b stage (vocabulary 32000; random weights and Adam moments, written
chunk by chunk) whose fp32 weights + moments are over 4x the bound `flm grow --dry-run` prints (2 GiB + 4x
the largest tensor in fp32), then grows it into a 32-layer 1b in a child process and reads that child's peak
RSS from the OS (wait4's ru_maxrss). The baseline is what an in-memory growth holds: fp32 weights + Adam
moments of both models. Prints ONE JSON line and writes it to --out.

    python bench/grow_memory.py --work /tmp/flm-growmem --out bench/results/grow_memory-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

SOURCE_SETS = ["model.vocab_size=32000"]
TARGET = """base: 1b
name: 1b-deep
description: the 1b stage with 32 layers (the growth memory bench's target).
model: {layers: 32, vocab_size: 32000}
"""


def child(args: list[str]) -> tuple[int, float, str]:
    """Run a child process; its exit status, peak RSS in GiB (from the OS) and the end of its output."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024 / 2**30, output[-3000:]


def make_source(path: Path) -> None:
    """The source checkpoint (run in a child): random weights and moments, written one chunk at a time."""
    import torch

    from flm.config import config_to_dict, find_config, load_config
    from flm.train.checkpoint.dist_tensors import DIST_DIR, optimizer_common, write_dist
    from flm.train.checkpoint.integrity import write_checksums
    from flm.train.checkpoint.layout import write_state
    from flm.train.checkpoint.meta import CheckpointMeta, write_meta
    from flm.train.config import StageConfig
    from flm.train.growth.grow_checkpoint import checkpoint_entries, extra_states, fresh_tensor
    from flm.train.growth.layout import param_shapes

    stage = load_config(StageConfig, find_config("1b", "stages"), SOURCE_SETS)
    shapes = {n: tuple(s) for n, s in param_shapes(stage.model).items()}
    path.mkdir(parents=True)

    def weight(name: str) -> torch.Tensor:  # the same values each time it is asked for (weight, master weight)
        return fresh_tensor(name, shapes[name], stage.model, seed=7)

    def moment(name: str, key: str) -> torch.Tensor:
        return torch.rand(shapes[name]) * (1e-3 if key == "exp_avg" else 1e-6)

    write_dist(path / DIST_DIR, checkpoint_entries(shapes, weight, moment, torch.bfloat16, stage.model.layers),
               extra_states(stage.model.layers), optimizer_common(100))
    write_state(path, {"step": 100, "data": {"consumed_samples": 3200, "seed": 1234}})
    write_checksums(path)
    write_meta(path, CheckpointMeta(step=100, format="megatron", stage="1b", stage_config=config_to_dict(stage),
                                    tokens_seen=3200 * stage.model.seq_len))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/flm-growmem"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--make-source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_source:
        make_source(args.make_source)
        return
    from flm.config import find_config, load_config
    from flm.train.config import StageConfig
    from flm.train.growth.dry_run import memory_bound
    from flm.train.model.size import param_count

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    target = args.work / "1b-deep.yaml"
    target.write_text(TARGET)
    src = load_config(StageConfig, find_config("1b", "stages"), SOURCE_SETS)
    dst = load_config(StageConfig, target)
    bound = memory_bound(src.model, dst.model) / 2**30
    source_gib = param_count(src.model) * 12 / 2**30
    started = time.perf_counter()
    status, make_rss, output = child([sys.executable, __file__, "--out", str(args.out), "--make-source",
                                      str(args.work / "source")])
    if status != 0:
        raise SystemExit(f"making the source failed:\n{output}")
    made = time.perf_counter()
    status, grow_rss, output = child([sys.executable, "-m", "flm.cli.main", "grow", "--checkpoint",
                                      str(args.work / "source"), "--to", str(target), "--out",
                                      str(args.work / "grown"), "--json"])
    if status != 0:
        raise SystemExit(f"flm grow failed:\n{output}")
    grown_bytes = sum(p.stat().st_size for p in (args.work / "grown").rglob("*") if p.is_file())
    report = {
        "bench": "grow_memory", "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
        "device": f"CPU only: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "from": "1b (vocab 32000)", "to": "1b-deep (32 layers)",
        "params_before": param_count(src.model), "params_after": param_count(dst.model),
        "source_fp32_weights_and_moments_gib": round(source_gib, 2),
        "bound_gib": round(bound, 2), "source_over_bound": round(source_gib / bound, 2),
        "peak_rss_gib": round(grow_rss, 2),
        "baseline_in_memory_gib": round((param_count(src.model) + param_count(dst.model)) * 12 / 2**30, 2),
        "grown_checkpoint_gib": round(grown_bytes / 2**30, 2), "make_source_peak_rss_gib": round(make_rss, 2),
        "make_source_s": round(made - started, 1), "grow_s": round(time.perf_counter() - made, 1),
    }
    report["ok"] = report["peak_rss_gib"] <= bound and source_gib >= 4 * bound
    shutil.rmtree(args.work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
