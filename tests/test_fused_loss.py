"""The chunked output-layer + cross-entropy (flm.train.model.fused_loss) and the model's sum_loss path, on CPU."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from flm.train.config import KernelConfig, ModelConfig, MupConfig
from flm.train.distributed.parallel import destroy_parallel, init_parallel
from flm.train.model.fused_loss import linear_cross_entropy_sum
from flm.train.model.gpt import build_model

SMALL = ModelConfig(layers=2, hidden=64, heads=4, seq_len=16, vocab_size=300, dropout=0.0, tie_embeddings=False,
                    mup=MupConfig(enabled=True, base_width=32))


@pytest.fixture(scope="module", autouse=True)
def parallel() -> Iterator[None]:
    init_parallel(seed=3)
    yield
    destroy_parallel()


def reference(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.t()).double()
    return (F.cross_entropy(logits, labels, reduction="none") * weights.double()).sum()


@pytest.mark.parametrize("chunk", [None, 7, 64])
def test_matches_cross_entropy_and_its_gradients(chunk: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(50, 32, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(90, 32, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 90, (50,), generator=g)
    weights = (torch.rand(50, generator=g) > 0.3).float()
    ref = reference(hidden, weight, labels, weights)
    ref_h, ref_w = torch.autograd.grad(3.0 * ref, (hidden, weight))
    out = linear_cross_entropy_sum(hidden, weight, labels, weights, chunk_tokens=chunk)
    assert out.dtype == torch.float32 and out.shape == ()
    got_h, got_w = torch.autograd.grad(3.0 * out, (hidden, weight))
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_h, ref_h, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_w, ref_w, rtol=1e-4, atol=1e-5)


def test_no_grad_forward_and_default_weights() -> None:
    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(4, 5, 8, generator=g), torch.randn(40, 8, generator=g)
    labels = torch.randint(0, 40, (4, 5), generator=g)
    with torch.no_grad():
        out = linear_cross_entropy_sum(hidden, weight, labels, chunk_tokens=3)
    expected = reference(hidden.reshape(-1, 8), weight, labels.reshape(-1), torch.ones(20))
    assert abs(out.item() - expected.item()) < 1e-3
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy_sum(hidden, weight, labels[:, :4])


@pytest.mark.parametrize("tied", [False, True])
def test_model_sum_loss_equals_megatron_loss(tied: bool) -> None:
    """sum_loss=True (fused) gives megatron's masked loss sum and the same gradients as the unfused path."""
    cfg = replace(SMALL, tie_embeddings=tied)
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 16)
    mask[1, 10:] = 0
    grads, losses = [], []
    for fused in (True, False):
        model = build_model(replace(cfg, kernels=KernelConfig(fused_loss=fused)), seed=0)
        assert model.fused_loss is fused
        summed = model(ids, None, labels=labels, loss_mask=mask, sum_loss=True)
        per_token = model(ids, None, labels=labels)
        assert summed.shape == () and per_token.shape == (2, 16)
        torch.testing.assert_close(summed, (per_token * mask).sum(), rtol=1e-5, atol=1e-4)
        (summed / mask.sum()).backward()
        losses.append(summed.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert abs(losses[0] - losses[1]) < 1e-4
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, rtol=1e-4, atol=1e-6, msg=name)
