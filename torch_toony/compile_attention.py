"""Attention in compiled graphs.

A model on the CPU traces F.scaled_dot_product_attention to the CPU flash-attention op and its backward. torch's
decomposition of the forward returns the attention weights where the op returns the log-sum-exp (it is meant
for export), so it cannot pair with the real backward; both are lowered here with the same math.
"""

from __future__ import annotations

import math

import torch

from toony_core import Tensor, dtypes

from .compile_ops import NodeContext, compile_lowers

aten = torch.ops.aten


def _scores(q: Tensor, k: Tensor, is_causal: bool, attn_mask: Tensor | None, scale: float | None) -> Tensor:
    s = (1.0 / math.sqrt(q.shape[-1])) if scale is None else scale
    if k.shape[-3] != q.shape[-3]:  # grouped-query attention: each key head serves several query heads
        k = _repeat_heads(k, q.shape[-3])
    scores = (q @ k.transpose(-1, -2)) * s
    L, S = scores.shape[-2], scores.shape[-1]  # noqa: N806
    if is_causal:
        keep = Tensor.arange(S).reshape(1, S) <= Tensor.arange(L).reshape(L, 1)
        scores = keep.where(scores, -math.inf)
    if attn_mask is not None:
        scores = attn_mask.where(scores, -math.inf) if attn_mask.dtype == dtypes.bool else scores + attn_mask
    return scores


def _repeat_heads(x: Tensor, heads: int) -> Tensor:
    n, h, t, e = x.shape
    return x.reshape(n, h, 1, t, e).expand(n, h, heads // h, t, e).reshape(n, heads, t, e)


def _sum_heads(g: Tensor, heads: int) -> Tensor:
    n, hq, t, e = g.shape
    return g.reshape(n, heads, hq // heads, t, e).sum(2)


@compile_lowers(aten._scaled_dot_product_flash_attention_for_cpu.default)
def sdpa_cpu(ctx: NodeContext, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, is_causal: bool = False,
             *, attn_mask: Tensor | None = None, scale: float | None = None) -> tuple[Tensor, Tensor]:
    if dropout_p:
        raise NotImplementedError("CPU flash attention with dropout")
    acc = dtypes.float64 if q.dtype == dtypes.float64 else dtypes.float32
    scores = _scores(q.cast(acc), k.cast(acc), is_causal, attn_mask, scale)
    m = scores.max(-1, keepdim=True)
    m = (m == -math.inf).where(0.0, m)  # a row with every key masked: no nan from -inf - -inf
    e = (scores - m).exp()
    total = e.sum(-1, keepdim=True)
    vv = v.cast(acc) if v.shape[-3] == q.shape[-3] else _repeat_heads(v.cast(acc), q.shape[-3])
    out = (e / total) @ vv
    lse = (total.log() + m).reshape(scores.shape[:-1])
    return out, lse


@compile_lowers(aten._scaled_dot_product_flash_attention_for_cpu_backward.default)
def sdpa_cpu_backward(ctx: NodeContext, grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                      dropout_p: float, is_causal: bool, *, attn_mask: Tensor | None = None,
                      scale: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    if dropout_p:
        raise NotImplementedError("CPU flash attention backward with dropout")
    acc = dtypes.float64 if q.dtype == dtypes.float64 else dtypes.float32
    s = (1.0 / math.sqrt(q.shape[-1])) if scale is None else scale
    qa, ka, va, g, o = (t.cast(acc) for t in (q, k, v, grad, out))
    heads = q.shape[-3]
    kr = ka if ka.shape[-3] == heads else _repeat_heads(ka, heads)
    vr = va if va.shape[-3] == heads else _repeat_heads(va, heads)
    p = (_scores(qa, kr, is_causal, attn_mask, scale) - lse.cast(acc).reshape(*lse.shape, 1)).exp()
    dv = p.transpose(-1, -2) @ g
    dp = g @ vr.transpose(-1, -2)
    ds = p * (dp - (g * o).sum(-1, keepdim=True))
    dq = (ds @ kr) * s
    dk = (ds.transpose(-1, -2) @ qa) * s
    if ka.shape[-3] != heads:
        dk, dv = _sum_heads(dk, ka.shape[-3]), _sum_heads(dv, va.shape[-3])
    return dq, dk, dv
