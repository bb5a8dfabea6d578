"""The tensor-parallel worker of tests/test_fp8.py, in a module of its own so that the spawned processes
import torch and flm's fp8 function only (not megatron-core: tens of seconds on a loaded 2-core machine)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from flm.train.model.fp8 import fp8_linear


def operands(m: int, k: int, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """x [m, k], w [n, k], b [n] (all requiring grad) and an output gradient [m, n], seeded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).requires_grad_()
    w = (torch.randn(n, k, generator=g) * k**-0.5).requires_grad_()
    b = torch.randn(n, generator=g).requires_grad_()
    dy = torch.randn(m, n, generator=g)
    return x, w, b, dy


def tp_worker(rank: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    group = dist.group.WORLD
    x, w, _, dy = operands(32, 64, 48, seed=3)  # the same full tensors on both ranks
    x3, dy3 = x.detach().reshape(16, 2, 64), dy.reshape(16, 2, 48)
    w_shard = w.detach()[rank * 24:(rank + 1) * 24].clone().requires_grad_()  # column parallel: output rows
    results = {}
    for name, seq_par in (("allreduce", False), ("sequence_parallel", True)):
        xs = (x3[rank * 8:(rank + 1) * 8] if seq_par else x3).clone().requires_grad_()
        y = fp8_linear(xs, w_shard, allreduce_dgrad=not seq_par, sequence_parallel=seq_par, tp_group=group)
        y.backward(dy3[..., rank * 24:(rank + 1) * 24])
        results[name] = (y.detach(), xs.grad, w_shard.grad.clone())
        w_shard.grad = None
    torch.save(results, out.with_suffix(f".{rank}.pt"))
    dist.destroy_process_group()
