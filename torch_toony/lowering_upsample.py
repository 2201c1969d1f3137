"""Lowerings for upsampling: nearest, nearest-exact, (bi/tri)linear (1d/2d/3d) and bicubic, and their backward.

Source positions and weights depend only on sizes and scales, so they are computed once on the host exactly as
torch's CPU kernels compute them (same float type and formula) and cached as small constant tables. The
forward pass gathers through them; the backward pass gathers too, through the inverted tables (for every
input position, the output positions that read it), so no scatter or atomic is needed. An integer nearest
upscale is pure movement (expand) and its backward a plain window sum.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch

from toony_core import Tensor, dtypes
from toony_core.dtype import bf16_bits_to_float32, float32_to_bf16_bits

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


# torch's CPU kernels are built per instruction set; every build but DEFAULT lets the compiler contract
# `scale * (dst + 0.5) - 0.5` into one fused multiply-add (a single rounding), which moves the source position
# by an ulp and the weights by ~1e-5 at some output positions: follow the build that is running
_FUSED = torch.backends.cpu.get_cpu_capability() != "DEFAULT"


def _mul_sub(a: np.floating, b: np.ndarray, c: np.floating, ft: type) -> np.ndarray:
    """a * b - c in ft, rounded once (fused multiply-add) where torch's kernels are built with FMA."""
    if not _FUSED:
        return (a * b - c).astype(ft)
    if ft is np.float32:  # a float32 product is exact in float64, and so is the sum here: one rounding
        return (np.float64(a) * b.astype(np.float64) - np.float64(c)).astype(np.float32)
    fa, fc = Fraction(float(a)), Fraction(float(c))
    return np.array([float(fa * Fraction(float(v)) - fc) for v in b], np.float64)


