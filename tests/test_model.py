"""The megatron-core FLM model on CPU: shapes, parameter count = plan, variants, masks, attention, init."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from flm.config import find_config, load_config
from flm.train.config import ModelConfig, MupConfig, StageConfig
from flm.train.distributed.parallel import destroy_parallel, init_parallel
from flm.train.distributed.params import whole_model_params
from flm.train.model.attention import FLMCoreAttention, attention_scale, document_attention_mask
from flm.train.model.gpt import build_model
from flm.train.model.mup import width_mult
from flm.train.model.size import param_count
from flm.train.model.xpos import apply_xpos

SMALL = ModelConfig(layers=2, hidden=64, heads=4, seq_len=32, vocab_size=500, dropout=0.0,
                    mup=MupConfig(enabled=True, base_width=32))
VARIANTS = {
    "flm": {},
    "untied": {"tie_embeddings": False},
    "tele-flm": {"norm": "rmsnorm", "activation": "swiglu", "bias": False, "tie_embeddings": False, "kv_heads": 2},
    "rope-no-mup": {"position": "rope", "mup": MupConfig(enabled=False), "ffn_hidden": 96},
}


@pytest.fixture(scope="module", autouse=True)
def parallel() -> Iterator[None]:
    info = init_parallel(seed=7)
    assert (info.world_size, info.tp, info.pp, info.dp, info.device.type) == (1, 1, 1, 1, "cpu")
    assert init_parallel(seed=7) == info  # idempotent
    yield
    destroy_parallel()


def tokens(batch: int = 2, seq: int = 32, vocab: int = 500, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_tiny_stage_forward_backward() -> None:
    stage = load_config(StageConfig, find_config("tiny", "stages"))
    model = build_model(stage.model, vocab_size=1000, seed=0)
    assert sum(p.numel() for p in model.parameters()) == param_count(replace(stage.model, vocab_size=1000))
    ids, labels = tokens(vocab=1000), tokens(vocab=1000, seed=1)
    logits = model(ids, None)
    assert logits.shape == (2, 32, 1024)  # vocab padded to a multiple of 128
    loss = model(ids, None, labels=labels)
    assert loss.shape == (2, 32)
    assert abs(loss.mean().item() - math.log(1024)) < 0.5  # near uniform at init
    loss.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_count_matches_plan(variant: str) -> None:
    cfg = replace(SMALL, **VARIANTS[variant])
    model = build_model(cfg, seed=0)
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    loss = model(tokens(), None, labels=tokens(seed=1))
    loss.mean().backward()
    assert loss.shape == (2, 32) and torch.isfinite(loss).all()


def test_tied_and_untied_output() -> None:
    tied = build_model(SMALL, seed=0)
    names = dict(tied.named_parameters())
    assert "output_layer.weight" not in names
    assert tied.shared_embedding_or_output_weight() is names["embedding.word_embeddings.weight"]
    untied = build_model(replace(SMALL, tie_embeddings=False), seed=0)
    names = dict(untied.named_parameters())
    assert names["output_layer.weight"].data_ptr() != names["embedding.word_embeddings.weight"].data_ptr()


def test_init_is_deterministic_and_mup_scaled() -> None:
    a, b, c = (build_model(SMALL, seed=s) for s in (3, 3, 4))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if pa.ndim == 2:
            assert not torch.equal(pa, pc), name
    params = dict(a.named_parameters())
    std = SMALL.init_std / math.sqrt(width_mult(SMALL))  # width_mult 2: hidden matrices narrower
    assert params["decoder.layers.0.mlp.linear_fc1.weight"].std().item() == pytest.approx(std, rel=0.1)
    assert params["embedding.word_embeddings.weight"].std().item() == pytest.approx(SMALL.init_std, rel=0.1)


def test_mup_logit_multiplier() -> None:
    model = build_model(SMALL, seed=0).eval()
    assert model.output_mult == pytest.approx(SMALL.mup.output_mult / width_mult(SMALL))
    ids = tokens()
    with torch.no_grad():
        scaled = model(ids, None)
        model.output_mult = 1.0
        plain = model(ids, None)
    torch.testing.assert_close(scaled, plain * SMALL.mup.output_mult / width_mult(SMALL))


def test_document_mask_isolates_packed_documents() -> None:
    """Tokens of the second document see only their own document, wherever it sits in the row."""
    model = build_model(SMALL, seed=0).eval()
    first, second = tokens(1, 12, seed=2), tokens(1, 20, seed=3)
    packed = torch.cat([first, second], dim=1)
    position_ids = torch.cat([torch.arange(12), torch.arange(20)])[None]
    mask = document_attention_mask(position_ids)
    assert mask.shape == (1, 1, 32, 32) and mask[0, 0, 12, 11] and not mask[0, 0, 13, 12]
    with torch.no_grad():
        together = model(packed, position_ids, mask)[:, 12:]
        alone = model(second, None)
        leaky = model(packed, position_ids)[:, 12:]
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(leaky, alone, rtol=1e-4, atol=1e-4)


def test_loader_document_mask_feeds_the_model() -> None:
    """The mixture loader's boundary mask (packed on EOS) has the model's convention: no leakage."""
    from flm.train.data.boundaries import attention_mask

    eos = 499
    first, second = tokens(1, 11, vocab=eos, seed=4), tokens(1, 20, vocab=eos, seed=5)
    packed = torch.cat([first, torch.tensor([[eos]]), second], dim=1)
    mask = torch.from_numpy(attention_mask(packed.numpy(), eos))
    with torch.no_grad():
        model = build_model(SMALL, seed=0).eval()
        together = model(packed, None, mask)[:, 12:]
        alone = model(second, None)
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain causal softmax attention on [s, b, h, d] with xPos applied, GQA by repetition."""
    q, k = apply_xpos(q, k, offset=k.shape[0] - q.shape[0])
    rep = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    s = torch.einsum("sbhd,tbhd->bhst", q, k) * scale
    sq, sk = q.shape[0], k.shape[0]
    s = s.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(sk - sq), float("-inf"))
    out = torch.einsum("bhst,tbhd->sbhd", F.softmax(s, dim=-1), v)
    return out.reshape(sq, q.shape[1], -1)


