"""Lowerings for pooling and its backward: max, average, adaptive average and adaptive max pooling (2d, 3d;
torch routes 1d through 2d), and max unpooling.

Pools reduce over the window view of their (padded) input; their gradients reduce over the transposed window
view of the output gradient (gathers: deterministic, no atomics). Max pooling's indices are a second
reduction over the same windows, matching torch's choice of the first maximum (the last nan). Adaptive pools,
whose bins are not strided, gather through constant tables of bin positions.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from toony_core import Tensor, dtypes
from toony_core.uop import Ops

from .lowering import lowers
from .windows import (
    Ints,
    acc_dtype,
    cached_const,
    const,
    expand,
    gather_windows,
    lowest,
    pad_crop,
    place,
    transposed_taps,
    windows,
    zeros_if_empty,
)

# ---------------------------------------------------------------- max pooling

def _pool_out(size: int, k: int, s: int, p: int, dl: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: in ceil mode the last window must start inside the input or left pad."""
    num = size + 2 * p - dl * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_view(x: Tensor, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints, ceil_mode: bool,
               value: float | int) -> tuple[Tensor, list[int]]:
    """The windows (*lead, *out, *kernel) of x padded with `value` (beyond the padding too, in ceil mode)."""
    d = len(kernel)
    size = x.shape[x.ndim - d:]
    out = [_pool_out(n, k, s, p, dl, ceil_mode) for n, k, s, p, dl in zip(size, kernel, stride, padding, dilation)]
    need = [(o - 1) * s + (k - 1) * dl + 1 for o, s, k, dl in zip(out, stride, kernel, dilation)]
    xp = pad_crop(x, padding, [m - p - n for m, p, n in zip(need, padding, size)], value)
    return windows(xp, kernel, stride, dilation, out), out


def _pool_args(x: Tensor, d: int, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints = (1,)) \
        -> tuple[tuple[int, ...], ...]:
    kernel = expand(kernel, d)
    stride = expand(stride, d) if len(stride) else kernel  # an empty stride means stride = kernel
    return kernel, stride, expand(padding, d), expand(dilation, d)


def _input_positions(size: Ints, out: Ints, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints) \
        -> tuple[Tensor, Tensor]:
    """For every (out, kernel) pair: the flat index into the input's spatial plane the tap reads, and whether
    it lies inside the input (not in the padding)."""
    d = len(size)
    flat: Tensor | None = None
    valid: Tensor | None = None
    for i in range(d):
        o = place(Tensor.arange(out[i]), i, 2 * d) * stride[i]
        k = place(Tensor.arange(kernel[i]), d + i, 2 * d) * dilation[i]
        pos = o + k - padding[i]
        ok = (pos >= 0) & (pos < size[i])
        flat = pos if flat is None else flat * size[i] + pos
        valid = ok if valid is None else valid & ok
    assert flat is not None and valid is not None
    return flat.cast(dtypes.int32), valid  # int32 index math is cheaper; the result is widened after


def _max_pool(x: Tensor, d: int, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints, ceil_mode: bool) \
        -> tuple[Tensor, Tensor]:
    kernel, stride, padding, dilation = _pool_args(x, d, kernel, stride, padding, dilation)
    win, out = _pool_view(x, kernel, stride, padding, dilation, ceil_mode, lowest(x.dtype))
    lead = x.shape[:x.ndim - d]
    if math.prod(lead) * math.prod(out) == 0:
        return Tensor.zeros((*lead, *out), x.dtype), Tensor.zeros((*lead, *out), dtypes.int64)
    axes = tuple(range(win.ndim - d, win.ndim))
    m = win.max(axes, keepdim=True)
    pos, valid = _input_positions(x.shape[x.ndim - d:], out, kernel, stride, padding, dilation)
    # torch keeps the first maximum (strict >), starting from the first in-bounds tap, but a nan wins, the last
    # one: one min-reduction over keys pos (a maximum), -1 - pos (a nan) or past-the-end (anything else)
    key = (valid & (win == m)).where(pos, math.prod(x.shape[x.ndim - d:]))
    if x.dtype.is_float:
        key = (valid & (win != win)).where(-1 - pos, key)
    key = key.min(axes, keepdim=True)
    idx = (key < 0).where(-1 - key, key).cast(dtypes.int64).reshape(*lead, *out)
    return m.reshape(*lead, *out), idx


@lowers("max_pool2d_with_indices.default")
def max_pool2d_with_indices(x: Tensor, kernel_size: Ints, stride: Ints = (), padding: Ints = (0,),
                            dilation: Ints = (1,), ceil_mode: bool = False) -> tuple[Tensor, Tensor]:
    return _max_pool(x, 2, kernel_size, stride, padding, dilation, ceil_mode)


