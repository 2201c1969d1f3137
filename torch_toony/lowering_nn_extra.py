"""Lowerings for less common neural-network ops: pairwise distances (cdist, pdist), embedding bags, multi-class
and multi-label margin losses, and randomized leaky ReLU.

Distances and margin losses are dense broadcasts plus reductions (deterministic, no atomics); embedding bags
scatter into their bags (atomically, as embedding's backward does), because a dense bag-by-index mask would
cost bags x indices x width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch._decomp import decompositions as torch_decompositions

from toony_core import Tensor, dtypes

from . import extra_kernels, random
from .lowering import META_LIB, lowers
from .lowering_nn import embedding_dense_backward
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


# ---------------------------------------------------------------- margin losses

_MEAN, _SUM = 1, 2  # torch's Reduction enum (0 is none)


def _reduce_loss(per_sample: Tensor, reduction: int) -> Tensor:
    if reduction == _SUM:
        return per_sample.sum()
    if reduction == _MEAN:
        return per_sample.mean() if per_sample.numel() else Tensor.full((), math.nan, per_sample.dtype)
    return per_sample


def _loss_grad_scale(grad_output: Tensor, n: int, reduction: int) -> Tensor:
    """The upstream gradient of each of n samples, (n, 1)."""
    if reduction == _MEAN:
        return (grad_output / n).reshape(1, 1).expand(n, 1)
    if reduction == _SUM:
        return grad_output.reshape(1, 1).expand(n, 1)
    return grad_output.reshape(n, 1)


def _rows(x: Tensor) -> Tensor:
    """The loss input as (samples, classes): a 0-d or 1-d input is one sample."""
    return x.reshape(1, max(x.numel(), 1) if x.ndim == 0 else x.shape[0]) if x.ndim < 2 else x


def _multi_margin_terms(x: Tensor, target: Tensor, p: int, margin: float, weight: Tensor | None) \
        -> tuple[Tensor, Tensor, Tensor]:
    """(z, others, scale): z[n, i] = margin - x[n, y_n] + x[n, i] over (samples, classes), others marks i != y_n,
    and scale[n] = weight[y_n] / classes (the factor of every term of sample n)."""
    n, c = x.shape
    y = target.cast(dtypes.int64).reshape(n, 1)
    others = Tensor.arange(c).reshape(1, c) != y
    z = margin - x.gather(1, y) + x
    scale = Tensor.full((n, 1), 1.0 / c, x.dtype)
    if weight is not None:
        scale = scale * _wide(weight).take(y)
    return z, others, scale


@lowers("multi_margin_loss.default")
def multi_margin_loss(x: Tensor, target: Tensor, p: int = 1, margin: float = 1, weight: Tensor | None = None,
                      reduction: int = _MEAN) -> Tensor:
    """sum over classes i != y of max(0, margin - x[y] + x[i])^p * weight[y], over the number of classes."""
    rows = _rows(_wide(x))
    z, others, scale = _multi_margin_terms(rows, target, p, margin, weight)
    hinge = (others & (z > 0)).where(z, 0)
    per = ((hinge * hinge if p == 2 else hinge) * scale).sum(1)
    out = _reduce_loss(per if x.ndim == 2 else per.reshape(()), reduction)
    return out.cast(x.dtype)


@lowers("multi_margin_loss_backward.default")
def multi_margin_loss_backward(grad_output: Tensor, x: Tensor, target: Tensor, p: int, margin: float,
                               weight: Tensor | None = None, reduction: int = _MEAN) -> Tensor:
    rows = _rows(_wide(x))
    z, others, scale = _multi_margin_terms(rows, target, p, margin, weight)
    active = others & (z > 0)
    d = active.where(2 * z if p == 2 else 1, 0) * scale
    # every other class's term pulls x[y] the opposite way
    g = others.where(d, -d.sum(1, keepdim=True))
    g = g * _loss_grad_scale(_wide(grad_output), rows.shape[0], reduction)
    return g.reshape(x.shape).cast(x.dtype)


def _multilabel_terms(x: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(hinge, valid_onehot, is_target) over (samples, target slots k, classes j): the targets of a sample are
    its target row up to the first -1; hinge[n, k, j] = 1 - x[n, t_k] + x[n, j] for valid slots k and
    non-target classes j where positive (else 0), valid_onehot[n, k, j] marks j == t_k for valid k."""
    n, c = x.shape
    t = target.cast(dtypes.int64).reshape(n, c)
    # slot k is valid while no -1 came at or before it: count the -1s up to k with a triangular sum
    upto = Tensor.arange(c).reshape(c, 1) >= Tensor.arange(c).reshape(1, c)  # [k, m]: m <= k
    ends = (t < 0).reshape(n, 1, c) & upto.reshape(1, c, c)
    valid = ends.cast(dtypes.int32).sum(2) == 0  # (n, k)
    tk = valid.where(t, 0)
    onehot = valid.reshape(n, c, 1) & (tk.reshape(n, c, 1) == Tensor.arange(c).reshape(1, 1, c))
    is_target = onehot.cast(dtypes.int32).max(1).cast(dtypes.bool)  # (n, j)
    z = 1 - x.gather(1, tk).reshape(n, c, 1) + x.reshape(n, 1, c)
    use = valid.reshape(n, c, 1) & is_target.logical_not().reshape(n, 1, c) & (z > 0)
    return use.where(z, 0), onehot, is_target


