"""Order statistics and searches on the device, built on the sort network: kthvalue, median, mode,
searchsorted, unique, and the flat-index ops take/put.

Order statistics sort each row once (lowering_sort's stable bitonic network, NaN largest) and pick a
position: kthvalue k-1; median the middle of the non-NaN elements, or the first NaN (torch's median
propagates NaN, nanmedian skips it); mode the leftmost run of the greatest length. Because the sort is
stable, a tie picks the element the CPU's nth_element with an index tie-break picks (median); kthvalue and
mode on the CPU use unstable selections whose tie choice is not specified, so there only the values are
guaranteed to match.

searchsorted/bucketize run the CPU's binary search itself, vectorized: bit_length(n) steps of a gather and a
compare over (start, end) pairs, each one small kernel. Replaying the same probe sequence gives the CPU's
answer even where the predicate is not monotone (NaN in the boundaries), at any boundary size.

put/masked_scatter/nonzero_static are scatters and gathers at positions a scan computes. The unique family
has a data-dependent output length: like masks.py it is eager only and reads one count back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch._prims_common import canonicalize_dim

from toony_core import Tensor, dtypes
from toony_core.helpers import strides_for
from toony_core.tensor import _broadcast_shape

from . import extra_kernels
from .dtypes import TO_TORCH, to_toony
from .lowering import _scan, cumsum, lowers
from .lowering_sort import sort_rows

# ---------------------------------------------------------------- rows along a dim


def _rows(x: Tensor, dim: int) -> tuple[Tensor, tuple[int, ...]]:
    """x with dim moved last and flattened to (B, n) rows, and the shape of the other dims (in order)."""
    dim %= x.ndim
    order = [d for d in range(x.ndim) if d != dim] + [dim]
    lead = tuple(x.shape[d] for d in order[:-1])
    return x.permute(order).reshape(math.prod(lead), x.shape[dim]), lead


def _pick(rows: Tensor, perm: Tensor, pos: Tensor | int) -> tuple[Tensor, Tensor]:
    """(value, original index) at sorted position pos of each row; perm is the rows' sorting permutation."""
    b, n = rows.shape
    at = Tensor.arange(b) * n + pos
    idx = perm.reshape(b * n).take(at)
    return rows.reshape(b * n).take(Tensor.arange(b) * n + idx), idx


def _reduced(x: Tensor, dim: int, keepdim: bool, lead: tuple[int, ...], v: Tensor, i: Tensor) \
        -> tuple[Tensor, Tensor]:
    """Per-row results shaped as torch returns a reduction over dim."""
    shape = list(lead)
    if keepdim:
        shape.insert(dim % x.ndim, 1)
    return v.reshape(tuple(shape)), i.reshape(tuple(shape))


