"""Dry run of a growth between two stages: shapes, parameter counts, what is carried and what is new.

Nothing is allocated but the small index vectors of the layout: the same `placement` rules that a
real growth uses are checked against the analytic parameter shapes of both stages, so a dry run
that passes means the layout covers every tensor of the target (e.g. 16b -> 51b -> 101b).
"""

from __future__ import annotations

import math
from typing import Any

from flm.train.config import ModelConfig, StageConfig
from flm.train.growth.layout import LAYER_RE, new_layer_source, param_shapes, placement
from flm.train.growth.spec import GrowthError, check_growth
from flm.train.model.size import param_count

ADAM_BYTES = 12
"""fp32 master weight + two fp32 Adam moments per parameter (megatron's distributed optimizer)."""


def _generic(name: str) -> str:
    match = LAYER_RE.match(name)
    return f"decoder.layers.{{i}}.{match.group(2)}" if match else name


def memory_bound(src: ModelConfig, dst: ModelConfig) -> int:
    """Bytes of host memory `flm grow` uses at most: it streams one tensor at a time, so 2 GiB (Python, torch,
    buffers) + 4x the largest single tensor in fp32 (the source tensor, the grown one, its write copy)."""
    largest = max(math.prod(s) for s in [*param_shapes(src).values(), *param_shapes(dst).values()])
    return 2 * 2**30 + 4 * 4 * largest


def plan_growth(src: StageConfig, dst: StageConfig) -> dict[str, Any]:
    """Everything `flm grow --dry-run` reports; raises GrowthError when the growth is impossible."""
    spec = check_growth(src.model, dst.model)
    vocab = src.model.padded_vocab_size
    src_shapes = param_shapes(src.model)
    dst_shapes = param_shapes(dst.model)
    carried = copied = 0
    tensors: dict[str, dict[str, Any]] = {}
    for name, shape in dst_shapes.items():
        where = placement(name, spec, vocab)
        old = src_shapes.get(where.source)
        want = tuple(len(i) for i in where.index)
        if old != want or any(int(i.max()) >= n for i, n in zip(where.index, shape, strict=True)):
            raise GrowthError(f"layout check failed for {name}: source {where.source} {old}, placed as {want} "
                              f"into {shape}")
        entries = math.prod(want)
        if where.new_layer:
            copied += entries
        else:
            carried += entries
        tensors.setdefault(_generic(name), {"name": _generic(name), "from": list(old), "to": list(shape),
                                            "scale": where.scale})
    before, after = param_count(src.model), param_count(dst.model)
    s, d = spec.src, spec.dst
    return {
        "from": src.name, "to": dst.name, "operators": spec.operators,
        "from_shape": s.as_dict(), "to_shape": d.as_dict(),
        "params_before": before, "params_after": after, "params_added": after - before,
        "growth_factor": round(after / before, 3),
        "carried_entries": carried, "copied_into_new_layers": copied, "fresh_entries": after - carried - copied,
        "new_layers": {"count": d.layers - s.layers,
                       "copied_from": [new_layer_source(i, s, d) for i in range(s.layers, d.layers)]},
        "logit_scale": spec.logit_scale,
        "masks": {"hidden": d.hidden > s.hidden, "heads": d.heads > s.heads, "ffn": d.ffn > s.ffn,
                  "layers": d.layers - s.layers},
        "optimizer_state_gib": {"before": round(before * ADAM_BYTES / 1024**3, 1),
                                "after": round(after * ADAM_BYTES / 1024**3, 1)},
        "host_memory_gib": round(memory_bound(src.model, dst.model) / 1024**3, 1),
        "tensors": list(tensors.values()),
        "weights_allocated": False,
    }
