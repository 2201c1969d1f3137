"""Integer number theory: gcd and lcm, as the CPU computes them (C arithmetic, wrapping included)."""

from __future__ import annotations

from toony_core import Tensor, dtypes
from toony_core.uop import Ops

from .lowering import lowers

# Euclid's algorithm takes at most about log_phi(max) steps (consecutive Fibonacci numbers are the worst
# case): a fixed count per width, unrolled, so one kernel serves every input
_EUCLID_STEPS = {1: 14, 2: 26, 4: 48, 8: 96}


@lowers("gcd.default", pointwise=True)
def gcd(a: Tensor, b: Tensor) -> Tensor:
    """|a| and |b| (wrapping at the type's minimum, as C's abs does) reduced by remainders until one is 0."""
    a, b = a.abs(), (b if isinstance(b, Tensor) else Tensor.full((), b, a.dtype)).abs()
    for _ in range(_EUCLID_STEPS[a.dtype.itemsize]):
        running = a != 0
        a, b = running.where(b._binary(Ops.MOD, a), 0), running.where(a, b)
    return b


@lowers("lcm.default", pointwise=True)
def lcm(a: Tensor, b: Tensor) -> Tensor:
    """|a / gcd * b|, 0 when gcd is 0; 8- and 16-bit operands are promoted to int as C does, then wrapped."""
    b = b if isinstance(b, Tensor) else Tensor.full((), b, a.dtype)
    g = gcd(a, b)
    wide = dtypes.int32 if a.dtype.itemsize < 4 else a.dtype
    out = (a.cast(wide)._binary(Ops.IDIV, g.cast(wide)) * b.cast(wide)).abs()
    return (g == 0).where(0, out.cast(a.dtype))