def _select(x: Tensor, dim: int, keepdim: bool, choose: str, k: int = 0) -> tuple[Tensor, Tensor]:
    """Value and index of one order statistic along dim: choose is kth, median or nanmedian."""
    if x.ndim == 0:
        return x, Tensor.full((), 0, dtypes.int64)
    rows, lead = _rows(x, dim)
    b, n = rows.shape
    if b == 0:
        return _reduced(x, dim, keepdim, lead, Tensor.zeros((0,), x.dtype), Tensor.zeros((0,), dtypes.int64))
    perm = sort_rows(rows, False)
    if choose == "kth":
        pos: Tensor | int = k - 1
    elif not x.dtype.is_float:
        pos = (n - 1) // 2
    else:
        nans = (rows != rows).cast(dtypes.int64).sum(1)
        if choose == "median":  # NaNs sort last, stably: the first NaN sits right after the numbers
            pos = (nans > 0).where(n - nans, (n - 1) // 2)
        else:  # the middle of the numbers; all NaN: position 0, the first NaN (as the CPU's (0 - 1) / 2 == 0)
            pos = (n - nans - 1).maximum(0) // 2
    v, i = _pick(rows, perm, pos)
    return _reduced(x, dim, keepdim, lead, v, i)


@lowers("kthvalue.default")
def kthvalue(x: Tensor, k: int, dim: int = -1, keepdim: bool = False) -> tuple[Tensor, Tensor]:
    return _select(x, dim, keepdim, "kth", k)


@lowers("median.dim")
def median_dim(x: Tensor, dim: int, keepdim: bool = False) -> tuple[Tensor, Tensor]:
    return _select(x, dim, keepdim, "median")


@lowers("nanmedian.dim")
def nanmedian_dim(x: Tensor, dim: int, keepdim: bool = False) -> tuple[Tensor, Tensor]:
    return _select(x, dim, keepdim, "nanmedian")


def _median_all(x: Tensor, choose: str) -> Tensor:
    if x.numel() == 0:  # torch: the median of nothing is NaN
        return Tensor.full((), math.nan, x.dtype)
    v, _ = _select(x.reshape(x.numel()), 0, False, choose)
    return v


@lowers("median.default")
def median(x: Tensor) -> Tensor:
    return _median_all(x, "median")


@lowers("nanmedian.default")
def nanmedian(x: Tensor) -> Tensor:
    return _median_all(x, "nanmedian")


@lowers("mode.default")
def mode(x: Tensor, dim: int = -1, keepdim: bool = False) -> tuple[Tensor, Tensor]:
    """The most frequent value along dim (the smallest of equally frequent ones, as the CPU's scan of its
    sorted row keeps the first run of the greatest length) and the index of its last occurrence (the end of
    the run in a stable sort; the CPU's unstable sort may pick another equal element)."""
    if x.ndim == 0:
        return x, Tensor.full((), 0, dtypes.int64)
    rows, lead = _rows(x, dim)
    b, n = rows.shape
    if b == 0 or n == 0:
        return _reduced(x, dim, keepdim, lead, Tensor.zeros((0,), x.dtype), Tensor.zeros((0,), dtypes.int64))
    perm = sort_rows(rows, False)
    flat_rows = Tensor.arange(b).reshape(b, 1) * n
    s = rows.reshape(b * n).take(flat_rows + perm).contiguous()
    # runs of equal values; != keeps NaNs apart as the CPU's comparison does
    differs = s.shrink(((0, b), (1, n))) != s.shrink(((0, b), (0, n - 1)))
    starts = differs.pad(((0, 0), (1, 0)), True)
    ends = differs.pad(((0, 0), (0, 1)), True)
    col = Tensor.arange(n).reshape(1, n)._broadcast_to((b, n))
    run_start = _scan(starts.where(col, 0), 1, lambda a, c: a.maximum(c), 0)
    freq = ends.where(col - run_start + 1, 0)
    best = (freq == freq.max(1, keepdim=True)) & ends
    pos = best.where(col, n).min(1)
    v, i = _pick(rows, perm, pos)
    return _reduced(x, dim, keepdim, lead, v, i)


# ---------------------------------------------------------------- binary search


def _common(boundaries: Tensor, value: Tensor | bool | int | float) -> dtypes.DType:
    """The dtype both sides are compared in: torch promotes them (a 0-d tensor or a Scalar weighs less)."""
    def proxy(t: Tensor) -> torch.Tensor:
        return torch.empty((0,) * t.ndim if t.ndim else (), dtype=TO_TORCH[t.dtype], device="meta")
    other = proxy(value) if isinstance(value, Tensor) else value
    return to_toony(torch.result_type(proxy(boundaries), other), "searchsorted")


def search(boundaries: Tensor, values: Tensor, right: bool, sorter: Tensor | None = None) -> Tensor:
    """torch.searchsorted's int64 result: the CPU's binary search per value, all values stepping together.
    boundaries is 1-D (every value searches it) or (..., n) with values (..., m) searching their own row."""
    n = boundaries.shape[-1]
    if values.numel() == 0 or n == 0:
        return Tensor.zeros(values.shape, dtypes.int64)
    if boundaries.ndim == 1:
        v, offset = values, 0
    else:
        r = boundaries.numel() // n
        v = values.reshape(r, values.shape[-1])
        offset = Tensor.arange(r).reshape(r, 1) * n
    bd = boundaries.reshape(boundaries.numel())
    order = None if sorter is None else sorter.cast(dtypes.int64).reshape(sorter.numel())
    start = Tensor.zeros(v.shape, dtypes.int64)
    end = Tensor.full(v.shape, n, dtypes.int64)
    for _ in range(n.bit_length()):  # each step halves end - start, which starts at n
        live = start < end
        mid = start + (end - start) // 2
        probe = mid if order is None else order.take(offset + mid)
        got = bd.take(offset + probe)
        # the CPU's tests, NaN included: lower bound moves right while !(b >= v), upper while !(b > v)
        go_right = ((got > v) if right else (got >= v)).logical_not()
        start = (live & go_right).where(mid + 1, start).contiguous()
        end = (live & go_right.logical_not()).where(mid, end).contiguous()
    return start.reshape(values.shape)


def _searchsorted(seq: Tensor, value: Tensor | bool | int | float, right: bool, side: str | None,
                  sorter: Tensor | None) -> Tensor:
    dt = _common(seq, value)
    v = value.cast(dt) if isinstance(value, Tensor) else Tensor.full((), value, dt)
    return search(seq.cast(dt), v, right or side == "right", sorter)


@lowers("searchsorted.Tensor")
def searchsorted(seq: Tensor, value: Tensor, *, out_int32: bool = False, right: bool = False,
                 side: str | None = None, sorter: Tensor | None = None) -> Tensor:
    return _searchsorted(seq, value, right, side, sorter)


@lowers("searchsorted.Scalar")
def searchsorted_scalar(seq: Tensor, value: bool | int | float, *, out_int32: bool = False, right: bool = False,
                        side: str | None = None, sorter: Tensor | None = None) -> Tensor:
    return _searchsorted(seq, value, right, side, sorter)


@lowers("bucketize.Tensor", "bucketize.Scalar")
def bucketize(value: Tensor | bool | int | float, boundaries: Tensor, *, out_int32: bool = False,
              right: bool = False) -> Tensor:
    return _searchsorted(boundaries, value, right, None, None)


# ---------------------------------------------------------------- flat indices and masks


@lowers("take.default")
def take(x: Tensor, index: Tensor) -> Tensor:
    if index.numel() == 0 or x.numel() == 0:
        return Tensor.zeros(index.shape, x.dtype)
    return x.reshape(x.numel()).take(index)


@lowers("put.default")
def put(x: Tensor, index: Tensor, source: Tensor, accumulate: bool = False) -> Tensor:
    m, n = index.numel(), x.numel()
    if m == 0 or n == 0:
        return x
    flat = x.reshape(n)
    idx = index.cast(dtypes.int64).reshape(m)
    idx = (idx < 0).where(idx + n, idx)
    src = source.cast(x.dtype).reshape(m)
    if accumulate:
        if x.dtype == dtypes.bool:  # a bool sum saturates at True: count the True sources per position
            hits = Tensor.zeros((n,), dtypes.int32).scatter_flat(idx, src.cast(dtypes.int32), "add")
            return (flat | (hits > 0)).reshape(x.shape)
        return flat.scatter_flat(idx, src, "add").reshape(x.shape)
    if m > 1:
        # the CPU writes in order, so the last write to a position wins: sort the indices (stably) and let
        # only the last of each run of equal ones write; the others go to a spare slot that is cut off
        perm = sort_rows(idx.reshape(1, m), False).reshape(m)
        sidx = idx.take(perm).contiguous()
        last = (sidx.shrink(((0, m - 1),)) != sidx.shrink(((1, m),))).pad(((0, 1),), True)
        idx, src = last.where(sidx, n), src.take(perm)
        return flat.pad(((0, 1),)).scatter_flat(idx, src).shrink(((0, n),)).reshape(x.shape)
    return flat.scatter_flat(idx, src).reshape(x.shape)


@lowers("masked_scatter.default")
def masked_scatter(x: Tensor, mask: Tensor, source: Tensor) -> Tensor:
    """Each true mask position (in row-major order) takes the next source element: its rank among the true
    positions, a cumulative sum of the mask, is its source index."""
    shape = _broadcast_shape(x.shape, mask.shape)
    xb = x._broadcast_to(shape)
    n, k = math.prod(shape), source.numel()
    if n == 0 or k == 0:  # nothing to take (the CPU raises if the mask has a true element, unknowable here)
        return xb
    m = mask._broadcast_to(shape).reshape(n)
    rank = cumsum(m.cast(dtypes.int64), 0) - 1
    taken = source.cast(x.dtype).reshape(k).take(rank.clip(0, k - 1))
    return m.where(taken, xb.reshape(n)).reshape(shape)


@lowers("nonzero_static.default")
def nonzero_static(x: Tensor, *, size: int, fill_value: int = -1) -> Tensor:
    """nonzero's first `size` rows, padded with fill_value: each true element's rank is its row, the elements
    past `size` (and the false ones) go to a spare row that is cut off."""
    d, n = x.ndim, x.numel()
    if d == 0 or size == 0:
        if d == 0 and size:
            return Tensor.zeros((size, 0), dtypes.int64)
        return Tensor.zeros((0, d), dtypes.int64)
    if n == 0:
        return Tensor.full((size, d), fill_value, dtypes.int64)
    hit = (x != 0).reshape(n)
    rank = cumsum(hit.cast(dtypes.int64), 0) - 1
    row = (hit & (rank < size)).where(rank, size).reshape(n, 1)
    flat = Tensor.arange(n).reshape(n, 1)
    coords = [(flat // st) % sz for sz, st in zip(x.shape, strides_for(x.shape))]
    values = coords[0] if d == 1 else _stack_cols(coords)
    target = row * d + Tensor.arange(d).reshape(1, d)
    out = Tensor.full(((size + 1) * d,), fill_value, dtypes.int64).scatter_flat(target, values)
    return out.shrink(((0, size * d),)).reshape(size, d)


def _stack_cols(cols: Sequence[Tensor]) -> Tensor:
    """(n, 1) columns side by side as (n, len(cols))."""
    k = len(cols)
    out = cols[0].pad(((0, 0), (0, k - 1)))
    for j, c in enumerate(cols[1:], 1):
        out = out + c.pad(((0, 0), (j, k - 1 - j)))
    return out


# ---------------------------------------------------------------- unique (eager only: data-dependent length)


def _groups(starts: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """For a 1-D bool tensor marking where each group of equal neighbours begins (starts[0] is True): each
    element's group id, the number of groups (the one value read back), and each group's first position and
    its length."""
    n = starts.numel()
    group = torch.cumsum(starts, 0) - 1
    count = int(group[-1].item()) + 1
    # each group's first element writes its position; the others go to a spare slot that is cut off
    first = torch.zeros(count + 1, dtype=torch.long, device=starts.device)
    first.index_put_((torch.where(starts, group, count),), torch.arange(n, device=starts.device))
    first = first[:count]
    ends = torch.cat([first[1:], torch.full((1,), n, dtype=torch.long, device=starts.device)])
    return group, count, first, ends - first


def _changes(rows: torch.Tensor) -> torch.Tensor:
    """True where a row (of a 1-D or 2-D tensor) differs from the previous one; the first row is a change.
    != keeps NaNs apart, as torch's unique does."""
    head = torch.ones(1, dtype=torch.bool, device=rows.device)
    diff = rows[1:] != rows[:-1]
    return torch.cat([head, diff if rows.dim() == 1 else diff.any(1)])


def _empty_long(x: torch.Tensor, shape: Sequence[int] = (0,)) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=torch.long, device=x.device)


def _check_dtype(x: torch.Tensor, op: str) -> None:
    to_toony(x.dtype, op)  # complex and other dtypes without kernels: a clear error, not a half-done result


def unique2(x: torch.Tensor, sorted: bool = True, return_inverse: bool = False,  # noqa: A002 - torch's name
            return_counts: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.unique without dim: always sorted (the CPU sorts whatever `sorted` says)."""
    _check_dtype(x, "unique")
    n = x.numel()
    inv_shape = x.shape if return_inverse else (0,)
    if n == 0:
        return x.reshape(0), _empty_long(x, inv_shape), _empty_long(x)
    values, perm = torch.sort(x.reshape(n), stable=True)
    group, _, first, counts = _groups(_changes(values))
    inverse = _empty_long(x, inv_shape)
    if return_inverse:
        inverse = torch.empty(n, dtype=torch.long, device=x.device)
        inverse.index_put_((perm,), group)
        inverse = inverse.reshape(x.shape)
    return values[first], inverse, counts if return_counts else _empty_long(x)


def _rows_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The slices of x along dim as the rows of a 2-D tensor."""
    return x.movedim(dim, 0).reshape(x.shape[dim], -1)


def _from_rows(rows: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    moved = x.movedim(dim, 0).shape
    return rows.reshape(rows.shape[0], *moved[1:]).movedim(0, dim).contiguous()


def unique_consecutive(x: torch.Tensor, return_inverse: bool = False, return_counts: bool = False,
                       dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_dtype(x, "unique_consecutive")
    if dim is None:
        n = x.numel()
        inv_shape = x.shape if return_inverse else (0,)
        if n == 0:
            return x.reshape(0), _empty_long(x, inv_shape), _empty_long(x)
        flat = x.reshape(n)
        group, _, first, counts = _groups(_changes(flat))
        inverse = group.reshape(x.shape) if return_inverse else _empty_long(x)
        return flat[first], inverse, counts if return_counts else _empty_long(x)
    dim = canonicalize_dim(x.dim(), dim)
    return _unique_rows(x, dim, False, return_inverse, return_counts)


def _unique_rows(x: torch.Tensor, dim: int, sort: bool, return_inverse: bool, return_counts: bool) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique slices along dim: sorted lexicographically first (unique_dim) or as they come (consecutive)."""
    n = x.shape[dim]
    if n == 0:
        return x.clone(), _empty_long(x), _empty_long(x)
    rows = _rows_along(x, dim)
    perm = torch.arange(n, device=x.device)
    if sort and rows.shape[1]:
        # lexicographic order by stable sorts from the last column to the first (least significant first)
        for c in reversed(range(rows.shape[1])):
            _, p = torch.sort(rows[:, c][perm], stable=True)
            perm = perm[p]
        rows = rows[perm]
    group, _, first, counts = _groups(_changes(rows))
    inverse = group
    if sort:
        inverse = torch.empty(n, dtype=torch.long, device=x.device)
        inverse.index_put_((perm,), group)
    return _from_rows(rows[first], x, dim), inverse, counts


def unique_dim(x: torch.Tensor, dim: int, sorted: bool = True, return_inverse: bool = False,  # noqa: A002
               return_counts: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique slices along dim; the CPU always sorts them and always returns inverse and counts."""
    _check_dtype(x, "unique_dim")
    dim = canonicalize_dim(x.dim(), dim)
    if x.numel() == 0 and x.shape[dim] != 0:
        raise RuntimeError("There are 0 sized dimensions, and they aren't selected, so unique cannot be applied")
    return _unique_rows(x, dim, True, return_inverse, return_counts)


def _outs(fn: object) -> object:
    """The out= form of a three-output unique kernel: compute, then resize and copy into out0..out2."""
    def kernel(*args: object, out0: torch.Tensor, out1: torch.Tensor, out2: torch.Tensor, **kwargs: object) \
            -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        res = fn(*args, **kwargs)  # type: ignore[operator]
        for out, r in zip((out0, out1, out2), res):
            out.resize_(r.shape)
            out.copy_(r)
        return out0, out1, out2
    return kernel


def repeat_interleave(repeats: torch.Tensor, *, output_size: int | None = None) -> torch.Tensor:
    """Each index i repeated repeats[i] times: output position p holds the number of running totals of repeats
    at or below p (a binary search per position). The total is read back once unless output_size gives it."""
    if repeats.dim() != 1:
        raise RuntimeError("repeat_interleave only accept 1D vector as repeat")
    if repeats.dtype not in (torch.int32, torch.int64):
        raise RuntimeError(f"repeats has to be Long or Int tensor, got {repeats.dtype}")
    if repeats.numel() == 0:
        return _empty_long(repeats).to(repeats.dtype)
    if bool((repeats < 0).any().item()):
        raise RuntimeError("repeats can not be negative")
    ends = torch.cumsum(repeats, 0)
    total = int(ends[-1].item()) if output_size is None else output_size
    positions = torch.arange(total, device=repeats.device, dtype=repeats.dtype)
    return torch.searchsorted(ends, positions, right=True, out_int32=repeats.dtype == torch.int32)


def unique_legacy(x: torch.Tensor, sorted: bool = True, return_inverse: bool = False) \
        -> tuple[torch.Tensor, torch.Tensor]:  # noqa: A002 - torch's name
    """aten::_unique: _unique2 without the counts."""
    values, inverse, _ = unique2(x, sorted, return_inverse)
    return values, inverse


def bincount(x: torch.Tensor, weights: torch.Tensor | None = None, minlength: int = 0) -> torch.Tensor:
    """Counts (or summed weights) per value: a scatter-add into max(x) + 1 bins, the extremes read back once."""
    if x.dim() != 1 or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if minlength < 0:
        raise RuntimeError("minlength should be >= 0")
    if weights is not None and (weights.dim() != 1 or weights.shape[0] != x.shape[0]):
        raise RuntimeError("weights should be 1-d and have the same length as input")
    length = minlength
    if x.numel():
        lo, hi = (int(v) for v in torch.stack([x.min(), x.max()]).cpu())
        if lo < 0:
            raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
        length = max(hi + 1, minlength)
    if weights is None:
        dtype, src = torch.int64, torch.ones(x.shape, dtype=torch.int64, device=x.device)
    else:
        dtype = weights.dtype if weights.is_floating_point() else torch.float64
        src = weights.to(dtype)
    return torch.zeros(length, dtype=dtype, device=x.device).scatter_add_(0, x.long(), src)


extra_kernels.kernel("repeat_interleave.Tensor", repeat_interleave)
extra_kernels.kernel("bincount.default", bincount)
extra_kernels.kernel("_unique.default", unique_legacy)
extra_kernels.kernel("_unique2.default", unique2)
extra_kernels.kernel("_unique2.out", _outs(unique2))
extra_kernels.kernel("unique_consecutive.default", unique_consecutive)
extra_kernels.kernel("unique_consecutive.out", _outs(unique_consecutive))
extra_kernels.kernel("unique_dim.default", unique_dim)
extra_kernels.kernel("unique_dim.out", _outs(unique_dim))
