"""Output layer + cross-entropy in token chunks, with the gradient taken in the forward pass.

With a 100k vocabulary the logits of one micro-batch (tokens x vocab, upcast to fp32 for the
softmax, then exp'd and kept for backward) are the largest tensors of a small model's step: 8192
tokens make 3.3 GB of fp32 logits per copy. Here the logits exist one chunk of tokens at a time:
each chunk's softmax gives its loss and, at once, d loss / d logits, which is multiplied into the
gradients of the hidden states and of the output weight; the chunk's logits are then dropped.
Nothing of size vocab x tokens survives the forward pass and no logits are recomputed.

That needs the weights of the per-token losses in the forward pass, so the op returns their
weighted *sum* (a scalar): backward only scales the stored gradients by the incoming scalar.
Numerics match megatron's vocab-parallel cross-entropy: logits in the weight's dtype, softmax in
fp32, gradients accumulated in fp32 over chunks.
"""

from __future__ import annotations

import math

import torch

CHUNK_BYTES = 4 * 1024**3
"""Upper bound on one chunk's logits in bytes (16-bit): 4 GiB, about 20k tokens at vocab 100k (one chunk
for a micro-batch of 8 x 2048, so the weight gradient needs no fp32 accumulation over chunks)."""


def _softmax_chunk(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                   want_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weighted loss sum of one chunk and d(sum)/d logits (weights folded in), softmax in fp32."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    target = torch.gather(x, -1, labels[:, None])
    loss = ((lse - target).squeeze(-1) * weights).sum()
    if not want_grad:
        return loss, None
    vocab = torch.arange(x.shape[-1], device=x.device)
    grad = (torch.exp(x - lse) - (vocab[None, :] == labels[:, None]).float()) * weights[:, None]
    return loss, grad.to(logits.dtype)


_softmax_chunk_compiled = torch.compile(_softmax_chunk)
"""One reduction and one pointwise kernel instead of ~8 passes over the chunk (compiled at first use)."""


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,  # type: ignore[override]
                weights: torch.Tensor, chunk: int, compiled: bool) -> torch.Tensor:
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        softmax = _softmax_chunk_compiled if compiled else _softmax_chunk
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = None
        single = hidden.shape[0] <= chunk
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk]
            loss, d_logits = softmax(h @ weight.t(), labels[start:start + chunk],
                                     weights[start:start + chunk], want_h or want_w)
            total += loss
            if grad_h is not None:
                torch.mm(d_logits, weight, out=grad_h[start:start + chunk])
            if want_w:  # fp32 sum over chunks; one chunk needs none
                part = d_logits.t() @ h
                grad_w = part if single else part.float() if grad_w is None else grad_w.add_(part)
        ctx.grads = (grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_h, grad_w = ctx.grads
        ctx.grads = None
        if grad_h is not None:
            grad_h = grad_h * grad_out.to(grad_h.dtype)
        if grad_w is not None:
            grad_w = (grad_w * grad_out.to(grad_w.dtype)).to(ctx.weight_dtype)
        return grad_h, grad_w, None, None, None, None


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                             weights: torch.Tensor | None = None, *, compiled: bool = False,
                             chunk_tokens: int | None = None) -> torch.Tensor:
    """Σ_t weights_t · CE(hidden_t @ weight.T, labels_t) as a 0-dim fp32 tensor.

    hidden [..., h] and labels / weights [...] (same leading shape; weights default to ones),
    weight [vocab, h]. `compiled` fuses the softmax with torch.compile (GPU); `chunk_tokens`
    defaults to the most tokens whose logits fit in CHUNK_BYTES.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    if labels.shape[0] != h.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {h.shape[0]} hidden states")
    w = torch.ones(labels.shape, dtype=torch.float32, device=h.device) if weights is None else \
        weights.reshape(-1).to(torch.float32)
    if chunk_tokens is None:
        chunks = max(1, math.ceil(h.shape[0] * weight.shape[0] * 2 / CHUNK_BYTES))
        chunk_tokens = math.ceil(h.shape[0] / chunks)
    return _LinearCrossEntropy.apply(h, weight, labels, w, max(1, chunk_tokens), compiled)