@lowers("max_pool3d_with_indices.default")
def max_pool3d_with_indices(x: Tensor, kernel_size: Ints, stride: Ints = (), padding: Ints = (0,),
                            dilation: Ints = (1,), ceil_mode: bool = False) -> tuple[Tensor, Tensor]:
    return _max_pool(x, 3, kernel_size, stride, padding, dilation, ceil_mode)


def _max_pool_backward(go: Tensor, x: Tensor, d: int, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints,
                       indices: Tensor) -> Tensor:
    """grad_input[i] = the sum of grad_output over the windows that picked i: a gather over the windows that
    contain i (each tap k of the transposed windows), matched by index."""
    kernel, stride, padding, dilation = _pool_args(x, d, kernel, stride, padding, dilation)
    if (z := zeros_if_empty(x.shape, x.dtype, go)) is not None:
        return z
    size = x.shape[x.ndim - d:]
    acc = acc_dtype(go.dtype)
    gwin = transposed_taps(go, size, kernel, stride, padding, dilation, 0).view.cast(acc)
    iwin = transposed_taps(indices, size, kernel, stride, padding, dilation, -1).view
    here = Tensor.arange(math.prod(size)).reshape(*size, *([1] * d)).cast(indices.dtype)
    axes = tuple(range(gwin.ndim - d, gwin.ndim))
    return (iwin == here).where(gwin, 0).sum(axes, True, acc).cast(x.dtype).reshape(x.shape)


@lowers("max_pool2d_with_indices_backward.default")
def max_pool2d_with_indices_backward(grad_output: Tensor, x: Tensor, kernel_size: Ints, stride: Ints,
                                     padding: Ints, dilation: Ints, ceil_mode: bool, indices: Tensor) -> Tensor:
    return _max_pool_backward(grad_output, x, 2, kernel_size, stride, padding, dilation, indices)


@lowers("max_pool3d_with_indices_backward.default")
def max_pool3d_with_indices_backward(grad_output: Tensor, x: Tensor, kernel_size: Ints, stride: Ints,
                                     padding: Ints, dilation: Ints, ceil_mode: bool, indices: Tensor) -> Tensor:
    return _max_pool_backward(grad_output, x, 3, kernel_size, stride, padding, dilation, indices)


# ---------------------------------------------------------------- average pooling

@functools.cache
def _avg_divisor(size: tuple[int, ...], out: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                 padding: tuple[int, ...], count_include_pad: bool) -> np.ndarray:
    """The per-output divisor of torch's avg_pool: the window clipped to the padded input (count_include_pad)
    or to the input itself."""
    div = np.ones((), np.int64)
    for n, o, k, s, p in zip(size, out, kernel, stride, padding):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        div = div[..., None] * np.maximum(end - start, 0)
    return np.maximum(div, 1)


def _avg_pool_parts(x_shape: Ints, d: int, kernel: Ints, stride: Ints, padding: Ints, ceil_mode: bool,
                    count_include_pad: bool, divisor_override: int | None) -> tuple[Any, ...]:
    """(kernel, stride, padding, input size, output size, divisor: an int or a per-output array)."""
    kernel = expand(kernel, d)
    stride = expand(stride, d) if len(stride) else kernel
    padding = expand(padding, d)
    size = tuple(x_shape[len(x_shape) - d:])
    out = tuple(_pool_out(n, k, s, p, 1, ceil_mode) for n, k, s, p in zip(size, kernel, stride, padding))
    if divisor_override:
        div: int | np.ndarray = int(divisor_override)
    else:
        div = _avg_divisor(size, out, kernel, stride, padding, count_include_pad)
    return kernel, stride, padding, size, out, div


def _divide(t: Tensor, div: int | np.ndarray, kept: int) -> Tensor:
    """t / div (per output position, followed by `kept` unit axes), truncating for integers as torch does."""
    dv = div if isinstance(div, int) else cached_const(div.reshape(*div.shape, *([1] * kept)))
    if t.dtype.is_float:
        return t / (dv if isinstance(dv, int) else dv.cast(t.dtype))
    return t._binary(Ops.IDIV, dv if isinstance(dv, int) else dv.cast(t.dtype))


