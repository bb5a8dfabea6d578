"""MSG's masks on a grown megatron GPTModel, installed as forward hooks (no change to the model code).

With α the mask value of new structure (0 at growth, ramping to 1):
- hidden: the embedding output, every attention/MLP branch output (linear_proj, linear_fc2, bias
  included) and every norm output are multiplied by m = [1 for old dims, α for new dims]. Norms
  compute their statistics weighted by m (mean = Σ m·x / Σ m, likewise the variance or mean
  square), MSG's masked LayerNorm: at α = 0 they see exactly the old dims, at α = 1 they are the
  plain norm over the larger hidden;
- heads: the attention output of new heads (linear_proj's input columns) is multiplied by α;
- FFN: new FFN units (linear_fc2's input) are multiplied by α;
- depth: a new layer outputs α·layer(h) + (1 − α)·h.
At α = 0 the grown model computes the old function exactly; at α = 1 every mask is the identity,
so removing the hooks (`fold`) leaves the function unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from flm.train.growth.layout import context_index
from flm.train.growth.spec import GrowthError, GrowthSpec


def ramp(step: int, start: int, ramp_steps: int) -> float:
    """Mask value at training step `step` for a growth made at step `start`: 0 -> 1 linearly."""
    if ramp_steps <= 0:
        raise GrowthError(f"ramp_steps must be >= 1, got {ramp_steps}")
    return min(1.0, max(0.0, (step - start) / ramp_steps))


def _tp() -> tuple[int, int]:
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return 0, 1
    return parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()


def masked_norm(norm: torch.nn.Module, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """`norm` (torch LayerNorm or RMSNorm) with statistics weighted by mask `m`, output times `m`."""
    xf, mf = x.float(), m.float()
    denom = mf.sum()
    if isinstance(norm, torch.nn.LayerNorm):
        mean = (xf * mf).sum(-1, keepdim=True) / denom
        xc = xf - mean
        y = xc * torch.rsqrt((xc * xc * mf).sum(-1, keepdim=True) / denom + norm.eps)
    elif isinstance(norm, torch.nn.RMSNorm):
        eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
        y = xf * torch.rsqrt((xf * xf * mf).sum(-1, keepdim=True) / denom + eps)
    else:
        raise GrowthError(f"cannot mask a {type(norm).__name__}: only torch LayerNorm and RMSNorm")
    if norm.weight is not None:
        y = y * norm.weight.float()
    if getattr(norm, "bias", None) is not None:
        y = y + norm.bias.float()
    return (y * mf).to(x.dtype)


class GrowthMasks:
    """The masks of one growth on `model` (a grown FLMModel); `set_alpha` moves them, `fold` removes them."""

    def __init__(self, model: torch.nn.Module, spec: GrowthSpec, alpha: float = 0.0) -> None:
        self.model = model
        self.spec = spec
        self.alpha = float(alpha)
        self._handles: list[Any] = []
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}
        s, d = spec.src, spec.dst
        tp_rank, tp = _tp()
        self._keep: dict[str, torch.Tensor] = {}
        if d.hidden > s.hidden:
            self._keep["hidden"] = (torch.arange(d.hidden) < s.hidden).float()
        if d.heads > s.heads:
            keep = torch.zeros(d.heads * d.head_dim)
            keep[context_index(s, d)] = 1.0
            self._keep["context"] = keep.chunk(tp)[tp_rank]
        if d.ffn > s.ffn:
            self._keep["ffn"] = (torch.arange(d.ffn) < s.ffn).float().chunk(tp)[tp_rank]
        self._install()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def set_alpha(self, alpha: float) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"mask value must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._cache.clear()

    def fold(self) -> None:
        """Remove the masks; only at α = 1, where they are the identity."""
        if self.alpha != 1.0:
            raise GrowthError(f"masks can only be folded at 1 (now {self.alpha}): removing them earlier "
                              "would change the model's function")
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._cache.clear()

    def mask(self, kind: str, like: torch.Tensor) -> torch.Tensor:
        """[1 for old entries, α for new] of `kind` on `like`'s device and dtype (cached per α)."""
        key = (kind, like.device, like.dtype)
        if key not in self._cache:
            keep = self._keep[kind].to(like.device)
            self._cache[key] = (keep + self.alpha * (1.0 - keep)).to(like.dtype)
        return self._cache[key]

    # ------------------------------------------------------------------------------ hooks

    def _hook(self, module: torch.nn.Module, fn: Callable[..., Any], *, pre: bool = False,
              with_kwargs: bool = False) -> None:
        if pre:
            self._handles.append(module.register_forward_pre_hook(fn))
        else:
            self._handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def _install(self) -> None:
        s = self.spec.src
        model = self.model
        decoder = model.decoder
        hidden = "hidden" in self._keep
        if hidden:
            if getattr(model, "embedding", None) is not None:
                self._hook(model.embedding, lambda mod, args, out: out * self.mask("hidden", out))
            norms = [layer.input_layernorm for layer in decoder.layers]
            norms += [layer.pre_mlp_layernorm for layer in decoder.layers]
            if getattr(decoder, "final_layernorm", None) is not None:
                norms.append(decoder.final_layernorm)
            for norm in norms:
                self._hook(norm, lambda mod, args, out: masked_norm(mod, args[0], self.mask("hidden", args[0])))
        for layer in decoder.layers:
            proj, fc2 = layer.self_attention.linear_proj, layer.mlp.linear_fc2
            if "context" in self._keep:
                self._hook(proj, lambda mod, args: (args[0] * self.mask("context", args[0]), *args[1:]), pre=True)
            if "ffn" in self._keep:
                self._hook(fc2, lambda mod, args: (args[0] * self.mask("ffn", args[0]), *args[1:]), pre=True)
            if hidden:
                self._hook(proj, self._mask_branch_output)
                self._hook(fc2, self._mask_branch_output)
            if layer.layer_number - 1 >= s.layers:  # layer_number is global and 1-based
                self._hook(layer, self._mask_new_layer, with_kwargs=True)
        if not self._handles:
            raise GrowthError("no masks to install: the model has none of the grown structure")

    def _mask_branch_output(self, module: torch.nn.Module, args: Any, out: Any) -> Any:
        output, bias = out
        m = self.mask("hidden", output)
        return output * m, None if bias is None else bias * m

    def _mask_new_layer(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], out: Any) -> Any:
        h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        output, context = out
        a = self.alpha
        return a * output + (1.0 - a) * h, context
