"""Lazy window views shared by the convolution, pooling and resampling lowerings.

Everything here is movement (and a little index arithmetic) on toony_core's lazy tensors, so no im2col or
zero-stuffed buffer is ever materialized; the consumers' reductions read through these views.
  - `windows`: a padded input seen as (..., *out, *kernel) through `as_strided`;
  - `transposed_taps`: for every input position i and tap k, the output element whose window put tap k on
    i (o = (i + pad - k * dilation) / stride where that is an integer in range): the adjoint of `windows`,
    so gradients are gathers, never scatters (deterministic, no atomics). With stride 1 it is a window view
    of the padded output; with a larger stride only about kernel / stride taps per position are real, and
    constant tables list just those (no work on the zeros a dilated view would hold);
  - `gather_windows`: windows whose starts are not strided (adaptive pooling, resampling), read through
    constant index tables.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from toony_core import Tensor, dtypes
from toony_core.dtype import DType
from toony_core.uop import Ops

Ints = Sequence[int]


def expand(p: Ints | int, d: int) -> tuple[int, ...]:
    """A per-spatial-dim parameter, broadcast from a single value as torch does."""
    t = (p,) if isinstance(p, int) else tuple(p)
    return t * d if len(t) == 1 else t


def acc_dtype(dt: DType) -> DType:
    """Half-precision products are summed in float32, as torch's CPU kernels do (opmath)."""
    return dtypes.float32 if dt in (dtypes.float16, dtypes.bfloat16) else dt


def lowest(dt: DType) -> float | int:
    if dt.is_float:
        return -math.inf
    if dt == dtypes.bool:
        return False
    return int(np.iinfo(np.dtype(dt.name)).min)


def pad_crop(x: Tensor, before: Ints, after: Ints, value: float | int = 0) -> Tensor:
    """Pad the last len(before) dims with value (negative amounts crop)."""
    lead = x.ndim - len(before)
    spatial = x.shape[lead:]
    if any(max(-b, 0) >= n - max(-a, 0) for b, a, n in zip(before, after, spatial)):  # nothing of x is left
        return Tensor.full((*x.shape[:lead], *(n + b + a for b, a, n in zip(before, after, spatial))), value, x.dtype)
    crop = [(0, n) for n in x.shape[:lead]] + [(max(-b, 0), n - max(-a, 0)) for b, a, n in zip(before, after, spatial)]
    x = x.shrink(crop)
    return x.pad([(0, 0)] * lead + [(max(b, 0), max(a, 0)) for b, a in zip(before, after)], value)


def windows(x: Tensor, kernel: Ints, stride: Ints, dilation: Ints, out: Ints) -> Tensor:
    """(*lead, *S) -> the view (*lead, *out, *kernel): v[..., o, k] = x[..., o * stride + k * dilation]."""
    d = len(kernel)
    strides = [1] * x.ndim
    for i in range(x.ndim - 2, -1, -1):
        strides[i] = strides[i + 1] * x.shape[i + 1]
    sp = strides[x.ndim - d:]
    shape = (*x.shape[:x.ndim - d], *out, *kernel)
    view_strides = (*strides[:x.ndim - d], *(s * st for s, st in zip(sp, stride)),
                    *(s * dl for s, dl in zip(sp, dilation)))
    return x.as_strided(shape, view_strides, 0)


def dilate(x: Tensor, stride: Ints, value: float | int = 0) -> Tensor:
    """Insert stride-1 copies of `value` between neighbours along the last len(stride) dims."""
    d = len(stride)
    for i, s in enumerate(stride):
        ax = x.ndim - d + i
        n = x.shape[ax]
        if s == 1 or n == 0:
            continue
        pre, post = x.shape[:ax], x.shape[ax + 1:]
        x = x.reshape(*pre, n, 1, *post)
        x = x.pad([(0, 0)] * (ax + 1) + [(0, s - 1)] + [(0, 0)] * len(post), value)
        keep = [(0, m) for m in pre] + [(0, (n - 1) * s + 1)] + [(0, m) for m in post]
        x = x.reshape(*pre, n * s, *post).shrink(keep)
    return x


def transposed_windows(y: Tensor, size: Ints, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints,
                       value: float | int = 0) -> Tensor:
    """(*lead, *O) -> the view (*lead, *size, *kernel) of v[..., i, k] = y[..., (i + padding - k * dilation) / stride]
    where that is an integer in [0, O), else `value`: the adjoint of `windows` over a padded input.

    The taps come in REVERSED order (the view holds v[..., i, K-1-k]): a flipped window costs a division and a
    modulo per load once lowered, so consumers that care about tap order (a convolution) flip their weight."""
    d = len(kernel)
    yd = dilate(y, stride, value)
    reach = [(k - 1) * dl for k, dl in zip(kernel, dilation)]
    lo = [r - p for r, p in zip(reach, padding)]  # reversed tap k' = K-1-k reads yd[i + k' * dilation - lo]
    hi = [n + r - b - m for n, r, b, m in zip(size, reach, lo, yd.shape[yd.ndim - d:])]
    return windows(pad_crop(yd, lo, hi, value), kernel, (1,) * d, dilation, size)


