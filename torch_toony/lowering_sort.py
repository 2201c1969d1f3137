"""Sorting on the device: sort, topk (argsort and msort are torch compositions of sort).

Each row is sorted by a bitonic network over a power-of-two width. An element is a key whose unsigned
integer order is torch's order (ascending or descending, NaN largest, -0.0 equal to 0.0) with its original
index as the last tie-break, so the network is deterministic and the result is stable, whatever `stable`
says (torch's CPU sort is stable too). Keys of types up to 32 bits pack the index into the low half of one
uint64, so a stage is one min/max kernel; 64-bit types carry (key, index) as two columns. Padding elements
get the largest key and index, so they sort last. Every stage is one kernel reading its partner through a
gather at `position ^ j`, with (j, k) read from a small buffer: all stages of a row width share one compiled
kernel rather than compiling log2(n)^2 / 2 variants.
"""

from __future__ import annotations

import numpy as np

from toony_core import Tensor, dtypes

from .lowering import lowers

_U64_MAX = (1 << 64) - 1
_stages: dict[tuple[int, int], Tensor] = {}


def _stage(j: int, k: int) -> tuple[Tensor, Tensor]:
    """(j, k) of one network stage as 0-d values read from a device buffer (made once, kept)."""
    t = _stages.get((j, k))
    if t is None:
        t = _stages[(j, k)] = Tensor(np.array([j, k], dtype=np.int64))
    return t.shrink(((0, 1),)).reshape(()), t.shrink(((1, 2),)).reshape(())


def bitonic(cols: list[Tensor]) -> list[Tensor]:
    """Sort the rows of (B, P) uint64 columns ascending, lexicographically over the columns (P a power of two).
    One column: a stage is min/max. Two columns: (key, tie-break), compared as a pair."""
    b, p = cols[0].shape
    pos = Tensor.arange(p).reshape(1, p)
    rows = Tensor.arange(b).reshape(b, 1) * p
    k = 2
    while k <= p:
        j = k // 2
        while j >= 1:
            jt, kt = _stage(j, k)
            partner = rows + (pos ^ jt)
            # in an ascending block the upper element of each pair keeps the larger value; descending: reversed
            want_max = ((pos & jt) != 0) != ((pos & kt) != 0)
            if len(cols) == 1:
                a = cols[0]
                q = a.reshape(b * p).take(partner)
                cols = [want_max.where(a.maximum(q), a.minimum(q)).contiguous()]
            else:
                hi, lo = cols
                phi, plo = hi.reshape(b * p).take(partner), lo.reshape(b * p).take(partner)
                less = (hi < phi) | ((hi == phi) & (lo < plo))
                keep = less != want_max
                cols = [keep.where(hi, phi).contiguous(), keep.where(lo, plo).contiguous()]
            j //= 2
        k *= 2
    return cols


def ordered_key(x: Tensor, descending: bool) -> tuple[Tensor, int]:
    """An unsigned integer per element whose order is torch's sort order, and its width in bits."""
    dt = x.dtype
    if dt.is_float:
        wide = dt == dtypes.float64
        f = x if wide else x.cast(dtypes.float32)
        width, udt = (64, dtypes.uint64) if wide else (32, dtypes.uint32)
        f = (f == 0).where(0.0, f)  # -0.0 sorts as 0.0 (equal, so by index)
        u = f.bitcast(udt)
        top = 1 << (width - 1)
        # IEEE order as unsigned: flip every bit of negatives, set the sign bit of positives
        u = ((u >> (width - 1)) != 0).where(~u, u | top)
        u = (f != f).where(Tensor.full((), (1 << width) - 1, udt), u)  # NaN above +inf
    elif dt in (dtypes.int8, dtypes.int16, dtypes.int32):
        width, u = 32, x.cast(dtypes.int32).bitcast(dtypes.uint32) ^ (1 << 31)
    elif dt == dtypes.int64:
        width, u = 64, x.bitcast(dtypes.uint64) ^ (1 << 63)
    elif dt == dtypes.uint64:
        width, u = 64, x
    else:  # bool, uint8, uint16, uint32
        width, u = 32, x.cast(dtypes.uint32)
    return (~u if descending else u), width


def sort_rows(x: Tensor, descending: bool) -> Tensor:
    """The int64 permutation that sorts each row of a (B, n) tensor (stable)."""
    b, n = x.shape
    key, width = ordered_key(x, descending)
    p = 1 << max(n - 1, 0).bit_length()
    idx = Tensor.arange(n, dtype=dtypes.uint64).reshape(1, n).expand(b, n)
    if width <= 32 and n <= (1 << 32):
        packed = (key.cast(dtypes.uint64) << 32) | idx
        (out,) = bitonic([packed.pad(((0, 0), (0, p - n)), _U64_MAX)])
        return (out & 0xFFFFFFFF).shrink(((0, b), (0, n))).cast(dtypes.int64)
    cols = [key.pad(((0, 0), (0, p - n)), _U64_MAX), idx.pad(((0, 0), (0, p - n)), _U64_MAX)]
    _, lo = bitonic(cols)
    return lo.shrink(((0, b), (0, n))).cast(dtypes.int64)


def sort_lazy(x: Tensor, dim: int, descending: bool) -> tuple[Tensor, Tensor]:
    """torch.sort(x, dim, descending, stable=True) on lazy values."""
    if x.ndim == 0:
        return x, Tensor.full((), 0, dtypes.int64)
    dim %= x.ndim
    n = x.shape[dim]
    if x.numel() == 0 or n == 1:
        return x, Tensor.zeros(x.shape, dtypes.int64)
    order = [d for d in range(x.ndim) if d != dim] + [dim]
    inverse = [order.index(d) for d in range(x.ndim)]
    xt = x.permute(order)
    moved = xt.shape
    b = x.numel() // n
    rows = xt.reshape(b, n)
    perm = sort_rows(rows, descending)
    values = rows.reshape(b * n).take(Tensor.arange(b).reshape(b, 1) * n + perm)
    return values.reshape(moved).permute(inverse), perm.reshape(moved).permute(inverse)


@lowers("sort.stable")
def sort_stable(x: Tensor, *, stable: bool | None = None, dim: int = -1, descending: bool = False) \
        -> tuple[Tensor, Tensor]:
    return sort_lazy(x, dim, descending)


@lowers("sort.default")
def sort(x: Tensor, dim: int = -1, descending: bool = False) -> tuple[Tensor, Tensor]:
    return sort_lazy(x, dim, descending)


@lowers("topk.default")
def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) \
        -> tuple[Tensor, Tensor]:
    values, indices = sort_lazy(x, dim, largest)
    if x.ndim == 0:
        return values, indices
    dim %= x.ndim
    bounds = tuple((0, k) if d == dim else (0, s) for d, s in enumerate(x.shape))
    return values.shrink(bounds), indices.shrink(bounds)

from . import lowering_linalg  # noqa: E402, F401