def _avg_pool(x: Tensor, d: int, kernel: Ints, stride: Ints, padding: Ints, ceil_mode: bool,
              count_include_pad: bool, divisor_override: int | None) -> Tensor:
    kernel, stride, padding, size, out, div = _avg_pool_parts(
        x.shape, d, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    lead = x.shape[:x.ndim - d]
    if math.prod(lead) * math.prod(out) == 0:
        return Tensor.zeros((*lead, *out), x.dtype)
    acc = acc_dtype(x.dtype)
    win, _ = _pool_view(x.cast(acc), kernel, stride, padding, (1,) * d, ceil_mode, 0)
    total = win.sum(tuple(range(win.ndim - d, win.ndim)), True, acc)
    return _divide(total, div, d).cast(x.dtype).reshape(*lead, *out)


@lowers("avg_pool2d.default")
def avg_pool2d(x: Tensor, kernel_size: Ints, stride: Ints = (), padding: Ints = (0,), ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    return _avg_pool(x, 2, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


@lowers("avg_pool3d.default")
def avg_pool3d(x: Tensor, kernel_size: Ints, stride: Ints = (), padding: Ints = (0,), ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    return _avg_pool(x, 3, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _avg_pool_backward(go: Tensor, x: Tensor, d: int, kernel: Ints, stride: Ints, padding: Ints, ceil_mode: bool,
                       count_include_pad: bool, divisor_override: int | None) -> Tensor:
    kernel, stride, padding, size, out, div = _avg_pool_parts(
        x.shape, d, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if (z := zeros_if_empty(x.shape, x.dtype, go)) is not None:
        return z
    acc = acc_dtype(go.dtype)
    dilation = (1,) * d
    if all(st == 1 for st in stride):  # a window view: dividing first fuses into it
        win = transposed_taps(_divide(go.cast(acc), div, 0), size, kernel, stride, padding, dilation, 0).view
    else:  # gathers read memory: divide each gathered value by its window's divisor, gathered alike
        win = transposed_taps(go, size, kernel, stride, padding, dilation, 0).view.cast(acc)
        if isinstance(div, int):
            win = win / div
        else:
            d_taps = transposed_taps(cached_const(div.astype(np.float64)), size, kernel, stride, padding, dilation, 1)
            win = win / d_taps.view.cast(acc)
    return win.sum(tuple(range(win.ndim - d, win.ndim)), True, acc).cast(x.dtype).reshape(x.shape)


@lowers("avg_pool2d_backward.default")
def avg_pool2d_backward(grad_output: Tensor, x: Tensor, kernel_size: Ints, stride: Ints, padding: Ints,
                        ceil_mode: bool, count_include_pad: bool, divisor_override: int | None) -> Tensor:
    return _avg_pool_backward(grad_output, x, 2, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override)


@lowers("avg_pool3d_backward.default")
def avg_pool3d_backward(grad_output: Tensor, x: Tensor, kernel_size: Ints, stride: Ints, padding: Ints,
                        ceil_mode: bool, count_include_pad: bool, divisor_override: int | None) -> Tensor:
    return _avg_pool_backward(grad_output, x, 3, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override)


# ---------------------------------------------------------------- adaptive pooling

@functools.cache
def _bins(size: int, out: int) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """torch's adaptive bins along one dim: bin o covers [floor(o * size / out), ceil((o + 1) * size / out)).
    Returns the gather table (out, K) of positions (clamped into range), its mask (out, K), and the lengths.
    The bins of (out, size) swapped are, for each position, the bins that contain it."""
    o = np.arange(out)
    start = (o * size) // out
    length = ((o + 1) * size + out - 1) // out - start
    j = np.arange(int(length.max()) if out else 1)
    table = np.minimum(start[:, None] + j, size - 1)
    return const(table.astype(np.int32)), j[None, :] < length[:, None], table


def _mask(masks: list[np.ndarray]) -> Tensor:
    """The product of per-dim (O_i, K_i) masks as one (*O, *K) constant."""
    d = len(masks)
    full = np.ones((), bool)
    for i, m in enumerate(masks):
        full = full & m.reshape([m.shape[0] if j == i else m.shape[1] if j == d + i else 1 for j in range(2 * d)])
    return cached_const(full)


def _adaptive_windows(x: Tensor, d: int, out: Ints, fill: float | int) -> tuple[Tensor, Tensor | None]:
    """The bins of x as (*lead, *out, *K) (positions outside a bin hold `fill`) and the (*out, *K) mask, or None
    when every bin has the same length and the bins are plain strided windows."""
    size = x.shape[x.ndim - d:]
    if all(s % o == 0 for s, o in zip(size, out)):
        k = [s // o for s, o in zip(size, out)]
        return windows(x, k, k, (1,) * d, out), None
    bins = [_bins(s, o) for s, o in zip(size, out)]
    mask = _mask([b[1] for b in bins])
    return mask.where(gather_windows(x, [b[0] for b in bins]), fill), mask


def _adaptive_out(x: Tensor, d: int, output_size: Ints) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(x.shape[:x.ndim - d]), expand(output_size, d)


def _divide_by_lengths(t: Tensor, lengths: list[np.ndarray | int], first_axis: int) -> Tensor:
    """t / len_0 / len_1 / ..., one division per dim in torch's order; len_i lies along axis first_axis + i."""
    for i, n in enumerate(lengths):
        if isinstance(n, int):
            t = t / n
        else:
            shape = [1] * t.ndim
            shape[first_axis + i] = n.shape[0]
            if n.ndim == 2:  # an (S, K) table: the K axis sits d axes further on
                shape[first_axis + len(lengths) + i] = n.shape[1]
            t = t / cached_const(n.astype(np.float64)).reshape(shape).cast(t.dtype)
    return t


def _adaptive_avg(x: Tensor, d: int, output_size: Ints) -> Tensor:
    lead, out = _adaptive_out(x, d, output_size)
    if (z := zeros_if_empty((*lead, *out), x.dtype, x)) is not None:
        return z
    acc = acc_dtype(x.dtype)
    win, _ = _adaptive_windows(x, d, out, 0)
    total = win.cast(acc).sum(tuple(range(win.ndim - d, win.ndim)), True, acc)
    size = x.shape[x.ndim - d:]
    lengths: list[np.ndarray | int] = []
    for s, o in zip(size, out):
        starts = (np.arange(o) * s) // o
        lengths.append(s // o if s % o == 0 else ((np.arange(o) + 1) * s + o - 1) // o - starts)
    return _divide_by_lengths(total, lengths, len(lead)).cast(x.dtype).reshape(*lead, *out)


def _adaptive_avg_backward(go: Tensor, x: Tensor, d: int) -> Tensor:
    """grad_input[i] = the sum over the bins o containing i of grad_output[o] / len(o) (per dim, torch's order)."""
    size, out = x.shape[x.ndim - d:], go.shape[go.ndim - d:]
    lead = x.shape[:x.ndim - d]
    if (z := zeros_if_empty(x.shape, x.dtype, go)) is not None:
        return z
    acc = acc_dtype(go.dtype)
    if all(s % o == 0 for s, o in zip(size, out)):  # each position lies in exactly one bin: a broadcast
        g = _divide_by_lengths(go.cast(acc), [s // o for s, o in zip(size, out)], len(lead))
        g = g.reshape(*lead, *(v for o in out for v in (o, 1)))
        g = g.expand(*lead, *(v for o, s in zip(out, size) for v in (o, s // o)))
        return g.cast(x.dtype).reshape(x.shape)
    inv = [_bins(o, s) for s, o in zip(size, out)]  # for each position: the bins that contain it
    lengths = []
    for s, o, (_, _, table) in zip(size, out, inv):
        starts = (np.arange(o) * s) // o
        length = ((np.arange(o) + 1) * s + o - 1) // o - starts
        lengths.append(length[table])  # (S, K): the length of the bin each tap reads
    win = gather_windows(go, [b[0] for b in inv]).cast(acc)
    win = _mask([b[1] for b in inv]).where(_divide_by_lengths(win, lengths, len(lead)), 0)
    return win.sum(tuple(range(win.ndim - d, win.ndim)), True, acc).cast(x.dtype).reshape(x.shape)


@lowers("_adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(x: Tensor, output_size: Ints) -> Tensor:
    return _adaptive_avg(x, 2, output_size)


@lowers("_adaptive_avg_pool3d.default")
def adaptive_avg_pool3d(x: Tensor, output_size: Ints) -> Tensor:
    return _adaptive_avg(x, 3, output_size)


@lowers("_adaptive_avg_pool2d_backward.default")
def adaptive_avg_pool2d_backward(grad_output: Tensor, x: Tensor) -> Tensor:
    return _adaptive_avg_backward(grad_output, x, 2)


@lowers("_adaptive_avg_pool3d_backward.default")
def adaptive_avg_pool3d_backward(grad_output: Tensor, x: Tensor) -> Tensor:
    return _adaptive_avg_backward(grad_output, x, 3)


def _adaptive_max(x: Tensor, d: int, output_size: Ints) -> tuple[Tensor, Tensor]:
    lead, out = _adaptive_out(x, d, output_size)
    if math.prod(lead) * math.prod(out) == 0:
        return Tensor.zeros((*lead, *out), x.dtype), Tensor.zeros((*lead, *out), dtypes.int64)
    size = x.shape[x.ndim - d:]
    win, mask = _adaptive_windows(x, d, out, lowest(x.dtype))
    axes = tuple(range(win.ndim - d, win.ndim))
    m = win.max(axes, keepdim=True)
    if mask is None:  # strided bins
        k = [s // o for s, o in zip(size, out)]
        pos, _ = _input_positions(size, out, k, k, (0,) * d, (1,) * d)
        valid: Tensor | bool = True
    else:
        bins = [_bins(s, o) for s, o in zip(size, out)]
        pos = None
        for i, b in enumerate(bins):
            t = b[0].reshape([out[i] if j == i else b[0].shape[1] if j == d + i else 1 for j in range(2 * d)])
            pos = t if pos is None else pos * size[i] + t
        valid = mask
    key = ((win == m) & valid).where(pos, math.prod(size))
    if x.dtype.is_float:
        key = ((win != win) & valid).where(-1 - pos, key)
    key = key.min(axes, keepdim=True)
    idx = (key < 0).where(-1 - key, key).cast(dtypes.int64).reshape(*lead, *out)
    return m.reshape(*lead, *out), idx


def _adaptive_max_backward(go: Tensor, x: Tensor, indices: Tensor, d: int) -> Tensor:
    size, out = x.shape[x.ndim - d:], go.shape[go.ndim - d:]
    if (z := zeros_if_empty(x.shape, x.dtype, go)) is not None:
        return z
    acc = acc_dtype(go.dtype)
    inv = [_bins(o, s) for s, o in zip(size, out)]
    gwin = gather_windows(go, [b[0] for b in inv]).cast(acc)
    iwin = gather_windows(indices, [b[0] for b in inv])
    here = Tensor.arange(math.prod(size)).reshape(*size, *([1] * d)).cast(indices.dtype)
    hit = _mask([b[1] for b in inv]) & (iwin == here)
    return hit.where(gwin, 0).sum(tuple(range(gwin.ndim - d, gwin.ndim)), True, acc).cast(x.dtype).reshape(x.shape)


@lowers("adaptive_max_pool2d.default")
def adaptive_max_pool2d(x: Tensor, output_size: Ints) -> tuple[Tensor, Tensor]:
    return _adaptive_max(x, 2, output_size)


@lowers("adaptive_max_pool3d.default")
def adaptive_max_pool3d(x: Tensor, output_size: Ints) -> tuple[Tensor, Tensor]:
    return _adaptive_max(x, 3, output_size)


@lowers("adaptive_max_pool2d_backward.default")
def adaptive_max_pool2d_backward(grad_output: Tensor, x: Tensor, indices: Tensor) -> Tensor:
    return _adaptive_max_backward(grad_output, x, indices, 2)


@lowers("adaptive_max_pool3d_backward.default")
def adaptive_max_pool3d_backward(grad_output: Tensor, x: Tensor, indices: Tensor) -> Tensor:
    return _adaptive_max_backward(grad_output, x, indices, 3)


# ---------------------------------------------------------------- max unpooling

def _max_unpool(x: Tensor, indices: Tensor, output_size: Ints, d: int) -> Tensor:
    """out[..., indices[..., i]] = x[..., i] in each (zeroed) output plane: a scatter. Where several inputs
    name the same position one of them lands (torch's CPU kernel keeps the last; which one here is not
    specified); an index outside the plane writes nothing (torch raises)."""
    size = tuple(output_size)[-d:]
    lead = x.shape[:x.ndim - d]
    plane, rows = math.prod(size), math.prod(lead)
    if (z := zeros_if_empty((*lead, *size), x.dtype, x)) is not None:
        return z
    per = x.numel() // max(rows, 1)
    idx = indices.cast(dtypes.int64).reshape(rows, per)
    inside = (idx >= 0) & (idx < plane)
    flat = inside.where(idx + Tensor.arange(rows).reshape(rows, 1) * plane, rows * plane)  # past the end: dropped
    out = Tensor.zeros((rows * plane + 1,), x.dtype).scatter_flat(flat, x.reshape(rows, per))
    return out.shrink(((0, rows * plane),)).reshape(*lead, *size)


@lowers("max_unpool2d.default")
def max_unpool2d(x: Tensor, indices: Tensor, output_size: Ints) -> Tensor:
    return _max_unpool(x, indices, output_size, 2)


@lowers("max_unpool3d.default")
def max_unpool3d(x: Tensor, indices: Tensor, output_size: Ints, stride: Ints, padding: Ints) -> Tensor:
    return _max_unpool(x, indices, output_size, 3)
