"""μP coordinate check: the first updates of hidden activations keep their size as width grows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from flm.train.config import ModelConfig, MupConfig, OptimConfig
from flm.train.distributed.parallel import destroy_parallel, init_parallel
from flm.train.model.gpt import build_model
from flm.train.model.mup import lr_scale, param_groups

WIDTHS = (64, 128, 256)


@pytest.fixture(scope="module", autouse=True)
def parallel() -> Iterator[None]:
    init_parallel(seed=0)
    yield
    destroy_parallel()


def config(width: int, mup: bool) -> ModelConfig:
    # Heads grow with width at a fixed head size, as FLM-101B's growth stages do.
    return ModelConfig(layers=2, hidden=width, heads=width // 16, seq_len=32, vocab_size=256, dropout=0.0,
                       mup=MupConfig(enabled=mup, base_width=WIDTHS[0]))


def activation_updates(width: int, mup: bool, steps: int = 3, lr: float = 1e-2) -> list[float]:
    """Mean |change| per coordinate of each layer's output after `steps` AdamW steps on one batch."""
    cfg = config(width, mup)
    model = build_model(cfg, seed=0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 256, (4, 32), generator=g), torch.randint(0, 256, (4, 32), generator=g)
    outputs: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(model.decoder.layers):
        layer.register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out[0].detach()))
    optimizer = torch.optim.AdamW(param_groups(model, cfg, OptimConfig(lr=lr, weight_decay=0.0)), betas=(0.9, 0.95))
    with torch.no_grad():
        model(x, None)
    before = dict(outputs)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x, None, labels=y).mean().backward()
        optimizer.step()
    with torch.no_grad():
        model(x, None)
    return [(outputs[i] - before[i]).abs().mean().item() for i in sorted(outputs)]


def test_coordinate_check() -> None:
    mup = torch.tensor([activation_updates(w, True) for w in WIDTHS])  # [widths, layers]
    standard = torch.tensor([activation_updates(w, False) for w in WIDTHS])
    assert torch.allclose(mup[0], standard[0], rtol=0.05)  # the same model at the base width
    spread = mup.amax(dim=0) / mup.amin(dim=0)
    assert torch.all(spread < 2.0), mup  # μP: about constant over a 4x width range
    growth = standard[-1] / standard[0]
    assert torch.all(growth > 8.0), standard  # standard parametrisation: grows with width
    assert torch.all(standard[1:] > standard[:-1])


def test_lr_scale_and_groups() -> None:
    cfg = config(256, True)  # width_mult 4
    model = build_model(cfg, seed=0)
    params = dict(model.named_parameters())
    assert lr_scale("decoder.layers.0.self_attention.linear_qkv.weight", params[
        "decoder.layers.0.self_attention.linear_qkv.weight"], cfg) == 0.25
    assert lr_scale("embedding.word_embeddings.weight", params["embedding.word_embeddings.weight"], cfg) == 1.0
    assert lr_scale("decoder.final_layernorm.weight", params["decoder.final_layernorm.weight"], cfg) == 1.0
    groups = param_groups(model, cfg, OptimConfig(lr=1e-3, weight_decay=0.1))
    seen = [p for g in groups for p in g["params"]]
    assert len(seen) == len(params) and len({id(p) for p in seen}) == len(params)
    by_key = {(g["lr_mult"], g["weight_decay"]): g for g in groups}
    assert set(by_key) == {(1.0, 0.1), (1.0, 0.0), (0.25, 0.1)}
    assert by_key[(0.25, 0.1)]["lr"] == pytest.approx(2.5e-4)
    assert all(p.ndim == 1 for p in by_key[(1.0, 0.0)]["params"])  # biases and norms: no decay
    off = config(256, False)
    assert {g["lr_mult"] for g in param_groups(model, off, OptimConfig())} == {1.0}
