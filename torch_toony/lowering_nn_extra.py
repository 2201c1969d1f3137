"""Lowerings for less common neural-network ops: pairwise distances (cdist, pdist), embedding bags, multi-class
and multi-label margin losses, and randomized leaky ReLU.

Distances and margin losses are dense broadcasts plus reductions (deterministic, no atomics); embedding bags
scatter into their bags (atomically, as embedding's backward does), because a dense bag-by-index mask would
cost bags x indices x width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch._decomp import decompositions as torch_decompositions

from toony_core import Tensor, device, dtypes

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


# ---------------------------------------------------------------- grid sampling

_BILINEAR, _NEAREST, _BICUBIC = 0, 1, 2
_ZEROS, _BORDER, _REFLECTION = 0, 1, 2
_CUBIC_A = -0.75  # the cubic convolution coefficient torch (and upsample_bicubic2d) use


def _stack(parts: Sequence[Tensor]) -> Tensor:
    """The parts (one shape) stacked along a new first axis: each padded into its own slot, then summed."""
    k = len(parts)
    return sum((p.reshape(1, *p.shape).pad(((i, k - 1 - i),) + ((0, 0),) * p.ndim) for i, p in enumerate(parts)),
               start=Tensor.zeros((k, *parts[0].shape), parts[0].dtype))


def _clip(c: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """c clamped to [0, size - 1] and its derivative (0 at and beyond the ends, as torch's set_grad)."""
    inside = (c > 0) & (c < size - 1)
    return c.maximum(0).minimum(size - 1), inside.cast(c.dtype)


def _reflect(c: Tensor, twice_low: int, twice_high: int) -> tuple[Tensor, Tensor]:
    """c reflected into [twice_low / 2, twice_high / 2] (as many bounces as needed) and its derivative (+-1)."""
    if twice_low == twice_high:
        return Tensor.zeros(c.shape, c.dtype), Tensor.zeros(c.shape, c.dtype)
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    shifted = c - low
    sign = (shifted < 0).where(-1.0, 1.0).cast(c.dtype)
    a = shifted.abs()
    extra = a.fmod(span)
    flips = (a / span).floor()
    even = flips - (flips / 2).floor() * 2 == 0
    return even.where(extra + low, span - extra + low), even.where(sign, -sign)


def _unnormalize(g: Tensor, size: int, align_corners: bool, vectorized: bool) -> tuple[Tensor, Tensor]:
    """A normalized grid coordinate in [-1, 1] as a position along an input axis of `size`, and d(position)/d(g).
    Rounded as the CPU does: its vectorized 2d kernels compute (g + 1) * (size / 2) - 0.5, its generic ones
    ((g + 1) * size - 1) / 2 (one ulp apart, which moves a tap where a position lands on an integer)."""
    scale = (size - 1) / 2 if align_corners else size / 2
    if align_corners:
        c = (g + 1) * scale if vectorized else (g + 1) / 2 * (size - 1)
    elif vectorized and g.dtype == dtypes.float32 and device().supports_fp64:
        # the CPU's compiler fuses this multiply and subtract (one rounding, not two): a product of two floats
        # is exact in float64, so computing it there and rounding once gives the same float (one ulp of a
        # coordinate moves a sample between pixels by up to a pixel step times 2**-24 of the coordinate)
        c = ((g + 1).cast(dtypes.float64) * scale - 0.5).cast(g.dtype)
    else:
        c = (g + 1) * scale - 0.5 if vectorized else ((g + 1) * size - 1) / 2
    return c, Tensor.full(c.shape, scale, c.dtype)


def _source(g: Tensor, size: int, padding_mode: int, align_corners: bool, vectorized: bool) \
        -> tuple[Tensor, Tensor]:
    """_unnormalize, then padding_mode applied."""
    c, grad = _unnormalize(g, size, align_corners, vectorized)
    if padding_mode == _BORDER:
        c, d = _clip(c, size)
        grad = grad * d
    elif padding_mode == _REFLECTION:
        c, d = _reflect(c, 0, 2 * (size - 1)) if align_corners else _reflect(c, -1, 2 * size - 1)
        c, d2 = _clip(c, size)
        grad = grad * d * d2
    return c, grad


def _round_half_even(c: Tensor) -> Tensor:
    """nearbyint: the nearest integer, ties to even, as torch's nearest mode rounds."""
    r = (c + 0.5).floor()
    odd = r - (r / 2).floor() * 2 != 0
    return ((r - c == 0.5) & odd).where(r - 1, r)


class _Grid:
    """The sampling geometry shared by forward and backward: per input axis, the source coordinate of every
    output point (N, 1, *out), and each tap's flat position in the input and its validity."""

    def __init__(self, x: Tensor, grid: Tensor, padding_mode: int, align_corners: bool, raw: bool = False):
        self.n, self.c, *self.sizes = x.shape
        self.out = tuple(grid.shape[1:-1])
        k = len(self.sizes)
        g = _wide(grid)
        self.dtype = g.dtype
        # the CPU's vectorized kernels serve 2d float32 and float64; 3d and half types take its generic ones
        vectorized = k == 2 and grid.dtype in (dtypes.float32, dtypes.float64)
        self.coords: list[Tensor] = []
        self.dcoords: list[Tensor] = []
        for a, size in enumerate(self.sizes):
            comp = g.shrink(tuple((0, s) for s in g.shape[:-1]) + ((k - 1 - a, k - a),))
            comp = comp.reshape(self.n, 1, *self.out)
            # bicubic pads each tap, not the point itself
            c, d = _unnormalize(comp, size, align_corners, vectorized) if raw else \
                _source(comp, size, padding_mode, align_corners, vectorized)
            self.coords.append(c)
            self.dcoords.append(d)
        self.padding_mode, self.align_corners = padding_mode, align_corners
        plane = math.prod(self.sizes)
        self.base = (Tensor.arange(self.n * self.c, dtype=dtypes.int64) * plane).reshape(self.n, self.c,
                                                                                           *([1] * k))

    def tap(self, positions: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """(flat index into x (N, C, *out), valid (N, 1, *out)) of integer-valued float positions per axis."""
        valid = None
        flat = None
        stride = 1
        for a in reversed(range(len(self.sizes))):
            p, size = positions[a], self.sizes[a]
            ok = (p >= 0) & (p <= size - 1)
            valid = ok if valid is None else valid & ok
            term = ok.where(p, 0).cast(dtypes.int64) * stride
            flat = term if flat is None else flat + term
            stride *= size
        assert valid is not None and flat is not None
        return self.base + valid.where(flat, 0), valid


def _cubic_weights(t: Tensor) -> list[Tensor]:
    def near(s: Tensor) -> Tensor:
        return ((_CUBIC_A + 2) * s - (_CUBIC_A + 3)) * s * s + 1

    def far(s: Tensor) -> Tensor:
        return ((_CUBIC_A * s - 5 * _CUBIC_A) * s + 8 * _CUBIC_A) * s - 4 * _CUBIC_A

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _cubic_weight_grads(t: Tensor) -> list[Tensor]:
    """d/dt of _cubic_weights."""
    def near(s: Tensor) -> Tensor:  # d/ds of the near polynomial
        return (3 * (_CUBIC_A + 2) * s - 2 * (_CUBIC_A + 3)) * s

    def far(s: Tensor) -> Tensor:
        return (3 * _CUBIC_A * s - 10 * _CUBIC_A) * s + 8 * _CUBIC_A

    return [far(t + 1), near(t), -near(1 - t), -far(2 - t)]


def _taps(geo: _Grid, mode: int) -> list[tuple[list[Tensor], Tensor, list[Tensor]]]:
    """Every tap, the last axis fastest: (integer positions per axis, weight, d(weight)/d(coordinate) per
    axis)."""
    axes = range(len(geo.sizes))
    if mode == _NEAREST:
        pos = [_round_half_even(c) for c in geo.coords]
        one = Tensor.ones(pos[0].shape, geo.dtype)
        return [(pos, one, [one * 0 for _ in axes])]
    per_axis: list[list[tuple[Tensor, Tensor, Tensor]]] = []
    for c in geo.coords:
        lo = c.floor()
        t = c - lo
        if mode == _BILINEAR:
            one = Tensor.ones(t.shape, t.dtype)
            per_axis.append([(lo, 1 - t, -one), (lo + 1, t, one)])
        else:
            per_axis.append([(lo + (i - 1), w, dw) for i, (w, dw) in enumerate(zip(_cubic_weights(t),
                                                                                    _cubic_weight_grads(t)))])
    taps = []
    for combo in np.ndindex(*[len(p) for p in per_axis]):
        chosen = [per_axis[a][i] for a, i in enumerate(combo)]
        pos = [p for p, _, _ in chosen]
        if mode == _BICUBIC and geo.padding_mode != _ZEROS:
            pos = [_source_tap(p, size, geo.padding_mode, geo.align_corners) for p, size in zip(pos, geo.sizes)]
        weight = math.prod((w for _, w, _ in chosen[1:]), start=chosen[0][1])
        dweight = [math.prod((dw if b == a else w for b, (_, w, dw) in enumerate(chosen)), start=Tensor.ones(
            weight.shape, weight.dtype)) for a in axes]
        taps.append((pos, weight, dweight))
    return taps


def _source_tap(p: Tensor, size: int, padding_mode: int, align_corners: bool) -> Tensor:
    """A bicubic tap's integer position moved inside the input by padding_mode (border or reflection)."""
    if padding_mode == _REFLECTION:
        p, _ = _reflect(p, 0, 2 * (size - 1)) if align_corners else _reflect(p, -1, 2 * size - 1)
    return _clip(p, size)[0]


def _grid_sampler(x: Tensor, grid: Tensor, interpolation_mode: int, padding_mode: int, align_corners: bool) \
        -> Tensor:
    geo = _Grid(x, grid, padding_mode, align_corners, raw=interpolation_mode == _BICUBIC)
    if 0 in x.shape or 0 in geo.out:
        return Tensor.zeros((geo.n, geo.c, *geo.out), x.dtype)
    src = _wide(x).flatten()
    taps = _taps(geo, interpolation_mode)
    values = [valid.where(src.take(idx), 0) for idx, valid in (geo.tap(pos) for pos, _, _ in taps)]
    if interpolation_mode == _BICUBIC:
        # as the CPU rounds: each row of 4 taps interpolated along x first, then the 4 rows along y
        wx = [_cubic_weights(geo.coords[1] - geo.coords[1].floor())]
        wy = _cubic_weights(geo.coords[0] - geo.coords[0].floor())
        rows = [_dot(wx[0], values[4 * i:4 * i + 4]) for i in range(4)]
        return _dot(wy, rows).cast(x.dtype)
    return _dot([w for _, w, _ in taps], values).cast(x.dtype)


def _dot(weights: Sequence[Tensor], values: Sequence[Tensor]) -> Tensor:
    """w0 * v0 + w1 * v1 + ..., summed left to right."""
    out = weights[0] * values[0]
    for w, v in zip(weights[1:], values[1:]):
        out = out + w * v
    return out


def _grid_sampler_backward(grad_output: Tensor, x: Tensor, grid: Tensor, interpolation_mode: int,
                           padding_mode: int, align_corners: bool, output_mask: Sequence[bool] = (True, True)) \
        -> tuple[Tensor, Tensor]:
    """grad_input: each tap's weight times the output gradient, scattered (added) into its input position;
    grad_grid: per axis, the output gradient dotted over channels with the taps' values times the derivative of
    their weights, times the derivative of the coordinate with respect to the grid."""
    geo = _Grid(x, grid, padding_mode, align_corners, raw=interpolation_mode == _BICUBIC)
    k = len(geo.sizes)
    if 0 in x.shape or 0 in geo.out:
        return Tensor.zeros(x.shape, x.dtype), Tensor.zeros(grid.shape, grid.dtype)
    go = _wide(grad_output)
    src = _wide(x).flatten()
    taps = _taps(geo, interpolation_mode)
    idxs, vals, dgrid = [], [], [None] * k
    for pos, weight, dweight in taps:
        idx, valid = geo.tap(pos)
        idxs.append(idx.expand(go.shape))
        vals.append(valid.where(go * weight, 0))
        if interpolation_mode != _NEAREST:
            v = valid.where(src.take(idx), 0) * go
            for a in range(k):
                term = (v * dweight[a]).sum(1)
                dgrid[a] = term if dgrid[a] is None else dgrid[a] + term
    grad_input = Tensor.zeros((x.numel(),), go.dtype).scatter_flat(_stack(idxs), _stack(vals), "add")
    if interpolation_mode == _NEAREST:
        grad_grid = Tensor.zeros(grid.shape, go.dtype)
    else:
        # the grid's last axis lists the input axes innermost first (x, y, z)
        parts = [(dgrid[a] * geo.dcoords[a].reshape(geo.n, *geo.out)) for a in reversed(range(k))]
        grad_grid = _stack(parts).permute(*range(1, k + 2), 0)
    return grad_input.reshape(x.shape).cast(x.dtype), grad_grid.cast(grid.dtype)


for _name in ("grid_sampler_2d.default", "grid_sampler_3d.default"):
    lowers(_name)(_grid_sampler)
for _name in ("grid_sampler_2d_backward.default", "grid_sampler_3d_backward.default"):
    lowers(_name)(_grid_sampler_backward)
