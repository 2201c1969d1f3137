"""linspace on the device, value for value as the CPU kernel computes it (eager only, like arange).

torch's CPU linspace is not start + i * (end - start) / (steps - 1) rounded once. It converts start and end to
the result dtype first (4.3 becomes 4 for an integer result), computes the step in the result dtype (16-bit
floats round the difference and the quotient) or in double (integers), and counts the first half up from
start (start + step * i) and the second half down from end (end - step * (steps - 1 - i)). 16-bit floats
round after every operation; float32, float64 and the integers' double arithmetic are compiled to a fused
multiply-add (one rounding), which the device reproduces with an exact split product in float64.
"""

from __future__ import annotations

import torch

from toony_core import Tensor, dtypes

from . import extra_kernels
from .dtypes import to_toony


def _split(x: float) -> tuple[float, float]:
    """x as hi + lo, hi holding x's top 26 significant bits (so hi * k is exact for k < 2**27)."""
    c = 134217729.0 * x  # 2**27 + 1 (Veltkamp)
    hi = c - (c - x)
    return hi, x - hi


def _fused(k: Tensor, step: float, origin: float) -> Tensor:
    """origin + step * k with (nearly always) one rounding, in float64: step * k as an exact two-part product,
    the sum's rounding error recovered with Knuth's two-sum."""
    hi, lo = _split(step)
    kf = k.cast(dtypes.float64)
    p = kf * hi  # exact: 26 bits times an index below 2**27
    a = p + origin
    bv = a - origin
    err = (origin - (a - bv)) + (p - bv)
    return a + (err + kf * lo)


def linspace_values(start: float, end: float, n: int, dt: torch.dtype) -> Tensor:
    """The n >= 2 values of torch.linspace(start, end, n, dtype=dt) on the CPU."""
    from toony_core import device

    tdt = to_toony(dt, "linspace")
    s, e = (torch.full((), v, dtype=dt) for v in (start, end))  # the CPU's Scalar -> dtype conversion
    j = Tensor.arange(n, dtype=dtypes.int64)
    first = j < n // 2
    k = first.where(j, n - 1 - j)  # steps from start, or back from end
    if dt in (torch.float16, torch.bfloat16):
        # every operation rounds to the 16-bit type (computed in float32)
        step = float(((e - s) / torch.tensor(n - 1, dtype=dt)).item())  # 0-d CPU tensors round the same way

        def rnd(x: Tensor) -> Tensor:
            return x.cast(tdt).cast(dtypes.float32)

        prod = rnd(rnd(k.cast(dtypes.float32)) * step)
        return first.where(prod + float(s.item()), float(e.item()) - prod).cast(tdt)
    if dt.is_floating_point:
        sv, ev, step = float(s.item()), float(e.item()), float(((e - s) / (n - 1)).item())
    else:
        sv, ev = float(int(s.item())), float(int(e.item()))
        step = (ev - sv) / (n - 1)  # double, as the CPU
    if not device().supports_fp64:  # no float64: one float32 multiply-add (close, not always exact)
        kf = k.cast(dtypes.float32)
        return first.where(kf * step + sv, ev - kf * step).cast(tdt)
    return first.where(_fused(k, step, sv), _fused(k, -step, ev)).cast(tdt)


def linspace_out(start: float, end: float, steps: int, *, out: torch.Tensor) -> torch.Tensor:
    # the meta kernel checks the arguments (negative steps, complex ends for a real out) with torch's errors
    torch.ops.aten.linspace.out(start, end, steps, out=torch.empty(0, dtype=out.dtype, device="meta"))
    to_toony(out.dtype, "linspace")
    if out.numel() != steps:
        out.resize_(steps)
    if steps == 1:
        out.fill_(start)
    elif steps > 1:
        from . import eager  # not at the top: this module loads while the lowering table does

        eager.write_into(out, linspace_values(start, end, steps, out.dtype), [])
    return out


extra_kernels.kernel("linspace.out", linspace_out)
