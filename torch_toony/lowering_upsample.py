"""Lowerings for upsampling: nearest, nearest-exact and (bi/tri)linear, 1d/2d/3d, and their backward.

Source positions and weights depend only on sizes and scales, so they are computed once on the host exactly as
torch's CPU kernels compute them (same float type and formula) and cached as small constant tables. The
forward pass gathers through them; the backward pass gathers too, through the inverted tables (for every
input position, the output positions that read it), so no scatter or atomic is needed. An integer nearest
upscale is pure movement (expand) and its backward a plain window sum.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from toony_core import Tensor, dtypes

from .lowering import lowers
from .windows import Ints, acc_dtype, const, gather_windows, zeros_if_empty

Scales = Sequence[float | None]


def _scale(size: int, out: int, scale: float | None, ftype: type) -> np.floating:
    """torch's compute_scales_value: 1 / scale when one was given, else size / out, in ftype."""
    if scale is not None and scale > 0:
        return ftype(1.0 / scale)
    return ftype(size) / ftype(out)


@functools.cache
def _nearest_index(size: int, out: int, scale: float | None, exact: bool) -> np.ndarray:
    """The source position of each output position (torch's nearest_idx / nearest_exact_idx)."""
    o = np.arange(out)
    if not exact and out == size:
        return o
    if not exact and out == 2 * size:
        return o >> 1
    s = _scale(size, out, scale, np.float32)
    if exact:  # floorf((dst + 0.5) * scale): the product is taken in double, then rounded to float
        src = np.floor(((o + 0.5) * np.float64(s)).astype(np.float32))
    else:  # floorf(dst * scale) in float
        src = np.floor(o.astype(np.float32) * s)
    return np.minimum(src.astype(np.int64), size - 1)