@functools.cache
def _linear_taps(size: int, out: int, align_corners: bool, scale: float | None, dtype: str) \
        -> tuple[np.ndarray, np.ndarray]:
    """For each output position: the two source positions (out, 2) and their weights (out, 2), as torch's
    compute_source_index_and_lambda computes them in opmath (float, or double for double inputs) and stores
    them: in the input's dtype (so half and bfloat16 weights are rounded to half and bfloat16)."""
    ft = np.float64 if dtype == "float64" else np.float32
    o = np.arange(out)
    if out == size:
        return np.stack([o, o], 1), np.stack([np.ones(out, ft), np.zeros(out, ft)], 1)
    if align_corners:
        ratio = ft(size - 1) / ft(out - 1) if out > 1 else ft(0)
        src = (ratio * o.astype(ft)).astype(ft)
    else:
        ratio = _scale(size, out, scale, ft)
        src = np.maximum(_mul_sub(ratio, o.astype(ft) + ft(0.5), ft(0.5), ft), ft(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    lam1 = np.minimum(np.maximum(src - i0.astype(ft), ft(0)), ft(1)).astype(ft)
    i1 = i0 + (i0 < size - 1)
    lam1 = _stored(lam1, dtype)  # lambda1 is stored first, and lambda0 = 1 - (the stored lambda1), stored
    return np.stack([i0, i1], 1), np.stack([_stored((ft(1) - lam1).astype(ft), dtype), lam1], 1)


def _stored(w: np.ndarray, dtype: str) -> np.ndarray:
    """Weights as torch keeps them for an input of this dtype (uint8 has its own fixed-point kernel)."""
    if dtype == "float16":
        return w.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return bf16_bits_to_float32(float32_to_bf16_bits(w.astype(np.float32)))
    return w


@functools.cache
def _cubic_taps(size: int, out: int, align_corners: bool, scale: float | None, dtype: str) \
        -> tuple[np.ndarray, np.ndarray]:
    """For each output position: four source positions (clamped into range) and their weights, as torch's
    compute_indices_weights_cubic computes them (Keys' cubic with A = -0.75, in opmath, stored in the dtype)."""
    ft = np.float64 if dtype == "float64" else np.float32
    o = np.arange(out)
    if align_corners:
        ratio = ft(size - 1) / ft(out - 1) if out > 1 else ft(0)
        src = (ratio * o.astype(ft)).astype(ft)
    else:  # no clamp at 0 for cubic
        src = _mul_sub(_scale(size, out, scale, ft), o.astype(ft) + ft(0.5), ft(0.5), ft)
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    t = np.minimum(np.maximum(src - i0.astype(ft), ft(0)), ft(1)).astype(ft)
    a = ft(-0.75)

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return (((a + ft(2)) * x - (a + ft(3))) * x * x + ft(1)).astype(ft)

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return (((a * x - ft(5) * a) * x + ft(8) * a) * x - ft(4) * a).astype(ft)

    u = (ft(1) - t).astype(ft)
    w = np.stack([far((t + ft(1)).astype(ft)), near(t), near(u), far((u + ft(1)).astype(ft))], 1)
    idx = np.clip(i0[:, None] + np.arange(4)[None, :] - 1, 0, size - 1)
    return idx, _stored(w, dtype)


@functools.cache
def _device_table(key: tuple, kind: str) -> Tensor:
    """The cached constant table `kind` for a table key (see _forward_tables / _inverse_tables)."""
    idx, w, mask = _inverse_tables(*key) if kind.startswith("inverse") else (*_forward_tables(*key), None)
    arr = {"index": idx, "weight": w, "inverse index": idx, "inverse weight": w, "inverse mask": mask}[kind]
    return const(arr.astype(np.int32) if arr.dtype.kind in "iu" else arr)


def _forward_tables(mode: str, size: int, out: int, align_corners: bool, scale: float | None, dtype: str) \
        -> tuple[np.ndarray, np.ndarray]:
    if mode == "linear":
        return _linear_taps(size, out, align_corners, scale, dtype)
    if mode == "cubic":
        return _cubic_taps(size, out, align_corners, scale, dtype)
    idx = _nearest_index(size, out, scale, mode == "nearest-exact")[:, None]
    return idx, np.ones(idx.shape, np.float64 if dtype == "float64" else np.float32)


@functools.cache
def _inverse_tables(mode: str, size: int, out: int, align_corners: bool, scale: float | None, dtype: str) \
        -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each source position: the (output position, weight) pairs that read it, in torch's accumulation
    order (output position, then tap), as (size, K) tables and a (size, K) mask of real pairs."""
    idx, w = _forward_tables(mode, size, out, align_corners, scale, dtype)
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
    if not mode.startswith("nearest") or size == 0 or out % size:
        return None
    k = out // size
    return k if np.array_equal(_forward_tables(mode, size, out, False, scale, "float32")[0][:, 0],
                               np.arange(out) // k) else None


def _along(t: Tensor, i: int, first: int, d: int, ndim: int, taps: bool) -> Tensor:
    """A per-dim table (O, K) placed on axis first + i (and its K on first + d + i; without taps, K must be 1)
    of an ndim-dim tensor."""
    shape = [1] * ndim
    shape[first + i] = t.shape[0]
    if taps:
        shape[first + d + i] = t.shape[1]
    return t.reshape(shape)


def _upsample(x: Tensor, mode: str, d: int, output_size: Ints, align_corners: bool, scales: Scales) -> Tensor:
    lead, size, out = x.shape[:x.ndim - d], x.shape[x.ndim - d:], tuple(output_size)
    if (z := zeros_if_empty((*lead, *out), x.dtype, x)) is not None:
        return z
    scales = (*scales, *((None,) * (d - len(scales))))
    ks = [_integer_upscale(mode, s, o, sc) for s, o, sc in zip(size, out, scales)]
    if all(k is not None for k in ks):  # every source element repeated k times: a broadcast
        y = x.reshape(*lead, *(v for s in size for v in (s, 1)))
        return y.expand(*lead, *(v for s, k in zip(size, ks) for v in (s, k))).reshape(*lead, *out)
    # torch has two bilinear kernels: for small outputs (height + width <= 128; also for channels-last inputs with
    # more than 3 channels, which a lowering cannot see) one that keeps its weights in float and sums the four
    # corner products; otherwise, and for 1d/3d, one that stores the weights in the input's dtype and
    # interpolates one dim at a time. Following the same one keeps half and bfloat16 results within an ulp.
    corners = mode == "linear" and d == 2 and out[0] + out[1] <= 128
    wdt = ("float64" if x.dtype == dtypes.float64 else "float32") if corners else x.dtype.name
    keys = [(mode, s, o, align_corners, sc, wdt) for s, o, sc in zip(size, out, scales)]
    vals = gather_windows(x, [_device_table(k, "index") for k in keys])  # (*lead, *out, *taps)
    if mode.startswith("nearest"):
        return vals.reshape(*lead, *out)
    acc = acc_dtype(x.dtype) if x.dtype.is_float else dtypes.float32
    vals = vals.cast(acc)
    n = len(lead)
    # the taps are picked with shrinks, so everything stays elementwise (no reduction): one kernel of gathers

    def tap(t: Tensor, ax: int, j: int) -> Tensor:
        return t.shrink([(j, j + 1) if a == ax else (0, m) for a, m in enumerate(t.shape)])

    taps = vals.shape[n + d]
    weights = [[_along(tap(_device_table(k, "weight").cast(acc), 1, j), i, n, d, vals.ndim, False)
                for j in range(taps)] for i, k in enumerate(keys)]
    if corners:  # w00 * x00 + w01 * x01 + w10 * x10 + w11 * x11, w_ab = wh_a * ww_b
        total: Tensor | None = None
        for a, b in ((0, 0), (0, 1), (1, 0), (1, 1)):
            term = (weights[0][a] * weights[1][b]) * tap(tap(vals, n + d, a), n + d + 1, b)
            total = term if total is None else total + term
        assert total is not None
        vals = total
    else:  # nested, the last dim first: t0 * w0 + t1 * w1 (+ t2 * w2 + t3 * w3 for cubic) at each level
        for i in reversed(range(d)):
            level = tap(vals, n + d + i, 0) * weights[i][0]
            for j in range(1, taps):
                level = level + tap(vals, n + d + i, j) * weights[i][j]
            vals = level
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
    # the backward kernel uses its weights unrounded, in opmath (float, or double)
    wdt = "float64" if go.dtype == dtypes.float64 else "float32"
    keys = [(mode, s, o, align_corners, sc, wdt) for s, o, sc in zip(size, out, scales)]
    vals = gather_windows(go, [_device_table(k, "inverse index") for k in keys]).cast(acc)  # (*lead, *size, *K)
    n = len(lead)
    weight: Tensor | None = None
    mask: Tensor | None = None
    for i, k in enumerate(keys):
        m = _along(_device_table(k, "inverse mask"), i, n, d, vals.ndim, True)
        mask = m if mask is None else mask & m
        if not mode.startswith("nearest"):
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
_register("cubic", "upsample_bicubic2d", 2, True)
from . import lowering_fft, lowering_nn_extra  # noqa: E402, F401
