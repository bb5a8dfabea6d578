"""What training and evaluation share: process groups, the mixture, and the stage fitted to its data."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from flm.config import ConfigError, config_to_dict, load_config
from flm.train.config import StageConfig
from flm.train.data.config import MixtureConfig

log = logging.getLogger(__name__)


@contextmanager
def distributed(stage: StageConfig, seed: int) -> Iterator[None]:
    """torch.distributed + megatron parallel_state for this process (torchrun env or one process)."""
    from flm.train.distributed.parallel import destroy_parallel, init_parallel

    device = stage.train.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is visible to this process")
    already = dist.is_available() and dist.is_initialized()
    if not already:
        init_parallel(stage.parallel.tp, stage.parallel.pp, backend="gloo" if device == "cpu" else None, seed=seed)
    try:
        yield
    finally:
        if not already:
            destroy_parallel()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def data_parallel() -> tuple[int, int]:
    """(rank, size) of this process in its data-parallel group."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        return parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    return rank(), world_size()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum floats over every rank (NaN anywhere stays NaN everywhere, so all ranks decide alike)."""
    if world_size() == 1:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def open_mixture(mixture_cfg: MixtureConfig, default_seq_len: int | None = None) -> Any:
    """The mixture's loader; its sequence length is the mixture's, else `default_seq_len` (the stage's)."""
    from flm.train.data import Mixture

    seq_len = default_seq_len if getattr(mixture_cfg, "seq_len", None) is None else None
    return Mixture(mixture_cfg, seq_len=seq_len)


def fit_stage(stage: StageConfig, mixture: Any) -> StageConfig:
    """The stage with the mixture's sequence length and the token shards' vocabulary."""
    stage = copy.deepcopy(stage)
    cfg = mixture.cfg
    if cfg.reset_position_ids and not cfg.reset_attention_mask and stage.model.position in ("xpos", "rope"):
        raise ConfigError(f"the mixture resets position ids but not the attention mask; {stage.model.position} "
                         "positions are relative, so that alone changes nothing: set reset_attention_mask: true")
    if mixture.seq_len != stage.model.seq_len:
        log.info("sequence length %d from the mixture (stage default %d)", mixture.seq_len, stage.model.seq_len)
        stage.model.seq_len = mixture.seq_len
    if mixture.vocab_size != stage.model.vocab_size:
        log.info("vocabulary %d from the token shards' manifest (stage config says %d)",
                 mixture.vocab_size, stage.model.vocab_size)
        stage.model.vocab_size = mixture.vocab_size
    return stage


def mixture_record(mixture_cfg: MixtureConfig) -> dict[str, Any]:
    """The resolved mixture config with absolute source paths, so a checkpoint can find its data again."""
    record = config_to_dict(mixture_cfg)
    for source in record["sources"]:
        source["path"] = str(Path(source["path"]).resolve())
    return record


def mixture_from_record(record: dict[str, Any]) -> MixtureConfig:
    return load_config(MixtureConfig, record)
