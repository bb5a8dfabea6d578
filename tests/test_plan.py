"""Dry-run plans for FLM-101B's growth stages: parameter counts against the paper, FLOPs, memory, launch."""

from __future__ import annotations

import pytest

from flm.config import find_config, load_config
from flm.train.config import StageConfig
from flm.train.model.size import flops_per_token, param_count
from flm.train.tools.dry_run import dry_run

PAPER = {"16b": (16e9, (2, 1, 96)), "51b": (51e9, (4, 2, 24)), "101b": (101e9, (4, 4, 12))}


def stage(name: str, *overrides: str) -> StageConfig:
    return load_config(StageConfig, find_config(name, "stages"), overrides)


@pytest.mark.parametrize("name", PAPER)
def test_growth_stages_match_the_paper(name: str) -> None:
    params, plan = PAPER[name]
    result = dry_run(stage(name))
    assert abs(result["params"] / params - 1) < 0.01, result["params"]
    assert (result["parallel"]["tp"], result["parallel"]["pp"], result["parallel"]["dp"]) == plan
    assert result["parallel"]["gpus"] == 192 and result["parallel"]["nodes"] == 24
    assert "--nnodes 24 --nproc-per-node 8" in result["torchrun"] and f"--stage {name}" in result["torchrun"]
    memory = result["memory_per_gpu_gib"]
    assert 0 < memory["total_recompute"] < memory["total"] < 80  # fits the paper's 80 GB A800s
    assert result["shape"]["head_dim"] == 128 and result["shape"]["padded_vocab"] == 100352


def test_101b_shape_and_flops() -> None:
    s = stage("101b")
    assert (s.model.layers, s.model.hidden, s.model.heads, s.model.seq_len) == (80, 10240, 80, 2048)
    n = param_count(s.model)
    # 6·N + 12·L·h·s; N: all but biases and norms (9h + 4h a layer, 2h final); tied head = embedding.
    expected = 6 * (n - 80 * 13 * 10240 - 2 * 10240) + 12 * 80 * 10240 * 2048
    assert flops_per_token(s.model) == pytest.approx(expected, rel=1e-12)
    assert flops_per_token(s.model, recompute=True) == pytest.approx(expected * 4 / 3)


def test_distributed_optimizer_shards_over_data_parallel() -> None:
    sharded = dry_run(stage("51b"))["memory_per_gpu_gib"]["optimizer"]
    whole = dry_run(stage("51b", "parallel.distributed_optimizer=false"))["memory_per_gpu_gib"]["optimizer"]
    assert whole == pytest.approx(sharded * 24, rel=0.01)


@pytest.mark.parametrize(("overrides", "message"), [
    (["parallel.tp=3"], "parallel.tp (3) must divide model.heads (80)"),
    (["parallel.pp=3"], "parallel.pp (3) must divide model.layers (80)"),
    (["parallel.dp=7"], "train.global_batch (2160) must be a multiple of train.micro_batch x parallel.dp"),
])
def test_impossible_plans_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dry_run(stage("101b", *overrides))


def test_small_stages_fit_one_gpu() -> None:
    for name in ("125m", "1b"):
        result = dry_run(stage(name))
        assert result["parallel"]["gpus"] == 1 and "--standalone --nproc-per-node 1" in result["torchrun"]
        assert result["memory_per_gpu_gib"]["total"] < 80
    assert abs(dry_run(stage("1b"))["params"] / 1.64e9 - 1) < 0.01  # the 1.6B benchmark shape
