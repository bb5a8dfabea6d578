"""`flm grow` on a saved checkpoint: a new checkpoint of the target stage's shape, same function, streamed.

Any checkpoint grows (CPU or GPU engine, any TP/PP/DP layout: flm.train.checkpoint.tensors reads it one
tensor at a time). The grown checkpoint is written in the GPU engine's layout-free format (megatron
dist_checkpointing, per-parameter optimizer state), so `flm train --stage TARGET --resume OUT` loads it on
GPUs under any TP/PP/DP and on the CPU engine alike. Each grown tensor is made when the writer reaches it
(the target's own init, the old entries placed where `layout.placement` says, Adam moments carried), so
host memory holds a few tensors at a time, never the model: see dry_run.memory_bound.

The masks are not weights: the growth_history record in meta.json says where they stand, and training
(or evaluation) reinstalls them from it.
"""

from __future__ import annotations

import copy
import math
import shutil
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from flm.config import config_to_dict
from flm.config.progress import Progress
from flm.train.checkpoint import META_NAME, CheckpointMeta, read_meta, read_state, resolve_checkpoint
from flm.train.checkpoint.dist_tensors import (
    DIST_DIR,
    MOMENTS,
    OPTIMIZER_PREFIX,
    LazyTensor,
    optimizer_common,
    stacked_key,
    write_dist,
)
from flm.train.checkpoint.integrity import verify_checkpoint, write_checksums
from flm.train.checkpoint.layout import commit_directory, write_state
from flm.train.checkpoint.meta import write_meta
from flm.train.checkpoint.rng import RNG_DIR
from flm.train.checkpoint.tensors import CheckpointTensors, open_tensors
from flm.train.config import ModelConfig, StageConfig
from flm.train.growth.layout import LAYER_RE, Placement, param_shapes, placement
from flm.train.growth.ramp import growth_record, ramping
from flm.train.growth.spec import GrowthError, GrowthSpec, check_growth
from flm.train.growth.transfer import grid_index
from flm.train.model.gpt import hidden_init_std

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
EXTRA_STATE = ("self_attention.linear_proj", "self_attention.linear_qkv", "mlp.linear_fc1", "mlp.linear_fc2")
"""The layer modules whose (empty) `_extra_state` megatron-core stores per layer and expects back."""


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


def fresh_tensor(name: str, shape: tuple[int, ...], cfg: ModelConfig, seed: int) -> torch.Tensor:
    """Parameter `name` as the target model initializes it (its own generator per name, so every copy
    of it, weight and master weight, is the same)."""
    if name.endswith(".bias"):
        return torch.zeros(shape)
    if "layernorm" in name:
        return torch.ones(shape)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    if name == "embedding.word_embeddings.weight":
        std = cfg.init_std
    elif name.endswith(("linear_proj.weight", "linear_fc2.weight")):
        std = hidden_init_std(cfg) / math.sqrt(2.0 * cfg.layers)
    else:
        std = hidden_init_std(cfg)
    return torch.empty(shape).normal_(0.0, std, generator=generator)


