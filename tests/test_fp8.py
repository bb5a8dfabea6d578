"""Float8 GEMMs (model.precision: fp8): scaling arithmetic, the autograd function against float64, tensor
parallelism on gloo, the refusal on CPU and config validation. torch._scaled_mm runs on the CPU, so the
function itself is checked here; the GPU kernels (Triton casts, cuBLAS fp8 GEMMs) in bench/fp8.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from fp8_tp_worker import operands, tp_worker

from flm.config import ConfigError, find_config, load_config
from flm.train.config import ModelConfig, StageConfig
from flm.train.distributed.parallel import destroy_parallel, init_parallel
from flm.train.model.fp8 import (
    E4M3,
    E5M2,
    Fp8Unavailable,
    check_fp8_device,
    dequantize,
    fp8_linear,
    fp8_scale,
    quantize,
)
from flm.train.model.fp8_layers import Fp8ColumnParallelLinear, Fp8RowParallelLinear
from flm.train.model.gpt import build_model

SMALL = ModelConfig(layers=2, hidden=64, heads=4, ffn_hidden=128, seq_len=32, vocab_size=500, dropout=0.0)
FORMATS = {E4M3: (3, 448.0, 2.0**-9), E5M2: (2, 57344.0, 2.0**-16)}
"""mantissa bits, largest finite value, smallest subnormal step."""


@pytest.fixture(scope="module")
def parallel() -> Iterator[None]:
    init_parallel(seed=7)
    yield
    destroy_parallel()


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.detach().double() - ref).norm() / ref.norm())


# ------------------------------------------------------------------------------------------- scaling


@pytest.mark.parametrize("dtype", [E4M3, E5M2])
@pytest.mark.parametrize("magnitude", [1e-4, 1.0, 3e4])
def test_round_trip_error_is_bounded_by_the_format(dtype: torch.dtype, magnitude: float) -> None:
    """Each element comes back within half a step of its binade (relative 2**-(mantissa+1)), or half a
    subnormal step (times the inverse scale) for the smallest; the scale does not depend on the magnitude."""
    bits, _, sub_step = FORMATS[dtype]
    x = torch.randn(257, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * magnitude
    x8, x8_t, inv = quantize(x, dtype, transpose=True)
    assert x8.dtype == dtype and x8_t is not None and torch.equal(x8_t.view(torch.uint8), x8.t().view(torch.uint8))
    back = dequantize(x8, inv, torch.float64)
    bound = torch.maximum(x.abs() * 2.0 ** -(bits + 1), torch.full_like(x, sub_step / 2 * float(inv)))
    assert bool(((back - x).abs() <= bound * (1 + 1e-9)).all())


@pytest.mark.parametrize("dtype", [E4M3, E5M2])
def test_amax_lands_in_the_top_binade_with_a_power_of_two_scale(dtype: torch.dtype) -> None:
    fmax = FORMATS[dtype][1]
    for amax in (1e-30, 3e-3, 1.0, 447.9, 448.0, 449.0, 6e4, 1e30):
        scale = fp8_scale(torch.tensor(amax), dtype)
        assert float(torch.log2(scale)) == int(torch.log2(scale))  # exact power of two
        assert fmax / 2 < amax * float(scale) <= fmax
    x = torch.tensor([[0.5, -1.7, 3.0]])
    x8, _, inv = quantize(x, dtype)
    assert float(x8.float().abs().max()) * float(inv) == 3.0  # the amax element itself is exact


@pytest.mark.parametrize("dtype", [E4M3, E5M2])
def test_saturation_zeros_and_non_finite_inputs(dtype: torch.dtype) -> None:
    fmax = FORMATS[dtype][1]
    x8, _, inv = quantize(torch.zeros(4, 16), dtype)
    assert torch.equal(x8.float(), torch.zeros(4, 16)) and torch.isfinite(inv)
    # the largest element lands at or below the format's largest value (never its NaN / inf encoding)
    for top in (447.99, 448.0, 57343.0, 1e38):
        x8, _, inv = quantize(torch.tensor([[1.0, -2.0, top]]), dtype)
        assert torch.isfinite(x8.float()).all() and float(x8.float().abs().max()) <= fmax
    # inf in the input makes the product non-finite (the trainer's bad-step check sees it), not a clipped value
    x = torch.ones(16, 16)
    x[3, 4] = float("inf")
    out = fp8_linear(x, torch.ones(16, 16))
    assert not bool(torch.isfinite(out).all())


# ------------------------------------------------------------------------------------------ function


@pytest.mark.parametrize("tokens", [64, 37])  # 37: the weight gradient's token dimension is padded to 16
def test_linear_matches_float64_within_fp8_error(tokens: int) -> None:
    x, w, b, dy = operands(tokens, 64, 48)
    y = fp8_linear(x.reshape(1, tokens, 64), w, b).reshape(tokens, 48)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), dy)
    xd, wd, dyd = x.detach().double(), w.detach().double(), dy.double()
    assert rel(y, xd @ wd.t() + b.detach().double()) < 0.05  # e4m3 x e4m3
    assert rel(gx, dyd @ wd) < 0.1  # e5m2 x e4m3
    assert rel(gw, dyd.t() @ xd) < 0.1
    torch.testing.assert_close(gb, dy.sum(0))  # the bias gradient is not quantized


def test_frozen_weight_no_grad_and_main_grad_accumulation() -> None:
    x, w, _, dy = operands(32, 64, 48)
    with torch.no_grad():
        assert rel(fp8_linear(x, w), x.double() @ w.double().t()) < 0.05
    frozen = w.detach()
    gx, = torch.autograd.grad(fp8_linear(x, frozen), (x,), dy)
    assert gx.shape == x.shape
    # megatron's gradient-accumulation fusion: dW is added into the fp32 main_grad, a placeholder returned
    plain, = torch.autograd.grad(fp8_linear(x, w), (w,), dy)
    w2 = w.detach().clone().requires_grad_()
    w2.main_grad = torch.ones_like(w2, dtype=torch.float32)
    w2.grad_added_to_main_grad = False
    for _ in range(2):
        fp8_linear(x, w2, main_grad_fusion=True).backward(dy)
    assert w2.grad_added_to_main_grad
    torch.testing.assert_close(w2.main_grad, 1 + 2 * plain.float())


def test_tensor_parallel_communication_in_bf16_paths(tmp_path: Path) -> None:
    """Column-parallel fp8 linear on two gloo ranks: the input gradient all-reduced, or with sequence parallelism
    the input all-gathered and its gradient reduce-scattered; each rank's share matches float64."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(tp_worker, args=(port, tmp_path / "tp"), nprocs=2)
    x, w, _, dy = operands(32, 64, 48, seed=3)
    xd, wd = x.detach().double().reshape(16, 2, 64), w.detach().double()
    dyd = dy.double().reshape(16, 2, 48)
    full_dx = dyd @ wd
    for rank in (0, 1):
        got = torch.load(tmp_path / f"tp.{rank}.pt", weights_only=True)
        cols = slice(rank * 24, (rank + 1) * 24)
        for name, (y, gx, gw) in got.items():
            assert rel(y, xd @ wd[cols].t()) < 0.05
            assert rel(gw, dyd[..., cols].reshape(32, 24).t() @ xd.reshape(32, 64)) < 0.1
            want_dx = full_dx[rank * 8:(rank + 1) * 8] if name == "sequence_parallel" else full_dx
            assert gx.shape == want_dx.shape and rel(gx, want_dx) < 0.1


