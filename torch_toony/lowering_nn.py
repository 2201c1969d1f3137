"""Lowerings for normalization (forward and backward), losses and embedding's backward.

Each is written on lazy toony_core values so it runs as a few fused kernels: a normalization is a mean, a
variance and one elementwise kernel; a backward is its two reductions and one elementwise kernel. Half and
bfloat16 inputs compute in float32, as torch's CPU kernels do. Batch norm's mutating forms (the running
statistics are written in place) get their own kernels at the end of this file. Sorting lives in
lowering_sort, random numbers and dropout in random; both register from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from toony_core import Tensor, dtypes

from .lowering import lowers

# ---------------------------------------------------------------- helpers

_TORCH_HALF = {dtypes.float16: torch.float16, dtypes.bfloat16: torch.bfloat16}


def _acc(x: Tensor) -> Tensor:
    """x in the dtype torch accumulates it in: float32 for half and bfloat16."""
    return x.cast(dtypes.float32) if x.dtype in (dtypes.float16, dtypes.bfloat16) else x


def _opt(x: Tensor | None, dt: Any) -> Tensor | None:
    return None if x is None else x.cast(dt)


def _reduce(loss: Tensor, reduction: int) -> Tensor:
    """torch's Reduction enum: 0 none, 1 mean, 2 sum."""
    if reduction == 0:
        return loss
    total = loss.sum()
    return total / loss.numel() if reduction == 1 else total


def _inv_sqrt(v: Tensor) -> Tensor:
    """1 / sqrt(v), correctly rounded twice like the CPU kernels (OpenCL's rsqrt may differ by an ulp, which a
    half-precision rounding of the statistic can turn into a whole half ulp)."""
    return v.sqrt().reciprocal()


def _log1p(u: Tensor) -> Tensor:
    """log(1 + u) accurate for tiny u (Goldberg's trick: the rounding error of 1 + u cancels)."""
    w = u + 1
    d = w - 1
    return (d == 0).where(u, w.log() * (u / d))


# ---------------------------------------------------------------- layer norm


@lowers("native_layer_norm.default")
def native_layer_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None, bias: Tensor | None,
                      eps: float) -> tuple[Tensor, Tensor, Tensor]:
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xf = _acc(x)
    mean = xf.mean(axes, keepdim=True)
    d = xf - mean
    rstd = ((d * d).mean(axes, keepdim=True) + eps).rsqrt()
    out = d * rstd
    if weight is not None:
        out = out * weight.cast(xf.dtype)
    if bias is not None:
        out = out + bias.cast(xf.dtype)
    return out, mean, rstd


@lowers("native_layer_norm_backward.default")
def native_layer_norm_backward(grad_out: Tensor, x: Tensor, normalized_shape: Sequence[int], mean: Tensor,
                               rstd: Tensor, weight: Tensor | None, bias: Tensor | None,
                               output_mask: Sequence[bool]) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    axis = x.ndim - len(normalized_shape)
    inner, outer = tuple(range(axis, x.ndim)), tuple(range(axis))
    n = math.prod(x.shape[axis:])
    g, xf = _acc(grad_out), _acc(x)
    x_hat = (xf - mean.cast(xf.dtype)) * rstd.cast(xf.dtype)
    d_input = d_weight = d_bias = None
    if output_mask[0]:
        if n == 0 or x.numel() == 0:
            d_input = Tensor.zeros(x.shape, xf.dtype)
        else:
            gx = g * weight.cast(xf.dtype) if weight is not None else g
            b = gx.sum(inner, keepdim=True)
            c = (x_hat * gx).sum(inner, keepdim=True)
            d_input = (rstd.cast(xf.dtype) * (1 / n)) * (gx * n - b - x_hat * c)
    if output_mask[1] and weight is not None:
        d_weight = (g * x_hat).sum(outer) if outer else g * x_hat
    if output_mask[2] and bias is not None:
        d_bias = g.sum(outer) if outer else g
    return d_input, d_weight, d_bias


# ---------------------------------------------------------------- group norm


