"""Scatter and index reductions on the device: scatter_reduce, scatter with reduce=, index_reduce.

Every one is a scatter whose store combines with the element already there (toony_core's scatter with an
accumulate op: an atomic add, or a compare-and-swap loop for mul/max/min), so duplicate indices combine in
one kernel for any size, with no sort and no dense one-hot (which costs src.numel() * dim_size). Max, min
and integer products come out exactly as on the CPU whatever order the atomics land in (they are
associative and commutative, integer products modulo 2**bits); float sums and products may round in another
order, as any parallel scatter_add does. The pieces follow torch's CPU kernels:

- include_self=False first overwrites every position that will receive a value with the reduction's
  identity (0, 1, the lowest or the highest value), then reduces into it;
- scatter_reduce and scatter(reduce=) combine 16-bit floats in float32 and round once (torch's CPU scatter
  kernels accumulate in float32); index_reduce rounds after each step, as torch's does;
- mean is a sum divided by a count, the count kept in the output's dtype with zeros raised to one, and
  integer means divide with floor, exactly as torch's count tensor does;
- index_reduce is scatter_reduce with its 1-d index spread over the source's shape along `dim`.
"""

from __future__ import annotations

from typing import Any

from toony_core import Tensor
from toony_core.dtype import DType, dtypes, min_max

from .lowering import lowers

Scalar = bool | int | float

# torch's reduce names -> toony_core's scatter accumulate names ("mean" sums, then divides)
_ACCUMULATE = {"sum": "add", "prod": "mul", "mean": "add", "amax": "max", "amin": "min"}
# scatter(..., reduce=) takes the older names
_LEGACY = {"add": "sum", "multiply": "prod"}


def _identity(reduce: str, dt: DType) -> Scalar:
    """The value that leaves the reduction unchanged (torch's include_self=False fill)."""
    if reduce in ("sum", "mean"):
        return False if dt == dtypes.bool else 0
    if reduce == "prod":
        return True if dt == dtypes.bool else 1
    lo, hi = min_max(dt)
    low, high = (bool(lo), bool(hi)) if dt == dtypes.bool else (lo, hi)
    return low if reduce == "amax" else high


def _as_1d(t: Tensor | Any) -> Tensor | Any:
    """torch treats a 0-d self, index or src of a scatter as 1-d of one element."""
    return t.reshape(1) if isinstance(t, Tensor) and t.ndim == 0 else t


def _scalar_of(value: Scalar, dt: DType) -> Scalar:
    """A Python scalar converted as torch's `value.to<scalar_t>()` does (truncation for integers)."""
    if dt == dtypes.bool:
        return bool(value)
    return float(value) if dt.is_float else int(value)


def scatter_reduce_lazy(x: Tensor, dim: int, index: Tensor, src: Tensor | Scalar, reduce: str,
                        include_self: bool = True, widen: bool = True) -> Tensor:
    """torch.scatter_reduce(x, dim, index, src, reduce, include_self=...) on lazy values (src may be a scalar,
    which every index position receives). widen: 16-bit floats combine in float32 and round once at the end,
    as torch's CPU scatter kernels do; index_reduce's kernels round after every step instead."""
    if reduce not in _ACCUMULATE:
        raise ValueError(f"reduce argument must be one of {list(_ACCUMULATE)}, got {reduce!r}")
    if index.numel() == 0 or x.numel() == 0:
        return x
    shape = x.shape
    if x.ndim == 0:
        x, index, src = x.reshape(1), _as_1d(index), _as_1d(src)
        dim = 0
    dim %= x.ndim
    if not isinstance(src, Tensor):
        src = Tensor.full(index.shape, _scalar_of(src, x.dtype), x.dtype)
    work = dtypes.float32 if widen and x.dtype in (dtypes.float16, dtypes.bfloat16) else x.dtype
    out = x.cast(work)
    if not include_self:
        out = out.scatter(dim, index, _scalar_of(_identity(reduce, x.dtype), x.dtype))
    out = out.scatter(dim, index, src.cast(x.dtype).cast(work), reduce=_ACCUMULATE[reduce]).cast(x.dtype)
    if reduce == "mean":
        # torch counts in the output dtype (ones scattered with add onto ones or zeros, combined like the
        # values), zeros become one
        count = Tensor.full(x.shape, 1 if include_self else 0, work).scatter(dim, index, 1, reduce="add")
        count = count.cast(x.dtype)
        count = (count == 0).where(Tensor.full((), 1, x.dtype), count)
        out = out / count if x.dtype.is_float else out.floordiv(count)
    return out.reshape(shape)


@lowers("scatter_reduce.two")
def scatter_reduce(x: Tensor, dim: int, index: Tensor, src: Tensor, reduce: str, *, include_self: bool = True) \
        -> Tensor:
    return scatter_reduce_lazy(x, dim, index, src, reduce, include_self)


@lowers("scatter.reduce", "scatter.value_reduce")
def scatter_with_reduce(x: Tensor, dim: int, index: Tensor, src: Tensor | Scalar, *, reduce: str) -> Tensor:
    if reduce not in _LEGACY:
        raise RuntimeError(f"reduce argument must be either add or multiply, got {reduce}")
    return scatter_reduce_lazy(x, dim, index, src, _LEGACY[reduce])


@lowers("index_reduce.default")
def index_reduce(x: Tensor, dim: int, index: Tensor, source: Tensor, reduce: str, *, include_self: bool = True) \
        -> Tensor:
    if reduce not in ("prod", "mean", "amax", "amin"):
        raise RuntimeError(f"index_reduce(): Expected reduce to be one of prod, mean, amax or amin, got {reduce}.")
    shape = x.shape
    if x.ndim == 0:
        x, source = x.reshape(1), _as_1d(source)
    dim %= x.ndim
    source = source.reshape(x.shape[:dim] + (1,) + x.shape[dim + 1:]) if source.ndim == 0 else source
    # index[i] is the target of source's slice i along dim: as a scatter index, it repeats over the other dims
    n = index.numel()
    spread = index.reshape(tuple(n if d == dim else 1 for d in range(x.ndim))).expand(source.shape)
    return scatter_reduce_lazy(x, dim, spread, source, reduce, include_self, widen=False).reshape(shape)