class _Grower:
    """Makes each grown tensor (weight, master weight, moments) from the source on demand."""

    def __init__(self, tensors: CheckpointTensors, spec: GrowthSpec, dst: ModelConfig, vocab: int, seed: int,
                 progress: Callable[[], None]) -> None:
        self.tensors, self.spec, self.dst, self.vocab, self.seed = tensors, spec, dst, vocab, seed
        self.progress = progress

    def _where(self, name: str) -> Placement:
        where = placement(name, self.spec, self.vocab)
        if where.source not in self.tensors.shapes:
            raise GrowthError(f"the source checkpoint has no {where.source!r} (needed for {name})")
        want = tuple(len(i) for i in where.index)
        if self.tensors.shapes[where.source] != want:
            raise GrowthError(f"{where.source}: shape {self.tensors.shapes[where.source]} in the source does not "
                              f"match the source config's {want} (needed for {name}); is it of that stage?")
        return where

    def weight(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        where = self._where(name)
        grown = fresh_tensor(name, shape, self.dst, self.seed)
        grown[grid_index(where.index)] = self.tensors.weight(where.source).float() * where.scale
        self.progress()
        return grown

    def moment(self, name: str, shape: tuple[int, ...], key: str) -> torch.Tensor:
        where = self._where(name)
        grown = torch.zeros(shape)
        moments = None if where.new_layer else self.tensors.moments(where.source)
        if moments is not None:
            power = 2 if key.endswith("sq") else 1
            grown[grid_index(where.index)] = moments[key].float() / where.scale ** power
        self.progress()
        return grown


def checkpoint_entries(shapes: dict[str, tuple[int, ...]], weight: Callable[[str], torch.Tensor],
                       moment: Callable[[str, str], torch.Tensor], dtype: torch.dtype,
                       layers: int) -> dict[str, LazyTensor]:
    """Every tensor of a checkpoint in the GPU layout, layers stacked as megatron stores them, in writing order:
    per key the weight (in `dtype`), the fp32 master weight and Adam's two moments, each made on demand."""
    keys: dict[str, list[str]] = {}
    for name in shapes:
        keys.setdefault(stacked_key(name)[0], []).append(name)
    entries: dict[str, LazyTensor] = {}
    for key, names in keys.items():
        stacked = LAYER_RE.match(names[0]) is not None
        full = (layers, *shapes[names[0]]) if stacked else shapes[names[0]]

        def lazy(make: Callable[[str], torch.Tensor], out: torch.dtype, names: list[str] = names,
                 stacked: bool = stacked, full: tuple[int, ...] = full) -> LazyTensor:
            if stacked:
                return LazyTensor.stacked(full, out, [lambda n=n: make(n) for n in names])
            return LazyTensor.whole(full, out, lambda: make(names[0]))

        entries[key] = lazy(weight, dtype)
        entries[f"{OPTIMIZER_PREFIX}param.{key}"] = lazy(weight, torch.float32)
        for name in MOMENTS:
            entries[f"{OPTIMIZER_PREFIX}{name}.{key}"] = lazy(lambda n, m=name: moment(n, m), torch.float32)
    return entries


def extra_states(layers: int) -> dict[str, None]:
    """megatron-core's (empty) per-layer `_extra_state` objects, which its loader expects back."""
    return {f"decoder.layers.{module}._extra_state/shard_{i}_{layers}": None
            for i in range(layers) for module in EXTRA_STATE}


def grow_checkpoint(src: Path, dst_stage: StageConfig, out: Path, *, ramp_steps: int,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Grow checkpoint `src` into `dst_stage`'s shape and write it to `out`; returns the growth record."""
    src, out = resolve_checkpoint(src), Path(out)
    meta = read_meta(src)
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
    verify_checkpoint(src)
    tensors = open_tensors(src)
    if getattr(tensors, "bucketed", False):
        raise GrowthError(f"{src}: its Adam state is stored in megatron's buckets (parallel.optimizer_checkpoint: "
                          "dp_reshardable), which only the same TP x PP layout reads; resume it for a step with "
                          "--set parallel.optimizer_checkpoint=fully_reshardable, then grow that checkpoint")
    vocab = tensors.shapes["embedding.word_embeddings.weight"][0]
    dst_cfg = dst_stage.model
    spec = check_growth(src_stage.model, dst_cfg, src_vocab=vocab, dst_vocab=dst_cfg.padded_vocab_size)
    shapes = {n: tuple(s) for n, s in param_shapes(dst_cfg).items()}
    unused = sorted(set(tensors.shapes) - {placement(n, spec, vocab).source for n in shapes})
    if unused:
        raise GrowthError(f"source parameters with no place in the grown model: {unused[:5]}")
    total = 4 * len(shapes)
    done = [0]
    report = progress or (lambda label, done, total: None)

    def tick() -> None:
        done[0] += 1
        report("grow", done[0], total)

    grower = _Grower(tensors, spec, dst_cfg, vocab, dst_stage.train.seed + step, tick)
    entries = checkpoint_entries(shapes, lambda n: grower.weight(n, shapes[n]),
                                 lambda n, m: grower.moment(n, shapes[n], m), DTYPES[dst_stage.train.precision],
                                 dst_cfg.layers)
    carried = sum(not placement(n, spec, vocab).new_layer for n in shapes)
    has_moments = tensors.moments("embedding.word_embeddings.weight") is not None
    params_after = sum(math.prod(s) for s in shapes.values())
    record = growth_record(
        spec, src=src_stage.model, dst=dst_cfg, from_stage=src_stage.name, to_stage=dst_stage.name, step=step,
        tokens_seen=meta.tokens_seen, ramp_steps=ramp_steps,
        optimizer={"carried": carried if has_moments else 0, "zero": len(shapes) - (carried if has_moments else 0)},
        params_before=sum(math.prod(s) for s in tensors.shapes.values()), params_after=params_after)
    new_meta = replace(meta, stage=dst_stage.name, stage_config=config_to_dict(dst_stage), format="megatron",
                       growth_history=[*history, record], param_shapes={n: list(s) for n, s in shapes.items()})
    common = optimizer_common(tensors.adam_step or step)
    _write(src, out, entries, extra_states(dst_cfg.layers), common, new_meta)
    return record


def _write(src: Path, out: Path, entries: dict[str, LazyTensor], objects: dict[str, Any], common: dict[str, Any],
           meta: CheckpointMeta) -> None:
    """The checkpoint layout, written to a temporary directory and renamed (never half-written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.grow.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_dist(tmp / DIST_DIR, entries, objects, common)
    if (src / RNG_DIR).is_dir():
        shutil.copytree(src / RNG_DIR, tmp / RNG_DIR)
    write_state(tmp, read_state(src))
    write_checksums(tmp)
    write_meta(tmp, meta)
    commit_directory(tmp, out)
