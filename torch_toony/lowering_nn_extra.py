"""Lowerings for less common neural-network ops: pairwise distances (cdist, pdist), embedding bags, multi-class
and multi-label margin losses, and randomized leaky ReLU.

Distances and margin losses are dense broadcasts plus reductions (deterministic, no atomics); embedding bags
scatter into their bags (atomically, as embedding's backward does), because a dense bag-by-index mask would
cost bags x indices x width.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from toony_core import Tensor

from .lowering import lowers
from .windows import acc_dtype, cached_const

# ---------------------------------------------------------------- pairwise distances


def _wide(x: Tensor) -> Tensor:
    return x.cast(acc_dtype(x.dtype))


def _batch(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    """x1 (..., P, M) and x2 (..., R, M) expanded to their common batch shape."""
    batch = tuple(torch.broadcast_shapes(tuple(x1.shape[:-2]), tuple(x2.shape[:-2])))
    return x1.expand(*batch, *x1.shape[-2:]), x2.expand(*batch, *x2.shape[-2:])


def _diff(x1: Tensor, x2: Tensor) -> Tensor:
    """x1[..., i, :] - x2[..., j, :] as (..., P, R, M)."""
    return x1.reshape(*x1.shape[:-1], 1, x1.shape[-1]) - x2.reshape(*x2.shape[:-2], 1, *x2.shape[-2:])


def _uses_mm(p: float, mode: int | None, rows1: int, rows2: int) -> bool:
    """torch's choice of the matrix-product form of the euclidean distance: compute_mode 0 (or None) when either
    side has more than 25 rows, 1 always, 2 never."""
    return p == 2 and (mode == 1 or (mode in (0, None) and (rows1 > 25 or rows2 > 25)))


def _distances(x1: Tensor, x2: Tensor, p: float, mode: int | None = None) -> Tensor:
    if _uses_mm(p, mode, x1.shape[-2], x2.shape[-2]):
        # |a|^2 + |b|^2 - 2 a.b, clamped at 0 against rounding, as torch's _euclidean_dist
        n1 = (x1 * x1).sum(-1, keepdim=True)
        n2 = (x2 * x2).sum(-1, keepdim=True)
        sq = n1 + n2.reshape(*n2.shape[:-2], 1, n2.shape[-2]) - 2 * x1.matmul(x2.transpose(-1, -2))
        return sq.maximum(0).sqrt()
    a = _diff(x1, x2).abs()
    if p == 0:
        return (a != 0).cast(a.dtype).sum(-1)
    if p == 1:
        return a.sum(-1)
    if p == 2:
        return (a * a).sum(-1).sqrt()
    if p == math.inf:
        return a.max(-1)
    return (a ** p).sum(-1) ** (1.0 / p)


@lowers("_cdist_forward.default")
def cdist_forward(x1: Tensor, x2: Tensor, p: float, compute_mode: int | None = None) -> Tensor:
    a, b = _batch(_wide(x1), _wide(x2))
    if 0 in a.shape[:-1] or 0 in b.shape[:-1]:
        return Tensor.zeros((*a.shape[:-1], b.shape[-2]), a.dtype)
    if a.shape[-1] == 0:  # no coordinates: every distance is 0
        return Tensor.zeros((*a.shape[:-1], b.shape[-2]), a.dtype)
    return _distances(a, b, p, compute_mode).cast(x1.dtype)


def _distance_grad(grad: Tensor, x1: Tensor, x2: Tensor, p: float, dist: Tensor) -> Tensor:
    """d/dx1 of sum(grad * dist(x1, x2)): each pair's term is grad * f(x1_i - x2_j, dist_ij), summed over j."""
    diff = _diff(x1, x2)
    g = grad.reshape(*grad.shape, 1)
    d = dist.reshape(*dist.shape, 1)
    if p == 0:
        return Tensor.zeros(x1.shape, x1.dtype)
    if p == 1:
        term = diff.sign()
    elif p == math.inf:
        # only the coordinates that attain the maximum carry the gradient
        term = diff.sign() * (diff.abs() == d).cast(diff.dtype)
    else:
        # diff * |diff|^(p-2) / dist^(p-1), written as sign * |diff|^(p-1) so that p < 2 never divides by 0
        a = diff.abs()
        num = diff if p == 2 else diff.sign() * a ** (p - 1)
        den = d if p == 2 else d ** (p - 1)
        zero = d == 0
        if p < 1:
            zero = zero | (a == 0)
        term = zero.where(0, num / zero.where(1, den))
    return (g * term).sum(-2)


@lowers("_cdist_backward.default")
def cdist_backward(grad: Tensor, x1: Tensor, x2: Tensor, p: float, cdist: Tensor) -> Tensor:
    a, b = _batch(_wide(x1), _wide(x2))
    if 0 in a.shape or 0 in b.shape[:-1]:
        return Tensor.zeros(x1.shape, x1.dtype)
    return _distance_grad(_wide(grad), a, b, p, _wide(cdist)).cast(x1.dtype)


def _pair_table(n: int) -> np.ndarray:
    """(n, n) positions in pdist's output of pair (i, j) (row-major over i < j), symmetric, -1 on the diagonal."""
    table = np.full((n, n), -1, np.int64)
    i, j = np.triu_indices(n, 1)
    table[i, j] = table[j, i] = np.arange(i.size)
    return table


@lowers("_pdist_forward.default")
def pdist_forward(x: Tensor, p: float = 2) -> Tensor:
    n = x.shape[0]
    if n < 2:
        return Tensor.zeros((0,), x.dtype)
    i, j = np.triu_indices(n, 1)
    if x.shape[1] == 0:
        return Tensor.zeros((i.size,), x.dtype)
    w = _wide(x)
    # the direct form, never the matrix product: torch's pdist takes differences
    full = _distances(w, w, p, mode=2).flatten()
    return full.take(cached_const((i * n + j).astype(np.int64))).cast(x.dtype)


@lowers("_pdist_backward.default")
def pdist_backward(grad: Tensor, x: Tensor, p: float, pdist: Tensor) -> Tensor:
    """pdist is cdist(x, x) read above the diagonal: spread grad and distances back over both triangles (0 on
    the diagonal) and take cdist's gradient, which then sums both of each pair's terms into x."""
    n = x.shape[0]
    if n < 2 or x.shape[1] == 0:
        return Tensor.zeros(x.shape, x.dtype)
    table = cached_const(_pair_table(n))
    on_pair = table >= 0
    pos = on_pair.where(table, 0)
    g = on_pair.where(_wide(grad).take(pos), 0)
    d = on_pair.where(_wide(pdist).take(pos), 0)
    w = _wide(x)
    return _distance_grad(g, w, w, p, d).cast(x.dtype)