@lowers("multilabel_margin_loss_forward.default")
def multilabel_margin_loss_forward(x: Tensor, target: Tensor, reduction: int) -> tuple[Tensor, Tensor]:
    rows = _rows(_wide(x))
    if rows.numel() == 0:
        per = Tensor.zeros((rows.shape[0],), rows.dtype)
        is_target = Tensor.zeros(x.shape, x.dtype)
    else:
        hinge, _, is_t = _multilabel_terms(rows, target)
        per = hinge.sum((1, 2)) / rows.shape[1]
        is_target = is_t.cast(x.dtype).reshape(target.shape)
    out = _reduce_loss(per if x.ndim == 2 else per.reshape(()), reduction)
    return out.cast(x.dtype), is_target


@lowers("multilabel_margin_loss_backward.default")
def multilabel_margin_loss_backward(grad_output: Tensor, x: Tensor, target: Tensor, reduction: int,
                                    is_target: Tensor) -> Tensor:
    rows = _rows(_wide(x))
    if rows.numel() == 0:
        return Tensor.zeros(x.shape, x.dtype)
    n, c = rows.shape
    hinge, onehot, _ = _multilabel_terms(rows, target)
    active = (hinge > 0).cast(rows.dtype)  # (n, k, j)
    # + for each non-target class j, - for the target t_k, every active (k, j) pair
    g = active.sum(1) - (onehot.cast(rows.dtype) * active.sum(2, keepdim=True)).sum(1)
    g = g / c * _loss_grad_scale(_wide(grad_output), n, reduction)
    return g.reshape(x.shape).cast(x.dtype)