def place(t: Tensor, at: int, ndim: int) -> Tensor:
    """A 1-D tensor as axis `at` of an ndim-dim broadcastable tensor."""
    return t.reshape([t.shape[0] if i == at else 1 for i in range(ndim)])


def zeros_if_empty(shape: Ints, dt: DType, *ts: Tensor) -> Tensor | None:
    return Tensor.zeros(tuple(shape), dt) if math.prod(shape) == 0 or any(t.numel() == 0 for t in ts) else None


def gather_windows(x: Tensor, index: Sequence[Tensor]) -> Tensor:
    """(*lead, *S) -> (*lead, *O, *K): v[..., o, k] = x[..., index[0][o0, k0], index[1][o1, k1], ...] for per-dim
    integer tables index[i] of shape (O_i, K_i) with entries in [0, S_i): windows that are not strided."""
    d = len(index)
    lead, size = x.shape[:x.ndim - d], x.shape[x.ndim - d:]
    out, kernel = [t.shape[0] for t in index], [t.shape[1] for t in index]
    flat: Tensor | None = None
    for i, t in enumerate(index):
        t = t.reshape([out[i] if j == i else kernel[i] if j == d + i else 1 for j in range(2 * d)])
        flat = t if flat is None else flat * size[i] + t
    assert flat is not None
    rows = math.prod(lead)
    base = Tensor.arange(rows).reshape(rows, *([1] * 2 * d)) * math.prod(size)
    return flat_source(x).take(base + flat).reshape(*lead, *out, *kernel)


def flat_source(x: Tensor) -> Tensor:
    """x as a 1-D tensor (row-major) with no movement op between a gather and the memory it reads.

    A gather lowers every reshape, permute or stride between it and its buffer into a division and a modulo
    per dim per load, which toony_core does not fold back (see /work/bugs_core.md), so a gather-heavy kernel
    would spend most of its time on index arithmetic: reshapes of a 1-D value are looked through, and
    anything else is first copied into a flat buffer (one cheap kernel, far cheaper than the index math)."""
    u = x.uop
    while u.op is Ops.RESHAPE:
        u = u.src[0]
    if len(u.shape) == 1 and u.shape[0] == x.numel():
        return Tensor(u)
    return x.reshape(x.numel()).contiguous()


def const(a: np.ndarray) -> Tensor:
    """A small constant table on the device (callers cache it: each call uploads)."""
    return Tensor(np.ascontiguousarray(a))


_consts: dict[bytes, Tensor] = {}


def cached_const(a: np.ndarray) -> Tensor:
    """const(a), uploaded once per distinct value (the tables depend only on sizes, so there are few)."""
    key = a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()
    if (t := _consts.get(key)) is None:
        t = _consts[key] = const(a)
    return t


@dataclass(frozen=True)
class Taps:
    """The transposed windows of an output: view[..., i, t] is the output element that tap t of position i reads
    (`value` where there is none). kernel_index[d] (size_d, T_d) says which kernel tap t is along dim d; None
    means every tap is there, in reversed order (t = K-1-k)."""

    view: Tensor
    kernel_index: list[Tensor] | None


@functools.cache
def _tap_tables(size: int, out: int, k: int, s: int, p: int, dl: int) -> tuple[Tensor, Tensor, np.ndarray]:
    """Along one dim: for each position i, the (output position, kernel tap) pairs with o * s - p + k * dl = i,
    packed left into (size, T) tables (ascending k), and their mask."""
    num = np.arange(size)[:, None] + p - np.arange(k)[None, :] * dl
    ok = (num % s == 0) & (num >= 0) & (num // s < out)
    order = np.argsort(~ok, axis=1, kind="stable")  # real taps first, each row in ascending k
    t = max(1, int(ok.sum(1).max()) if size else 1)
    taps = order[:, :t]
    outs = np.clip(np.take_along_axis(num // s, taps, 1), 0, max(out - 1, 0))
    return const(outs.astype(np.int32)), const(taps.astype(np.int32)), np.take_along_axis(ok, taps, 1)


@functools.cache
def _tap_plan(keys: tuple[tuple[int, ...], ...]) -> tuple[list[Tensor], list[Tensor], Tensor | None]:
    """Per-dim output and kernel tables for _tap_tables keys, and their combined (*size, *T) mask (None: all real)."""
    d = len(keys)
    tables = [_tap_tables(*k) for k in keys]
    mask = np.ones((), bool)
    for i, (_, _, m) in enumerate(tables):
        mask = mask & m.reshape([m.shape[0] if j == i else m.shape[1] if j == d + i else 1 for j in range(2 * d)])
    return [t[0] for t in tables], [t[1] for t in tables], None if mask.all() else const(mask)


def transposed_taps(y: Tensor, size: Ints, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints,
                    value: float | int = 0) -> Taps:
    """The transposed windows of y (*lead, *O) at input size `size` (see Taps)."""
    if all(s == 1 for s in stride):
        return Taps(transposed_windows(y, size, kernel, stride, padding, dilation, value), None)
    d = len(kernel)
    outs, taps, mask = _tap_plan(tuple(zip(size, y.shape[y.ndim - d:], kernel, stride, padding, dilation)))
    view = gather_windows(y, outs)
    return Taps(view if mask is None else mask.where(view, value), taps)