# ------------------------------------------------------------------------------ model, refusal, config


def test_refused_on_cpu_with_a_clear_error(parallel: None) -> None:
    with pytest.raises(Fp8Unavailable, match="compute capability >= 8.9.*on the CPU"):
        check_fp8_device("cpu")
    with pytest.raises(ConfigError, match="model.precision: fp8 needs an NVIDIA GPU"):
        build_model(replace(SMALL, precision="fp8"), seed=0)


def test_refused_below_compute_capability_8_9(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(Fp8Unavailable, match="A100-SXM4-80GB has 8.0"):
        check_fp8_device("cuda:0")


def test_fp8_model_uses_fp8_linears_and_stays_close(parallel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the device check lifted, the fp8 model has the same parameters as the default one from the same
    seed (fp8 keeps no state), its four linears per layer are the fp8 ones, and its loss is within fp8 error."""
    monkeypatch.setattr("flm.train.model.gpt.check_fp8_device", lambda device: None)
    ref = build_model(SMALL, seed=0)
    model = build_model(replace(SMALL, precision="fp8"), seed=0)
    assert ref.state_dict().keys() == model.state_dict().keys()
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values(), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name
    kinds = [type(m) for m in model.modules() if isinstance(m, Fp8ColumnParallelLinear | Fp8RowParallelLinear)]
    assert len(kinds) == 4 * SMALL.layers
    ids = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(1))
    loss_ref = ref(ids, None, labels=labels).mean()
    loss = model(ids, None, labels=labels).mean()
    loss.backward()
    assert abs(float(loss) - float(loss_ref)) < 0.01 * float(loss_ref)
    assert all(p.grad is not None for p in model.parameters())


def test_config_validation() -> None:
    stage = find_config("tiny", "stages")
    assert load_config(StageConfig, stage, ["model.precision=fp8"]).model.precision == "fp8"
    assert load_config(StageConfig, stage, []).model.precision == "default"
    with pytest.raises(ConfigError, match="'fp9' is not allowed; allowed values: 'default', 'fp8'"):
        load_config(StageConfig, stage, ["model.precision=fp9"])
    with pytest.raises(ConfigError, match="multiples of 16.*hidden = 72"):
        load_config(StageConfig, stage, ["model.precision=fp8", "model.hidden=72", "model.heads=4"])
    with pytest.raises(ConfigError, match="ffn_hidden = 100"):
        load_config(StageConfig, stage, ["model.precision=fp8", "model.ffn_hidden=100"])
