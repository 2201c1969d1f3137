"""Ops whose output shape depends on their arguments, eager only: nonzero, masked_select, indexing with boolean
masks, arange, equal (a Python bool), and histc (whose range can come from the data).

The eager device can afford what a compiled graph cannot: it reads the count of true elements back to the
host (one synchronization), then computes the positions on the device. `nonzero` is a scan: each true
element's rank among the true ones is its output row; the rows are written by a scatter, false elements
going to a spare row that is cut off. Boolean indices of `index` and `index_put` become the long indices
`mask.nonzero()` gives, before the table's kernels see them (torch's own CPU kernels do the same).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from toony_core.helpers import strides_for

from . import extra_kernels
from .dtypes import to_toony
from .lowering import arange_values

_MASK_DTYPES = (torch.bool, torch.uint8)  # torch still accepts uint8 masks as indices


def nonzero(x: torch.Tensor) -> torch.Tensor:
    n_el, ndim = x.numel(), x.dim()
    if n_el == 0:
        return torch.empty((0, ndim), dtype=torch.long, device=x.device)
    hit = (x != 0).reshape(-1)
    rank = torch.cumsum(hit, 0)  # 1-based rank of each true element among the true ones
    count = int(rank[-1].item())
    row = torch.where(hit, rank - 1, count)  # false elements land in the spare last row
    flat = torch.arange(n_el, device=x.device)
    coords = [(flat // stride) % size for size, stride in zip(x.shape, strides_for(tuple(x.shape)))]
    rows = torch.zeros((count + 1, ndim), dtype=torch.long, device=x.device)
    if ndim:
        rows.index_put_((row,), torch.stack(coords, 1))
    return rows[:count].clone()


def nonzero_out(x: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    res = nonzero(x)
    out.resize_(res.shape)
    return out.copy_(res)


def masked_select(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype != torch.bool:
        raise RuntimeError(f"masked_select: expected BoolTensor for mask, got {mask.dtype}")
    x, mask = torch.broadcast_tensors(x, mask)
    return x[mask]


def masked_select_out(x: torch.Tensor, mask: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    res = masked_select(x, mask)
    out.resize_(res.shape)
    return out.copy_(res)


def masks_to_indices(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """index/index_put arguments with every boolean mask in `indices` replaced by the long indices of its
    true elements (a mask over k dims becomes k index tensors)."""
    indices = args[1]
    if not any(t is not None and t.dtype in _MASK_DTYPES for t in indices):
        return args, kwargs
    expanded: list[Any] = []
    for t in indices:
        if t is None or t.dtype not in _MASK_DTYPES:
            expanded.append(t)
        elif t.dim() == 0:
            raise NotImplementedError("toony: indexing with a 0-d boolean mask is not supported")
        else:
            expanded.extend(nonzero(t).unbind(1))
    return (args[0], expanded, *args[2:]), kwargs


# ops that take `indices` second and reach the lowering table: their eager kernels expand masks first
MASKED_INDEX_OPS = ("index.Tensor", "index.Tensor_out", "index_put.default", "index_put_.default", "index_put.out")


def index_put_impl_(x: torch.Tensor, indices: list, values: torch.Tensor, accumulate: bool = False,
                    unsafe: bool = False) -> torch.Tensor:
    """What autograd's index backward calls: index_put_ (every index is checked; `unsafe` only skips that)."""
    return x.index_put_(indices, values, accumulate)

def arange_out(start: float, end: float, step: float = 1, *, out: torch.Tensor) -> torch.Tensor:
    # torch's meta kernel checks the arguments and gives the length; where it is stricter than the CPU kernel
    # (a fractional step for a narrow integer type), the CPU decides
    try:
        meta = torch.empty(0, dtype=out.dtype, device="meta")
        n = torch.ops.aten.arange.start_out(start, end, step, out=meta).numel()
    except (RuntimeError, ValueError):
        n = torch.arange(start, end, step, dtype=out.dtype).numel()
    if out.numel() != n:
        out.resize_(n)
    if n:
        from . import eager  # not at the top: this module loads while the lowering table does

        eager.write_into(out, arange_values(n, start, step, to_toony(out.dtype, "arange")), [])
    return out


def equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and equal elements (one value read back)."""
    if a.device != b.device:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"{a.device} and {b.device}!")
    return a.shape == b.shape and bool(torch.eq(a, b).all().item())


def histc(x: torch.Tensor, bins: int = 100, min: float = 0, max: float = 0) -> torch.Tensor:  # noqa: A002
    """Counts of x in `bins` equal bins over [min, max] (the data's range when min == max), as the CPU computes
    them: bin = trunc((x - min) * bins / (max - min)) in x's dtype, x == max in the last bin, values outside
    (and NaN) not counted. The counts are one scatter-add into a spare bin for the uncounted."""
    if bins <= 0:
        raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension 0")
    lo, hi = float(min), float(max)
    if lo == hi and x.numel():
        lo, hi = x.min().item(), x.max().item()  # two values read back
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise RuntimeError(f"torch.histc: range of [{_g(lo)}, {_g(hi)}] is not finite")
    if lo > hi:
        raise RuntimeError("torch.histc: max must be larger than min")
    lo_t, hi_t = (torch.tensor(v, dtype=x.dtype).item() for v in (lo, hi))  # the edges in x's dtype, as the CPU
    pos = ((x.reshape(-1) - lo_t) * bins / (hi_t - lo_t)).to(torch.long).clamp(max=bins - 1)
    counted = (x.reshape(-1) >= lo_t) & (x.reshape(-1) <= hi_t)
    counts = torch.zeros(bins + 1, dtype=x.dtype, device=x.device)
    counts.scatter_add_(0, torch.where(counted, pos, bins), torch.ones_like(x.reshape(-1)))
    return counts[:bins].clone()


def histogram(x: torch.Tensor, bins: int | torch.Tensor = 100, *, range: Sequence[float] | None = None,  # noqa: A002
              weight: torch.Tensor | None = None, density: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.histogram: `bins` equal bins over `range` (the data's range, widened by 0.5 each way when it is one
    point; [0, 1] for no data) or the given edges. An element's bin is found by binary search in the edges
    (the last edge closes the last bin); weights (or ones) are summed per bin by one scatter-add."""
    if isinstance(bins, torch.Tensor):
        edges = bins
        if edges.dim() != 1 or edges.numel() < 2:
            raise RuntimeError("torch.histogram(): bins must be a 1-d tensor with at least two edges")
    else:
        if bins <= 0:
            raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension 0")
        if range is not None:
            lo, hi = float(range[0]), float(range[1])
        elif x.numel():
            lo, hi = (float(v) for v in torch.stack([x.min(), x.max()]).cpu())  # two values read back
        else:
            lo, hi = 0.0, 1.0
        if lo > hi:
            raise RuntimeError(f"torch.histogramdd: min should not exceed max, but got min {_g(lo)} max {_g(hi)} "
                               "for dimension 0")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise RuntimeError(f"torch.histogramdd: dimension 0's range [{_g(lo)}, {_g(hi)}] is not finite")
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = torch.linspace(lo, hi, bins + 1, dtype=x.dtype, device=x.device)
    n = edges.numel() - 1
    flat = x.reshape(-1)
    pos = torch.searchsorted(edges, flat, right=True) - 1
    pos = torch.where(flat == edges[-1], n - 1, pos)
    inside = (flat >= edges[0]) & (flat <= edges[-1])
    w = weight.reshape(-1).to(x.dtype) if weight is not None else torch.ones_like(flat)
    hist = torch.zeros(n + 1, dtype=x.dtype, device=x.device).scatter_add_(0, torch.where(inside, pos, n), w)[:n]
    if density:
        hist = hist / (hist.sum() * (edges[1:] - edges[:-1]))
    return hist.clone(), edges.clone()


def _g(v: float) -> str:
    return f"{v:g}"


extra_kernels.kernel("arange.start_out", arange_out)
extra_kernels.kernel("equal.default", equal)
extra_kernels.kernel("histc.default", histc)
extra_kernels.kernel("histogram.bin_ct", histogram)
extra_kernels.kernel("histogram.bins_tensor", histogram)
extra_kernels.kernel("_index_put_impl_.default", index_put_impl_)
extra_kernels.kernel("nonzero.default", nonzero)
extra_kernels.kernel("nonzero.out", nonzero_out)
extra_kernels.kernel("masked_select.default", masked_select)
extra_kernels.kernel("masked_select.out", masked_select_out)
