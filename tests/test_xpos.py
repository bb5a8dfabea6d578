"""xPos: the defining properties from Sun et al. 2022, offset-consistent decoding, long-sequence numerics."""

from __future__ import annotations

import pytest
import torch

from flm.train.model.xpos import XPOS_GAMMA, _tables, apply_rope, apply_xpos


def scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[sq, sk] dot products for batch 0, head 0."""
    return q[:, 0, 0] @ k[:, 0, 0].T


def constant(seq: int, vec: torch.Tensor) -> torch.Tensor:
    """The same content vector at every position: [seq, 1, 1, d]."""
    return vec.expand(seq, 1, 1, vec.numel()).clone()


def test_score_depends_only_on_relative_position() -> None:
    g = torch.Generator().manual_seed(0)
    qv, kv = torch.randn(64, generator=g, dtype=torch.float64), torch.randn(64, generator=g, dtype=torch.float64)
    q, k = constant(300, qv), constant(300, kv)
    s = scores(*apply_xpos(q, k))
    # Toeplitz: s[i, j] == s[i + 1, j + 1]; and the same pattern at another absolute offset.
    torch.testing.assert_close(s[1:, 1:], s[:-1, :-1], rtol=1e-10, atol=1e-10)
    shifted = scores(*apply_xpos(q[:100], k[:100], offset=1000))
    torch.testing.assert_close(shifted, s[:100, :100], rtol=1e-10, atol=1e-10)
    # Not a tautology: the scores do vary with the distance.
    assert s[200, 0] != pytest.approx(s[200, 199])


@pytest.mark.parametrize("pair", [0, 5, 31])
def test_each_dimension_pair_decays_by_zeta(pair: int) -> None:
    """Per pair j, xPos's score is RoPE's times zeta_j ** (distance / scale_base) (the paper's eq.)."""
    d, seq, base = 64, 1200, 512
    v = torch.zeros(d, dtype=torch.float64)
    v[pair] = v[pair + d // 2] = 1.0
    q = k = constant(seq, v)
    xpos, rope = scores(*apply_xpos(q, k, scale_base=base)), scores(*apply_rope(q, k))
    zeta = (2 * pair / d + XPOS_GAMMA) / (1 + XPOS_GAMMA)
    distance = torch.arange(seq, dtype=torch.float64)
    torch.testing.assert_close(xpos[-1].flip(0), rope[-1].flip(0) * zeta ** (distance / base))


def test_attention_to_identical_content_decays_with_distance() -> None:
    """q = k at every position: RoPE's score oscillates; xPos's envelope falls with distance."""
    d, seq = 128, 4096
    ones = torch.ones(d, dtype=torch.float64)
    q = k = constant(seq, ones)
    xpos = scores(*apply_xpos(q, k))[-1].flip(0)  # score at distance 0, 1, ..., seq-1
    rope = scores(*apply_rope(q, k))[-1].flip(0)
    window = 256
    env_x = xpos.abs().unfold(0, window, window).amax(dim=1)
    env_r = rope.abs().unfold(0, window, window).amax(dim=1)
    assert xpos[0] == pytest.approx(d) and rope[0] == pytest.approx(d)
    assert torch.all(env_x[1:] < env_x[:-1]), env_x
    assert not torch.all(env_r[1:] < env_r[:-1])  # RoPE alone does not decay monotonically
    assert torch.all(env_x[8:] < 0.5 * env_r[8:]), (env_x, env_r)  # beyond 2048 tokens: under half of RoPE


def test_offset_matches_full_sequence_for_decoding() -> None:
    """Decoding token t (q alone, raw keys 0..t, offset t) gives row t of the full computation."""
    g = torch.Generator().manual_seed(1)
    seq = 40
    q = torch.randn(seq, 2, 3, 32, generator=g, dtype=torch.float64)
    k = torch.randn(seq, 2, 3, 32, generator=g, dtype=torch.float64)
    fq, fk = apply_xpos(q, k)
    full = torch.einsum("sbhd,tbhd->bhst", fq, fk)
    for t in (0, 17, seq - 1):
        dq, dk = apply_xpos(q[t:t + 1], k[:t + 1], offset=t)
        step = torch.einsum("sbhd,tbhd->bhst", dq, dk)
        torch.testing.assert_close(step[..., 0, :], full[..., t, :t + 1], rtol=1e-9, atol=1e-9)


def test_long_sequences_stay_finite_in_fp32() -> None:
    """Scaling relative to the centre keeps zeta ** (n / 512) representable at 64k positions."""
    seq, d = 65536, 32
    g = torch.Generator().manual_seed(2)
    q = torch.randn(seq, 1, 1, d, generator=g)
    k = torch.randn(seq, 1, 1, d, generator=g)
    xq, xk = apply_xpos(q, k)
    assert torch.isfinite(xq).all() and torch.isfinite(xk).all()
    # Scaling from position 0 instead would need zeta_0 ** -(65535 / 512), beyond fp32's range.
    assert torch.isinf(torch.tensor(XPOS_GAMMA / (1 + XPOS_GAMMA)) ** (-(seq - 1) / 512))
    near = (xq[-1, 0, 0] @ xk[-2, 0, 0]).item()
    ref_q, ref_k = apply_xpos(q[-2:].double(), k[-2:].double())
    assert near == pytest.approx((ref_q[1, 0, 0] @ ref_k[0, 0, 0]).item(), rel=1e-4)


def test_tables_are_cached_per_length_device_dtype() -> None:
    _tables.cache_clear()
    q = torch.randn(16, 1, 2, 8)
    apply_xpos(q, q)
    apply_xpos(q, q)
    apply_xpos(q.double(), q.double())
    info = _tables.cache_info()
    assert (info.hits, info.misses) == (1, 2)
