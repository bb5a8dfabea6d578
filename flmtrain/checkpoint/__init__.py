"""Checkpoints: one `step-N/` directory per save, in the "torch" (CPU engine) or "megatron" (GPU engine) format.

Everything that reads or writes one (training, evaluation, generation, growth, export, loss prediction) goes
through this package: `read_meta` for what a checkpoint is, `save_checkpoint` / `load_checkpoint` for its
state, and the layout helpers for finding them.
"""

from flm.train.checkpoint.layout import (
    checkpoints_root,
    latest_checkpoint,
    list_checkpoints,
    read_state,
    resolve_checkpoint,
    resolve_resume,
)
from flm.train.checkpoint.meta import META_NAME, CheckpointError, CheckpointMeta, read_meta
from flm.train.checkpoint.rng import set_rng_state
from flm.train.checkpoint.store import load_checkpoint, save_checkpoint

__all__ = [
    "META_NAME",
    "CheckpointError",
    "CheckpointMeta",
    "checkpoints_root",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_meta",
    "read_state",
    "resolve_checkpoint",
    "resolve_resume",
    "save_checkpoint",
    "set_rng_state",
]