@pytest.mark.parametrize("layer", [1, 3])
def test_core_attention_matches_reference_and_decodes(layer: int) -> None:
    cfg = replace(SMALL, kv_heads=2)
    model = build_model(cfg, seed=0)
    config = model.config
    attn = FLMCoreAttention(config, layer, model.decoder.layers[0].self_attention.attn_mask_type, "self",
                            mup=True, inverse_layer_idx=True).eval()
    scale = attention_scale(cfg.head_dim, layer, mup=True, inverse_layer_idx=True)
    assert scale == pytest.approx(1 / (cfg.head_dim * layer))
    g = torch.Generator().manual_seed(5)
    q = torch.randn(10, 2, 4, 16, generator=g)
    k, v = torch.randn(10, 2, 2, 16, generator=g), torch.randn(10, 2, 2, 16, generator=g)
    full = attn(q, k, v, None)
    torch.testing.assert_close(full, reference_attention(q, k, v, scale), rtol=1e-5, atol=1e-5)
    # Decoding the last two positions against all raw keys gives the same rows.
    tail = attn(q[-2:], k, v, None)
    torch.testing.assert_close(tail, full[-2:], rtol=1e-5, atol=1e-5)


def _tensor_parallel_worker(rank: int, port: int, out: Path) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    info = init_parallel(tp=2, seed=7)
    assert (info.world_size, info.tp, info.dp) == (2, 2, 1)
    model = build_model(replace(SMALL, kv_heads=2), seed=0)
    loss = model(tokens(), None, labels=tokens(seed=1))
    params = whole_model_params(model)  # a collective: every rank calls it
    if rank == 0:
        torch.save({"loss": loss.detach(), "params": torch.tensor(params)}, out)
    destroy_parallel()


def test_tensor_parallel_matches_single_process(tmp_path: Path) -> None:
    """TP=2 (two gloo processes, heads and vocab split) computes the same loss as one process, and counts the
    whole model's parameters, not one rank's share."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "loss.pt"
    mp.spawn(_tensor_parallel_worker, args=(port, out), nprocs=2)
    single_model = build_model(replace(SMALL, kv_heads=2), seed=0)
    single = single_model(tokens(), None, labels=tokens(seed=1))
    got = torch.load(out, weights_only=True)
    torch.testing.assert_close(got["loss"], single.detach(), rtol=1e-5, atol=1e-5)
    assert int(got["params"]) == sum(p.numel() for p in single_model.parameters()) == whole_model_params(single_model)