def _one_sample_meta(decomposition: Callable[..., Any], reduction_at: int) -> Callable[..., Any]:
    """torch's meta kernel (its decomposition) with the CPU's shape for one unreduced sample: (), not (1,).
    reduction_at: the position of `reduction` among the arguments after (input, target)."""
    def meta(x: torch.Tensor, target: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = decomposition(x, target, *args, **kwargs)
        reduction = args[reduction_at] if len(args) > reduction_at else kwargs.get("reduction", _MEAN)
        if x.ndim >= 2 or reduction != 0:
            return out
        return out.reshape(()) if isinstance(out, torch.Tensor) else (out[0].reshape(()), *out[1:])
    return meta


# eager toony takes output shapes from the meta kernels: these two must agree with the CPU
META_LIB.impl("multi_margin_loss", _one_sample_meta(torch_decompositions.multi_margin_loss, 3), "Meta")
META_LIB.impl("multilabel_margin_loss_forward",
              _one_sample_meta(torch_decompositions.multilabel_margin_loss_forward, 0), "Meta")
# neither backward has a meta kernel: its gradient has the input's shape and dtype
META_LIB.impl("multi_margin_loss_backward", lambda grad_output, x, *args, **kwargs: torch.empty_like(x), "Meta")
META_LIB.impl("multilabel_margin_loss_backward", lambda grad_output, x, *args, **kwargs: torch.empty_like(x),
              "Meta")


# ---------------------------------------------------------------- randomized leaky ReLU

def _rrelu_with_noise_functional(x: Tensor, noise: Tensor, lower: float = 0.125, upper: float = 1 / 3,
                                 training: bool = False, generator: torch.Generator | None = None) \
        -> tuple[Tensor, Tensor]:
    """Training: each non-positive element is scaled by its own uniform draw in [lower, upper), which the new
    noise records (1 elsewhere). Evaluation: a leaky ReLU of slope (lower + upper) / 2, noise unchanged."""
    w = _wide(x)
    if not training:
        return (w > 0).where(w, w * ((lower + upper) / 2)).cast(x.dtype), noise
    (word,) = random.words(x.shape, generator)
    slope = lower + (upper - lower) * random.unit(word, random._acc(w.dtype)).cast(w.dtype)
    r = (w <= 0).where(slope, 1)
    return (w * r).cast(x.dtype), r.cast(noise.dtype)


def _rrelu_with_noise(x: torch.Tensor, noise: torch.Tensor, lower: float = 0.125, upper: float = 1 / 3,
                      training: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """The mutating form: the functional one, then its new noise written into `noise`."""
    out, new_noise = torch.ops.aten.rrelu_with_noise_functional(x, noise, lower, upper, training, generator)
    if training:
        noise.copy_(new_noise)
    return out


def _rrelu_with_noise_inplace(x: torch.Tensor, noise: torch.Tensor, lower: float = 0.125, upper: float = 1 / 3,
                              training: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    return x.copy_(_rrelu_with_noise(x, noise, lower, upper, training, generator))


# eager-only, like every random kernel: a compiled graph draws its own numbers per call
extra_kernels.functional("rrelu_with_noise_functional.default", _rrelu_with_noise_functional)
extra_kernels.kernel("rrelu_with_noise.default", _rrelu_with_noise)
extra_kernels.kernel("rrelu_with_noise_.default", _rrelu_with_noise_inplace)


# ---------------------------------------------------------------- embedding bags

_BAG_SUM, _BAG_MEAN, _BAG_MAX = 0, 1, 2


def _bags(indices: Tensor, offsets: Tensor, include_last_offset: bool, padding_idx: int) \
        -> tuple[Tensor, Tensor, Tensor, int]:
    """(offset2bag, counted, bag_size, bags): the bag of each index (the last bag whose offset is at or before
    it), whether the index counts (inside its bag's end and not padding_idx), and each bag's count of them."""
    m = indices.shape[0]
    bags = offsets.shape[0] - (1 if include_last_offset else 0)
    off = offsets.cast(dtypes.int64)
    pos = Tensor.arange(m, dtype=dtypes.int64)
    if bags > 1:
        starts = off.shrink(((1, bags),)).reshape(1, bags - 1)
        offset2bag = (starts <= pos.reshape(m, 1)).cast(dtypes.int64).sum(1)
    else:
        offset2bag = Tensor.zeros((m,), dtypes.int64)
    counted = indices.cast(dtypes.int64) != padding_idx
    if include_last_offset:  # indices past the last offset belong to no bag
        counted = counted & (pos < off.shrink(((bags, bags + 1),)).reshape(()))
    bag_size = Tensor.zeros((max(bags, 0),), dtypes.int64).scatter_flat(offset2bag, counted.cast(dtypes.int64),
                                                                         "add")
    return offset2bag, counted, bag_size, bags


def _embedding_bag(weight: Tensor, indices: Tensor, offsets: Tensor, scale_grad_by_freq: bool = False,
                   mode: int = _BAG_SUM, sparse: bool = False, per_sample_weights: Tensor | None = None,
                   include_last_offset: bool = False, padding_idx: int = -1) \
        -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each bag reduces the weight rows of its indices (sum, mean or max; an empty bag gives zeros). Returns
    (output, offset2bag, bag_size, max_indices), the last three what the backward reads: max_indices holds,
    per bag and column, the row the maximum came from (the first one on ties, -1 for an empty bag)."""
    m, d = indices.shape[0], weight.shape[1]
    offset2bag, counted, bag_size, bags = _bags(indices, offsets, include_last_offset, padding_idx)
    idx_dt = indices.dtype
    idx = indices.cast(dtypes.int64)
    # torch's bag_size has one entry per offset: the extra last one (include_last_offset) is 0
    sizes = bag_size.pad(((0, offsets.shape[0] - bags),)).cast(idx_dt)
    empty_max = Tensor.zeros((0,), idx_dt)
    if bags == 0 or d == 0 or m == 0:
        out = Tensor.zeros((bags, d), weight.dtype)
        return out, offset2bag.cast(idx_dt), sizes, \
            Tensor.full((bags, d), -1, idx_dt) if mode == _BAG_MAX else empty_max
    w = _wide(weight)
    cols = Tensor.arange(d, dtype=dtypes.int64).reshape(1, d)
    rows = w.take(idx.reshape(m, 1) * d + cols)  # (m, d)
    target = offset2bag.reshape(m, 1) * d + cols
    keep = counted.reshape(m, 1)
    if mode == _BAG_MAX:
        vals = keep.where(rows, -math.inf)
        best = Tensor.full((bags * d,), -math.inf, w.dtype).scatter_flat(target, vals, "max")
        # the first position in its bag that attains the maximum (positions past m never win)
        hit = keep & (vals == best.take(target))
        first = Tensor.full((bags * d,), m, dtypes.int64).scatter_flat(
            target, hit.where(Tensor.arange(m, dtype=dtypes.int64).reshape(m, 1), m), "min")
        nonempty = (bag_size > 0).reshape(bags, 1)
        out = nonempty.where(best.reshape(bags, d), 0)
        max_indices = nonempty.where(idx.take(first.minimum(m - 1)).reshape(bags, d), -1)
        return out.cast(weight.dtype), offset2bag.cast(idx_dt), sizes, max_indices.cast(idx_dt)
    if per_sample_weights is not None:
        rows = rows * _wide(per_sample_weights).reshape(m, 1)
    out = Tensor.zeros((bags * d,), w.dtype).scatter_flat(target, keep.where(rows, 0), "add").reshape(bags, d)
    if mode == _BAG_MEAN:
        out = out / bag_size.maximum(1).cast(w.dtype).reshape(bags, 1)
    return out.cast(weight.dtype), offset2bag.cast(idx_dt), sizes, empty_max


for _name in ("_embedding_bag.default", "_embedding_bag_forward_only.default"):
    lowers(_name)(_embedding_bag)


@lowers("_embedding_bag_dense_backward.default")
def embedding_bag_dense_backward(grad: Tensor, indices: Tensor, offset2bag: Tensor, bag_size: Tensor,
                                 maximum_indices: Tensor, num_weights: int, scale_grad_by_freq: bool, mode: int,
                                 per_sample_weights: Tensor | None = None, padding_idx: int = -1) -> Tensor:
    """sum and mean: each index's row gets its bag's gradient (weighted, or over the bag size), as embedding's
    backward scatters it; max: each (bag, column) gradient goes to the row its maximum came from."""
    d = grad.shape[1]
    if mode == _BAG_MAX:
        bags = grad.shape[0]
        src = maximum_indices.cast(dtypes.int64)
        flat = src * d + Tensor.arange(d, dtype=dtypes.int64).reshape(1, d)
        g = (src >= 0).where(_wide(grad), 0)
        out = Tensor.zeros((num_weights * d,), g.dtype).scatter_flat((src >= 0).where(flat, 0), g, "add")
        return out.reshape(num_weights, d) if bags else Tensor.zeros((num_weights, d), g.dtype)
    m = indices.shape[0]
    if m == 0:
        return Tensor.zeros((num_weights, d), _wide(grad).dtype)
    bag = offset2bag.cast(dtypes.int64)
    g = _wide(grad).take(bag.reshape(m, 1) * d + Tensor.arange(d, dtype=dtypes.int64).reshape(1, d))
    if per_sample_weights is not None:
        g = g * _wide(per_sample_weights).reshape(m, 1)
    if mode == _BAG_MEAN:
        g = g / bag_size.cast(dtypes.int64).take(bag).maximum(1).cast(g.dtype).reshape(m, 1)
    return embedding_dense_backward(g, indices, num_weights, padding_idx, scale_grad_by_freq)


@lowers("_embedding_bag_backward.default")
def embedding_bag_backward(grad: Tensor, indices: Tensor, offsets: Tensor, offset2bag: Tensor, bag_size: Tensor,
                           maximum_indices: Tensor, num_weights: int, scale_grad_by_freq: bool, mode: int,
                           sparse: bool, per_sample_weights: Tensor | None = None, padding_idx: int = -1) -> Tensor:
    if sparse:
        raise NotImplementedError("toony: embedding_bag with sparse=True (sparse gradients)")
    return embedding_bag_dense_backward(grad, indices, offset2bag, bag_size, maximum_indices, num_weights,
                                        scale_grad_by_freq, mode, per_sample_weights, padding_idx)


@lowers("_embedding_bag_per_sample_weights_backward.default")
def embedding_bag_per_sample_weights_backward(grad: Tensor, weight: Tensor, indices: Tensor, offsets: Tensor,
                                              offset2bag: Tensor, mode: int, padding_idx: int = -1) -> Tensor:
    """Each index's weight scaled its row into its bag: its gradient is that row dotted with the bag's gradient
    (0 for padding_idx)."""
    m, d = indices.shape[0], grad.shape[1]
    if m == 0 or d == 0:
        return Tensor.zeros((m,), _wide(grad).dtype)
    cols = Tensor.arange(d, dtype=dtypes.int64).reshape(1, d)
    idx = indices.cast(dtypes.int64)
    rows = _wide(weight).take(idx.reshape(m, 1) * d + cols)
    g = _wide(grad).take(offset2bag.cast(dtypes.int64).reshape(m, 1) * d + cols)
    return (idx != padding_idx).where((rows * g).sum(1), 0)