@lowers("native_group_norm.default")
def native_group_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, n: int, c: int, hw: int, group: int,
                      eps: float) -> tuple[Tensor, Tensor, Tensor]:
    xf = _acc(x).reshape(n, group, (c // group) * hw)
    mean = xf.mean(2, keepdim=True)
    d = xf - mean
    rstd = ((d * d).mean(2, keepdim=True) + eps).rsqrt()
    out = (d * rstd).reshape(n, c, hw)
    if weight is not None:
        out = out * weight.cast(xf.dtype).reshape(1, c, 1)
    if bias is not None:
        out = out + bias.cast(xf.dtype).reshape(1, c, 1)
    return out.reshape(x.shape), mean.reshape(n, group), rstd.reshape(n, group)


@lowers("native_group_norm_backward.default")
def native_group_norm_backward(grad_out: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor | None,
                               n: int, c: int, hw: int, group: int, output_mask: Sequence[bool]) \
        -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    cpg = c // group
    g, xf = _acc(grad_out).reshape(n, group, cpg, hw), _acc(x).reshape(n, group, cpg, hw)
    acc = xf.dtype
    mean_, rstd_ = mean.cast(acc).reshape(n, group, 1), rstd.cast(acc).reshape(n, group, 1)
    ds = (g * xf).sum(3)  # (n, group, cpg)
    db = g.sum(3)
    w = weight.cast(acc).reshape(1, group, cpg) if weight is not None else None
    d_input = d_weight = d_bias = None
    if output_mask[0]:
        ds_val = (ds * w).sum(2, keepdim=True) if w is not None else ds.sum(2, keepdim=True)  # (n, group, 1)
        db_val = (db * w).sum(2, keepdim=True) if w is not None else db.sum(2, keepdim=True)
        s = 1.0 / (hw * cpg) if hw * cpg else 0.0
        c1 = rstd_ * w if w is not None else rstd_  # (n, group, cpg or 1)
        c2 = (db_val * mean_ - ds_val) * rstd_ * rstd_ * rstd_ * s
        c3 = -c2 * mean_ - db_val * rstd_ * s
        d_input = (g * c1.reshape(*c1.shape, 1) + xf * c2.reshape(n, group, 1, 1) + c3.reshape(n, group, 1, 1))
        d_input = d_input.reshape(x.shape)
    # torch returns the parameter gradients even without a weight (they are what one would get with ones)
    if output_mask[1]:
        d_weight = ((ds - db * mean_) * rstd_).sum(0).reshape(c)
    if output_mask[2]:
        d_bias = db.sum(0).reshape(c)
    return d_input, d_weight, d_bias


# ---------------------------------------------------------------- batch norm


def _bn_geometry(x: Tensor) -> tuple[tuple[int, ...], list[int], int]:
    """The reduced axes (all but channels), the shape a per-channel vector broadcasts as, values per channel."""
    c = x.shape[1]
    axes = (0, *range(2, x.ndim))
    return axes, [1, c] + [1] * (x.ndim - 2), x.numel() // c if c else 0


def batch_norm_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and sum of squared deviations (two passes: the second reads x - mean, never
    E[x^2] - mean^2). The variance is the sum over the count; the CPU rounds the sum, not the variance."""
    axes, bshape, _ = _bn_geometry(x)
    xf = _acc(x)
    mean = xf.mean(axes)
    d = xf - mean.reshape(bshape)
    return mean, (d * d).sum(axes)


def batch_norm_apply(x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """x * alpha + beta per channel, alpha = invstd * weight and beta = bias - mean * alpha: the CPU kernel's form
    (its rounding, and one multiply-add per element)."""
    _, bshape, _ = _bn_geometry(x)
    xf = _acc(x)
    alpha = invstd.cast(xf.dtype)
    if weight is not None:
        alpha = alpha * weight.cast(xf.dtype)
    beta = -(mean.cast(xf.dtype) * alpha)
    if bias is not None:
        beta = bias.cast(xf.dtype) + beta
    return xf * alpha.reshape(bshape) + beta.reshape(bshape)


def running_update(running: Tensor, stat: Tensor, momentum: float) -> Tensor:
    return running.cast(stat.dtype) * (1 - momentum) + stat * momentum


def per_count(total: Tensor, n: int) -> Tensor:
    """total / n, where n = 0 gives nan (torch's 0 / 0) and n < 0 cannot happen."""
    return total / n if n > 0 else total * math.nan


def batch_norm_functional(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                          running_var: Tensor | None, training: bool, momentum: float, eps: float) \
        -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(out, mean, invstd, new running mean, new running var): batch norm with no mutation. In eval the
    statistics are the running ones."""
    if training:
        mean, var_sum = batch_norm_stats(x)
        n = _bn_geometry(x)[2]
        invstd = _inv_sqrt(per_count(var_sum, n) + eps)
        new_rm = None if running_mean is None else running_update(running_mean, mean, momentum)
        new_rv = None if running_var is None else running_update(running_var, per_count(var_sum, n - 1), momentum)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("batch_norm in eval mode needs running_mean and running_var")
        mean, invstd = _acc(running_mean), _inv_sqrt(_acc(running_var) + eps)
        new_rm, new_rv = running_mean, running_var
    return batch_norm_apply(x, mean, invstd, weight, bias), mean, invstd, new_rm, new_rv


@lowers("_native_batch_norm_legit_functional.default")
def native_batch_norm_legit_functional(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                                       running_mean: Tensor, running_var: Tensor, training: bool, momentum: float,
                                       eps: float) -> tuple[Tensor, ...]:
    out, mean, invstd, rm, rv = batch_norm_functional(x, weight, bias, running_mean, running_var, training,
                                                      momentum, eps)
    return out, mean, invstd, rm, rv


@lowers("_native_batch_norm_legit_no_training.default")
def native_batch_norm_legit_no_training(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                                        running_mean: Tensor, running_var: Tensor, momentum: float, eps: float) \
        -> tuple[Tensor, Tensor, Tensor]:
    return batch_norm_functional(x, weight, bias, running_mean, running_var, False, momentum, eps)[:3]


def _bn_backward(grad_out: Tensor, x: Tensor, weight: Tensor | None, running_mean: Tensor | None,
                 running_var: Tensor | None, save_mean: Tensor | None, save_invstd: Tensor | None, train: bool,
                 eps: float, output_mask: Sequence[bool]) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    axes, bshape, n = _bn_geometry(x)
    g, xf = _acc(grad_out), _acc(x)
    acc = xf.dtype
    if train:
        mean, invstd = save_mean.cast(acc), save_invstd.cast(acc)
    else:
        mean, invstd = running_mean.cast(acc), _inv_sqrt(running_var.cast(acc) + eps)
    d = xf - mean.reshape(bshape)
    g_sum = g.sum(axes)
    dot = (g * d).sum(axes)
    d_input = d_weight = d_bias = None
    if output_mask[0]:
        scale = invstd * weight.cast(acc) if weight is not None else invstd
        if train and n:
            proj = dot * (1 / n) * invstd * invstd
            d_input = (g - d * proj.reshape(bshape) - (g_sum * (1 / n)).reshape(bshape)) * scale.reshape(bshape)
        else:
            d_input = g * scale.reshape(bshape)
    if output_mask[1]:
        d_weight = dot * invstd
    if output_mask[2]:
        d_bias = g_sum
    return d_input, d_weight, d_bias


@lowers("native_batch_norm_backward.default")
def native_batch_norm_backward(grad_out: Tensor, x: Tensor, weight: Tensor | None, running_mean: Tensor | None,
                               running_var: Tensor | None, save_mean: Tensor | None, save_invstd: Tensor | None,
                               train: bool, eps: float, output_mask: Sequence[bool]) \
        -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    return _bn_backward(grad_out, x, weight, running_mean, running_var, save_mean, save_invstd, train, eps,
                        output_mask)


@lowers("batch_norm_backward.default")
def batch_norm_backward(grad_out: Tensor, x: Tensor, weight: Tensor, running_mean: Tensor | None,
                        running_var: Tensor | None, save_mean: Tensor | None, save_var: Tensor | None, update: bool,
                        eps: float, output_mask: Sequence[bool], reserve: Tensor) \
        -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    # save_var holds the inverse standard deviation (the name is historical)
    train = update or running_mean is None
    return _bn_backward(grad_out, x, weight, running_mean, running_var, save_mean, save_var, train, eps,
                        output_mask)


# ---------------------------------------------------------------- losses


def _nll_parts(x: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int) \
        -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x as (N, C, ...), target as (N, ...), each target's weight (0 where ignored), the clamped class index."""
    if x.ndim == 1:
        x, target = x.reshape(1, x.shape[0]), target.reshape(1)
    c = x.shape[1]
    t = target.cast(dtypes.int64)
    valid = t != ignore_index
    # an out-of-range target is an error on the CPU; on the device it is clamped so no read leaves the buffer
    safe = valid.where(t, 0).clip(0, max(c - 1, 0))
    w = weight.cast(x.dtype).take(safe) if weight is not None else Tensor.full(t.shape, 1, x.dtype)
    return x, t, valid.where(w, 0).cast(x.dtype), safe


def _nll_forward(x: Tensor, target: Tensor, weight: Tensor | None, reduction: int, ignore_index: int) \
        -> tuple[Tensor, Tensor]:
    squeeze = x.ndim == 1
    xf = _acc(x)
    x2, t, w, safe = _nll_parts(xf, target, _opt(weight, xf.dtype), ignore_index)
    if x2.shape[1] == 0 or t.numel() == 0:
        picked = Tensor.zeros(t.shape, xf.dtype)
    else:
        picked = x2.gather(1, safe.reshape(t.shape[0], 1, *t.shape[1:])).reshape(t.shape)
    loss = -picked * w
    total = w.sum() if t.numel() else Tensor.full((), 0, xf.dtype)
    if reduction == 0:
        return (loss.reshape(()) if squeeze else loss), Tensor.full((), 0, xf.dtype)
    s = loss.sum() if t.numel() else Tensor.full((), 0, xf.dtype)
    return (s / total if reduction == 1 else s), total


def _nll_backward(grad_output: Tensor, x: Tensor, target: Tensor, weight: Tensor | None, reduction: int,
                  ignore_index: int, total_weight: Tensor) -> Tensor:
    shape = x.shape
    acc = _acc(x).dtype
    x2, t, w, safe = _nll_parts(x.cast(acc), target, _opt(weight, acc), ignore_index)
    g = grad_output.cast(acc)
    if reduction == 0:
        g = g.reshape(t.shape)
    elif reduction == 1:
        g = g.reshape(()) / total_weight.cast(acc).reshape(())
    coef = -(w * g)  # per target position
    c = x2.shape[1]
    cls = Tensor.arange(c).reshape(1, c, *([1] * (t.ndim - 1)))
    spread = (1, *t.shape[1:])
    onehot = cls == safe.reshape(t.shape[0], *spread)
    return onehot.where(coef.reshape(t.shape[0], *spread), 0).cast(acc).reshape(shape)


for _n in ("nll_loss_forward.default", "nll_loss2d_forward.default"):
    lowers(_n)(_nll_forward)
for _n in ("nll_loss_backward.default", "nll_loss2d_backward.default"):
    lowers(_n)(_nll_backward)


def _rounded(v: Tensor, dt: Any) -> Tensor:
    """v (float32) rounded to the half type dt and back: where the CPU kernel computes a step in dt itself."""
    return v.cast(dt).cast(v.dtype) if dt in (dtypes.float16, dtypes.bfloat16) else v


@lowers("mse_loss.default", pointwise=True)
def mse_loss(x: Tensor, target: Tensor, reduction: int = 1) -> Tensor:
    # the CPU kernel computes (a - b) * (a - b) in the input type, then reduces in float32
    d = _rounded(_acc(x) - _acc(target), x.dtype)
    return _reduce(_rounded(d * d, x.dtype), reduction)


@lowers("mse_loss_backward.default", pointwise=True)
def mse_loss_backward(grad: Tensor, x: Tensor, target: Tensor, reduction: int) -> Tensor:
    # the CPU kernel: norm * (a - b) * grad, each step in the input type
    d = _rounded(_acc(x) - _acc(target), x.dtype)
    scale = 2 / d.numel() if reduction == 1 and d.numel() else 2
    norm = float(torch.tensor(scale, dtype=_TORCH_HALF.get(x.dtype, torch.float64)))
    return _rounded(norm * d, x.dtype) * _acc(grad)


def _bce_terms(x: Tensor, target: Tensor) -> Tensor:
    # torch clamps each log at -100 so that x = 0 or 1 gives a finite loss
    log_x = x.log().maximum(-100)
    log_1mx = _log1p(-x).maximum(-100)
    return (target - 1) * log_1mx - target * log_x


@lowers("binary_cross_entropy.default", pointwise=True)
def binary_cross_entropy(x: Tensor, target: Tensor, weight: Tensor | None = None, reduction: int = 1) -> Tensor:
    loss = _bce_terms(_acc(x), _acc(target))
    if weight is not None:
        loss = loss * _acc(weight)
    return _reduce(loss, reduction)


@lowers("binary_cross_entropy_backward.default", pointwise=True)
def binary_cross_entropy_backward(grad: Tensor, x: Tensor, target: Tensor, weight: Tensor | None = None,
                                  reduction: int = 1) -> Tensor:
    xf = _acc(x)
    out = _acc(grad) * (xf - _acc(target)) / ((1 - xf) * xf).maximum(1e-12)
    if weight is not None:
        out = out * _acc(weight)
    if reduction == 1 and x.numel():
        out = out / x.numel()
    return out


@lowers("log_sigmoid_forward.default")
def log_sigmoid_forward(x: Tensor) -> tuple[Tensor, Tensor]:
    xf = _acc(x)
    z = (-xf.abs()).exp()
    return xf.minimum(0) - _log1p(z), z  # the buffer is what the CPU kernel saves: exp(-|x|)


@lowers("log_sigmoid_backward.default")
def log_sigmoid_backward(grad: Tensor, x: Tensor, buffer: Tensor) -> Tensor:
    # d/dx log(sigmoid(x)) = sigmoid(-x); computed from x alone, so any buffer (CUDA's is empty) works
    return _acc(grad) * (-_acc(x)).sigmoid()


@lowers("smooth_l1_loss.default", pointwise=True)
def smooth_l1_loss(x: Tensor, target: Tensor, reduction: int = 1, beta: float = 1.0) -> Tensor:
    d = (_acc(x) - _acc(target)).abs()
    loss = d if beta == 0 else (d < beta).where(d * d * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, reduction)


@lowers("smooth_l1_loss_backward.default", pointwise=True)
def smooth_l1_loss_backward(grad: Tensor, x: Tensor, target: Tensor, reduction: int, beta: float) -> Tensor:
    d, grad = _acc(x) - _acc(target), _acc(grad)
    out = d.sign() if beta == 0 else (d.abs() < beta).where(d * (1 / beta), d.sign())
    return out * grad * (1 / d.numel() if reduction == 1 and d.numel() else 1)


@lowers("huber_loss.default", pointwise=True)
def huber_loss(x: Tensor, target: Tensor, reduction: int = 1, delta: float = 1.0) -> Tensor:
    d = (_acc(x) - _acc(target)).abs()
    return _reduce((d < delta).where(d * d * 0.5, (d - 0.5 * delta) * delta), reduction)


@lowers("huber_loss_backward.default", pointwise=True)
def huber_loss_backward(grad: Tensor, x: Tensor, target: Tensor, reduction: int, delta: float) -> Tensor:
    d, grad = _acc(x) - _acc(target), _acc(grad)
    out = (d.abs() <= delta).where(d, d.sign() * delta)
    return out * grad * (1 / d.numel() if reduction == 1 and d.numel() else 1)


# ---------------------------------------------------------------- embedding


@lowers("replication_pad1d_backward.default", "replication_pad2d_backward.default",
        "replication_pad3d_backward.default")
def replication_pad_backward(grad: Tensor, x: Tensor, padding: Sequence[int]) -> Tensor:
    """The forward reads input[clamp(j - left, 0, n - 1)] at output position j (negative pads crop), so each
    input element gets the gradient at its own position, and the first and last also every gradient of the
    padding before and after them. One padded axis at a time, the last axis first."""
    for k in range(len(padding) // 2):
        axis, left, right = grad.ndim - 1 - k, padding[2 * k], padding[2 * k + 1]
        n = x.shape[axis]
        total = _window(grad, axis, left, n)
        if left > 0:
            total = total + _window(grad.shrink(_along(grad, axis, 0, left)).sum(axis, keepdim=True), axis, 0, n)
        if right > 0:
            m = grad.shape[axis]
            edge = grad.shrink(_along(grad, axis, m - right, m)).sum(axis, keepdim=True)
            total = total + _window(edge, axis, 1 - n, n)
        grad = total
    return grad


def _along(t: Tensor, axis: int, start: int, end: int) -> tuple[tuple[int, int], ...]:
    return tuple((start, end) if a == axis else (0, n) for a, n in enumerate(t.shape))


def _window(t: Tensor, axis: int, start: int, length: int) -> Tensor:
    """t[start : start + length] along axis, zeros where that runs outside t."""
    n = t.shape[axis]
    lo, hi = min(max(start, 0), n), min(max(start + length, 0), n)
    inside = t.shrink(_along(t, axis, lo, hi))
    before = min(max(-start, 0), length)
    pads = [(0, 0)] * t.ndim
    pads[axis] = (before, length - before - (hi - lo))
    return inside.pad(pads)


@lowers("embedding_dense_backward.default")
def embedding_dense_backward(grad_output: Tensor, indices: Tensor, num_weights: int, padding_idx: int,
                             scale_grad_by_freq: bool) -> Tensor:
    """Scatter-add of the gradient rows at their indices (accumulated in float32 for half types)."""
    d = grad_output.shape[-1] if grad_output.ndim else 1
    m = indices.numel()
    acc = _acc(grad_output).dtype
    if m == 0 or d == 0 or num_weights == 0:
        return Tensor.zeros((num_weights, d), acc)
    g = grad_output.cast(acc).reshape(m, d)
    idx = indices.cast(dtypes.int64).reshape(m)
    if scale_grad_by_freq:
        counts = Tensor.zeros((num_weights,), dtypes.int32).scatter_flat(idx, Tensor.full((m,), 1, dtypes.int32),
                                                                           "add")
        g = g / counts.take(idx).cast(acc).reshape(m, 1)
    g = (idx != padding_idx).reshape(m, 1).where(g, 0)
    flat = idx.reshape(m, 1) * d + Tensor.arange(d).reshape(1, d)
    return Tensor.zeros((num_weights * d,), acc).scatter_flat(flat, g, "add").reshape(num_weights, d)


@lowers("embedding_renorm.default")
def embedding_renorm(weight: Tensor, indices: Tensor, max_norm: float, norm_type: float) -> Tensor:
    """Rows named by indices whose norm exceeds max_norm are scaled to max_norm / (norm + 1e-7) of it."""
    if weight.numel() == 0 or indices.numel() == 0:
        return weight
    v = weight.shape[0]
    w = _acc(weight)
    a = w.abs()
    if norm_type == math.inf:
        norm = a.max(1)
    elif norm_type == -math.inf:
        norm = a.min(1)
    elif norm_type == 0:
        norm = (a != 0).cast(w.dtype).sum(1)
    elif norm_type == 1:
        norm = a.sum(1)
    elif norm_type == 2:
        norm = (w * w).sum(1).sqrt()
    else:
        norm = (a ** norm_type).sum(1) ** (1 / norm_type)
    named = Tensor.full((v,), False, dtypes.bool).scatter_flat(indices.reshape(indices.numel()).cast(dtypes.int64),
                                                              Tensor.full((indices.numel(),), True, dtypes.bool))
    scale = (named & (norm > max_norm)).where(max_norm / (norm + 1e-7), 1.0)
    return w * scale.reshape(v, 1)


# the other modules: batch norm's mutating kernels, sorting, data-dependent shapes, random numbers and dropout
from . import lowering_batchnorm, lowering_scatter, lowering_select, lowering_sort, lowering_special, masks, random  # noqa: E402, F401, I001
from . import linspace  # noqa: E402, F401
