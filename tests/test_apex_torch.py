"""The multi-tensor stand-ins for apex compute what megatron's own fallbacks compute."""

from __future__ import annotations

import math

import pytest
import torch

from flm.train.model.apex_kernels import (
    install_multi_tensor_ops,
    multi_tensor_applier,
    multi_tensor_l2norm,
    multi_tensor_scale,
)


def grads(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for shape in [(7, 5), (13,), (3, 4, 2), (1,)]]


def test_l2norm_is_the_norm_of_all_tensors_together() -> None:
    tensors = grads()
    flag = torch.zeros(1, dtype=torch.int)
    total, per_tensor = multi_tensor_applier(multi_tensor_l2norm, flag, [tensors], True)
    expected = torch.cat([t.flatten() for t in tensors]).norm()
    assert total.shape == (1,) and total.dtype == torch.float32
    torch.testing.assert_close(total[0], expected)
    torch.testing.assert_close(per_tensor, torch.stack([t.norm() for t in tensors]))
    bf16 = [t.bfloat16() for t in tensors]
    assert multi_tensor_l2norm(0, flag, [bf16], False)[0].dtype == torch.float32
    assert multi_tensor_l2norm(0, flag, [[]], False)[0].item() == 0.0


@pytest.mark.parametrize("scale", [0.25, 1.0])
def test_scale_in_place_and_into_other_tensors(scale: float) -> None:
    flag = torch.zeros(1, dtype=torch.int)
    src = grads(1)
    inplace = [t.clone() for t in src]
    multi_tensor_applier(multi_tensor_scale, flag, [inplace, inplace], scale)
    dst = [torch.empty_like(t, dtype=torch.bfloat16) for t in src]
    multi_tensor_applier(multi_tensor_scale, flag, [src, dst], scale)
    for s, a, b in zip(src, inplace, dst, strict=True):
        torch.testing.assert_close(a, s * scale)
        torch.testing.assert_close(b, (s * scale).bfloat16())


def test_megatron_clipping_uses_the_stand_ins() -> None:
    """After install, megatron's own norm and clip functions run on them (its fallbacks need CUDA)."""
    from megatron.core.optimizer import clip_grads

    assert install_multi_tensor_ops() or clip_grads.l2_norm_impl is multi_tensor_l2norm
    params = [torch.nn.Parameter(t.clone()) for t in grads(2)]
    for p in params:
        p.grad = torch.randn_like(p)
    norm = float(torch.cat([p.grad.flatten() for p in params]).norm())
    flag = torch.zeros(1, dtype=torch.int)
    total, _ = clip_grads.multi_tensor_applier(clip_grads.l2_norm_impl, flag, [[p.grad for p in params]], False)
    assert math.isclose(float(total), norm, rel_tol=1e-6)
    before = [p.grad.clone() for p in params]
    clip_grads.multi_tensor_applier(clip_grads.multi_tensor_scale_impl, flag,
                                    [[p.grad for p in params], [p.grad for p in params]], 0.5)
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.grad, b * 0.5)