@functools.cache
def _linear_taps(size: int, out: int, align_corners: bool, scale: float | None, double: bool) \
        -> tuple[np.ndarray, np.ndarray]:
    """For each output position: the two source positions (out, 2) and their weights (out, 2), as torch's
    compute_source_index_and_lambda computes them in opmath (float, or double for double inputs)."""
    ft = np.float64 if double else np.float32
    o = np.arange(out)
    if out == size:
        return np.stack([o, o], 1), np.stack([np.ones(out, ft), np.zeros(out, ft)], 1)
    if align_corners:
        ratio = ft(size - 1) / ft(out - 1) if out > 1 else ft(0)
        src = (ratio * o.astype(ft)).astype(ft)
    else:
        ratio = _scale(size, out, scale, ft)
        src = (ratio * (o.astype(ft) + ft(0.5)) - ft(0.5)).astype(ft)
        src = np.maximum(src, ft(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    lam1 = np.minimum(np.maximum(src - i0.astype(ft), ft(0)), ft(1)).astype(ft)
    i1 = i0 + (i0 < size - 1)
    return np.stack([i0, i1], 1), np.stack([ft(1) - lam1, lam1], 1)


@functools.cache
def _device_table(key: tuple, kind: str) -> Tensor:
    """The cached constant table `kind` for a table key (see _forward_tables / _inverse_tables)."""
    idx, w, mask = _inverse_tables(*key) if kind.startswith("inverse") else (*_forward_tables(*key), None)
    arr = {"index": idx, "weight": w, "inverse index": idx, "inverse weight": w, "inverse mask": mask}[kind]
    return const(arr.astype(np.int32) if arr.dtype.kind in "iu" else arr)


def _forward_tables(mode: str, size: int, out: int, align_corners: bool, scale: float | None, double: bool) \
        -> tuple[np.ndarray, np.ndarray]:
    if mode == "linear":
        return _linear_taps(size, out, align_corners, scale, double)
    idx = _nearest_index(size, out, scale, mode == "nearest-exact")[:, None]
    return idx, np.ones(idx.shape, np.float64 if double else np.float32)


@functools.cache
def _inverse_tables(mode: str, size: int, out: int, align_corners: bool, scale: float | None, double: bool) \
        -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each source position: the (output position, weight) pairs that read it, in torch's accumulation
    order (output position, then tap), as (size, K) tables and a (size, K) mask of real pairs."""
    idx, w = _forward_tables(mode, size, out, align_corners, scale, double)
    pairs: list[list[tuple[int, float]]] = [[] for _ in range(size)]
    for o in range(out):
        for a in range(idx.shape[1]):
            pairs[idx[o, a]].append((o, w[o, a]))
    k = max(1, max(len(p) for p in pairs))
    iidx = np.zeros((size, k), np.int64)
    iw = np.zeros((size, k), w.dtype)
    mask = np.zeros((size, k), bool)
    for i, p in enumerate(pairs):
        for j, (o, wt) in enumerate(p):
            iidx[i, j], iw[i, j], mask[i, j] = o, wt, True
    return iidx, iw, mask


def _integer_upscale(mode: str, size: int, out: int, scale: float | None) -> int | None:
    """k when nearest upsampling repeats every source position exactly k times in order (pure movement)."""
    if mode == "linear" or size == 0 or out % size:
        return None
    k = out // size
    return k if np.array_equal(_forward_tables(mode, size, out, False, scale, False)[0][:, 0],
                               np.arange(out) // k) else None


def _along(t: Tensor, i: int, first: int, d: int, ndim: int, taps: bool) -> Tensor:
    """A per-dim table (O, K) placed on axis first + i (and first + d + i for K) of an ndim-dim tensor."""
    shape = [1] * ndim
    shape[first + i] = t.shape[0]
    if taps:
        shape[first + d + i] = t.shape[1]
    return t.reshape(shape) if taps else t.shrink(((0, t.shape[0]), (0, 1))).reshape(shape)


def _upsample(x: Tensor, mode: str, d: int, output_size: Ints, align_corners: bool, scales: Scales) -> Tensor:
    lead, size, out = x.shape[:x.ndim - d], x.shape[x.ndim - d:], tuple(output_size)
    if (z := zeros_if_empty((*lead, *out), x.dtype, x)) is not None:
        return z
    scales = (*scales, *((None,) * (d - len(scales))))
    ks = [_integer_upscale(mode, s, o, sc) for s, o, sc in zip(size, out, scales)]
    if all(k is not None for k in ks):  # every source element repeated k times: a broadcast
        y = x.reshape(*lead, *(v for s in size for v in (s, 1)))
        return y.expand(*lead, *(v for s, k in zip(size, ks) for v in (s, k))).reshape(*lead, *out)
    double = x.dtype == dtypes.float64
    keys = [(mode, s, o, align_corners, sc, double) for s, o, sc in zip(size, out, scales)]
    vals = gather_windows(x, [_device_table(k, "index") for k in keys])  # (*lead, *out, *taps)
    if mode != "linear":
        return vals.reshape(*lead, *out)
    acc = acc_dtype(x.dtype) if x.dtype.is_float else dtypes.float32
    vals = vals.cast(acc)
    n = len(lead)
    # torch's nested interpolation: the last dim first, t0 * w0 + t1 * w1 at each level; shrinks keep it
    # elementwise (no reduction), so the whole upsample is one kernel of gathers
    for i in reversed(range(d)):
        w = _device_table(keys[i], "weight").cast(acc)
        ax = n + d + i
        taps = [vals.shrink([(j, j + 1) if a == ax else (0, s) for a, s in enumerate(vals.shape)]) for j in (0, 1)]
        w0 = _along(w, i, n, d, vals.ndim, False)
        w1 = _along(w.shrink(((0, w.shape[0]), (1, 2))), i, n, d, vals.ndim, False)
        vals = taps[0] * w0 + taps[1] * w1
    if not x.dtype.is_float:  # uint8 (the one integer dtype torch interpolates) rounds to nearest
        vals = (vals + 0.5).floor().clip(0, 255)
    return vals.cast(x.dtype).reshape(*lead, *out)


def _upsample_backward(go: Tensor, mode: str, d: int, output_size: Ints, input_size: Ints, align_corners: bool,
                       scales: Scales) -> Tensor:
    size, out = tuple(input_size[len(input_size) - d:]), tuple(output_size)
    lead = go.shape[:go.ndim - d]
    if (z := zeros_if_empty((*lead, *size), go.dtype, go)) is not None:
        return z
    acc = acc_dtype(go.dtype)
    scales = (*scales, *((None,) * (d - len(scales))))
    ks = [_integer_upscale(mode, s, o, sc) for s, o, sc in zip(size, out, scales)]
    if all(k is not None for k in ks):  # the adjoint of a broadcast: sum each run of k
        g = go.cast(acc).reshape(*lead, *(v for s, k in zip(size, ks) for v in (s, k)))
        axes = tuple(len(lead) + 2 * i + 1 for i in range(d))
        return g.sum(axes, True, acc).cast(go.dtype).reshape(*lead, *size)
    double = go.dtype == dtypes.float64
    keys = [(mode, s, o, align_corners, sc, double) for s, o, sc in zip(size, out, scales)]
    vals = gather_windows(go, [_device_table(k, "inverse index") for k in keys]).cast(acc)  # (*lead, *size, *K)
    n = len(lead)
    weight: Tensor | None = None
    mask: Tensor | None = None
    for i, k in enumerate(keys):
        m = _along(_device_table(k, "inverse mask"), i, n, d, vals.ndim, True)
        mask = m if mask is None else mask & m
        if mode == "linear":
            w = _along(_device_table(k, "inverse weight").cast(acc), i, n, d, vals.ndim, True)
            weight = w if weight is None else weight * w
    assert mask is not None
    terms = mask.where(vals if weight is None else weight * vals, 0)
    return terms.sum(tuple(range(vals.ndim - d, vals.ndim)), True, acc).cast(go.dtype).reshape(*lead, *size)


def _register(mode: str, name: str, d: int, linear: bool) -> None:
    if linear:
        def fwd(x: Tensor, output_size: Ints, align_corners: bool, *scales: float | None) -> Tensor:
            return _upsample(x, mode, d, output_size, align_corners, scales)

        def bwd(go: Tensor, output_size: Ints, input_size: Ints, align_corners: bool, *scales: float | None) \
                -> Tensor:
            return _upsample_backward(go, mode, d, output_size, input_size, align_corners, scales)
    else:
        def fwd(x: Tensor, output_size: Ints, *scales: float | None) -> Tensor:  # type: ignore[misc]
            return _upsample(x, mode, d, output_size, False, scales)

        def bwd(go: Tensor, output_size: Ints, input_size: Ints, *scales: float | None) -> Tensor:  # type: ignore[misc]
            return _upsample_backward(go, mode, d, output_size, input_size, False, scales)
    lowers(f"{name}.default")(fwd)
    lowers(f"{name}_backward.default")(bwd)


for _d, _suffix in ((1, "1d"), (2, "2d"), (3, "3d")):
    _register("nearest", f"upsample_nearest{_suffix}", _d, False)
    _register("nearest-exact", f"_upsample_nearest_exact{_suffix}", _d, False)
_register("linear", "upsample_linear1d", 1, True)
_register("linear", "upsample_bilinear2d", 2, True)
_register("linear", "upsample_trilinear3d", 3, True)
