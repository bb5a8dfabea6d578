"""`flm grow` on a saved checkpoint: a new checkpoint of the target stage's shape, same function.

Reads a torch-format checkpoint (flm.train.checkpoint.torch_format, the CPU engine's), builds the target stage's model
and optimizer exactly as training builds them (so `flm train --stage TARGET --resume OUT` loads it
as is), grows weights and Adam moments into them and writes the same layout atomically, with the
target stage's config and a growth_history record in meta.json. The masks are not weights: the
record says where they stand, and training (or evaluation) reinstalls them from it.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from flm.config import config_to_dict
from flm.config.progress import Progress
from flm.train.checkpoint import META_NAME, CheckpointMeta, read_meta, read_state, resolve_checkpoint
from flm.train.checkpoint.integrity import verify_checkpoint, write_checksums
from flm.train.checkpoint.layout import commit_directory, write_state
from flm.train.checkpoint.meta import write_meta
from flm.train.checkpoint.rng import RNG_DIR
from flm.train.checkpoint.torch_format import load_torch_optimizer, read_torch_weights, save_torch
from flm.train.config import StageConfig
from flm.train.distributed.parallel import distributed
from flm.train.engine import CpuEngine
from flm.train.growth.grow import grow_from_state
from flm.train.growth.ramp import ramping
from flm.train.growth.spec import GrowthError, check_growth
from flm.train.growth.transfer import named_state_from_saved
from flm.train.model.size import param_count


def source_stage(meta: CheckpointMeta, path: Path) -> StageConfig:
    if not meta.stage_config:
        raise GrowthError(f"{path / META_NAME}: no stage_config; cannot tell the checkpoint's shape")
    return meta.load_stage()


def target_stage(dst: StageConfig, src: StageConfig) -> StageConfig:
    """The target stage on the source's tokenizer: vocabulary (fitted to the shards) carries over."""
    dst = copy.deepcopy(dst)
    dst.model.vocab_size = src.model.vocab_size
    dst.model.seq_len = src.model.seq_len
    dst.model.vocab_pad_multiple = src.model.vocab_pad_multiple
    return dst


def grow_checkpoint(src: Path, dst_stage: StageConfig, out: Path, *, ramp_steps: int,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Grow checkpoint `src` into `dst_stage`'s shape and write it to `out`; returns the growth record."""
    src, out = resolve_checkpoint(src), Path(out)
    meta = read_meta(src)
    if meta.format != "torch":
        raise GrowthError(f"{src}: checkpoint format {meta.format!r}; flm grow reads the torch format that "
                          "the CPU path writes. Growing a GPU (megatron dist_checkpointing) checkpoint is not "
                          "supported yet; for a small stage on a GPU machine, train it with --set train.device=cpu")
    if out.exists():
        raise GrowthError(f"{out} already exists; choose a new --out")
    step = meta.step
    history = list(meta.growth_history)
    if ramping(history, step) is not None:
        last = history[-1]
        raise GrowthError(f"{src}: the growth at step {last['step']} is still ramping its masks until step "
                          f"{last['step'] + last['ramp_steps']}; train past that step before growing again")
    src_stage = source_stage(meta, src)
    dst_stage = target_stage(dst_stage, src_stage)
    check_growth(src_stage.model, dst_stage.model)
    _check_memory(param_count(src_stage.model) + param_count(dst_stage.model))
    report = progress or (lambda label, done, total: None)
    report("grow", 0, 3)
    verify_checkpoint(src)
    weights = read_torch_weights(src)
    saved_opt = load_torch_optimizer(src)
    build = copy.deepcopy(dst_stage)
    build.parallel.tp = build.parallel.pp = build.parallel.dp = 1
    build.train.device = "cpu"  # growth runs on the CPU engine, also on a machine with GPUs
    with distributed(build, seed=build.train.seed), torch.random.fork_rng():
        report("grow", 1, 3)
        torch.manual_seed(build.train.seed + step)  # the new entries' initialization
        engine = CpuEngine(build, dst_stage.model.vocab_size)
        grown = grow_from_state(weights, named_state_from_saved(saved_opt), src_stage.model, engine.module,
                                engine.optimizer, dst_stage.model, step=step, ramp_steps=ramp_steps,
                                tokens_seen=meta.tokens_seen, from_stage=src_stage.name,
                                to_stage=dst_stage.name)
        report("grow", 2, 3)
        new_meta = replace(meta, stage=dst_stage.name, stage_config=config_to_dict(dst_stage),
                           growth_history=[*history, grown.record],
                           param_shapes={n: list(p.shape) for n, p in engine.module.named_parameters()})
        _write(src, out, engine.module, engine.optimizer, new_meta)
    report("grow", 3, 3)
    return grown.record


def _check_memory(params: int) -> None:
    """Refuse early (instead of being killed) when fp32 weights + Adam moments of both models cannot fit."""
    need = params * 4 * 3
    try:
        lines = Path("/proc/meminfo").read_text(encoding="utf-8").splitlines()
        available = int(next(line.split()[1] for line in lines if line.startswith("MemAvailable"))) * 1024
    except (OSError, StopIteration, ValueError):
        return
    if need > available:
        raise GrowthError(f"growing needs about {need / 2**30:.1f} GiB (fp32 weights and Adam moments of both "
                          f"shapes) but {available / 2**30:.1f} GiB is available; use --dry-run to see the plan")


def _write(src: Path, out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           meta: CheckpointMeta) -> None:
    """The torch checkpoint layout, written to a temporary directory and renamed (never half-written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.grow.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_torch(tmp, model, optimizer)
    if (src / RNG_DIR).is_dir():
        shutil.copytree(src / RNG_DIR, tmp / RNG_DIR)
    write_state(tmp, read_state(src))
    write_checksums(tmp)
    write_meta(tmp, meta)
    commit_directory(tmp, out)
