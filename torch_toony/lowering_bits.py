"""Ops defined on the bit pattern: nextafter, frexp, hash_tensor.

Both read a float's fields through a bitcast to the signed integer of its width, as the IEEE-754 layout
defines them: sign, biased exponent, mantissa (fraction bits). No math library call is involved, so the
results are exact on every device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from toony_core import DType, Tensor, dtypes
from toony_core.uop import Ops

from .lowering import lowers


@dataclass(frozen=True)
class _Layout:
    bits: DType  # the signed integer of the float's width
    mantissa: int  # fraction bits
    exponent_mask: int  # all ones in the exponent field, shifted down
    bias: int


_LAYOUTS = {
    dtypes.float16: _Layout(dtypes.int16, 10, 0x1F, 15),
    dtypes.bfloat16: _Layout(dtypes.int16, 7, 0xFF, 127),
    dtypes.float32: _Layout(dtypes.int32, 23, 0xFF, 127),
    dtypes.float64: _Layout(dtypes.int64, 52, 0x7FF, 1023),
}


@lowers("nextafter.default")
def nextafter(x: Tensor, y: Tensor) -> Tensor:
    """The next float after x toward y: one step of the bit pattern, away from zero when y is beyond x in
    x's direction, toward it otherwise; from zero, the smallest subnormal with y's sign."""
    y = y.cast(x.dtype) if isinstance(y, Tensor) else Tensor.full(x.shape, y, x.dtype)
    lay = _LAYOUTS[x.dtype]
    b = x.bitcast(lay.bits)
    away = (x < y) == (x > 0)  # the magnitude grows: the bit pattern (sign aside) counts up
    step = away.where(b + 1, b - 1).bitcast(x.dtype)
    sign_bit = -(1 << (8 * lay.bits.itemsize - 1))
    smallest = (y < 0).where(Tensor.full((), sign_bit + 1, lay.bits), Tensor.full((), 1, lay.bits))
    out = (x == 0).where(smallest.bitcast(x.dtype), step)
    out = (x == y).where(y, out)
    return ((x != x) | (y != y)).where(x + y, out)  # a NaN in: NaN out


@lowers("frexp.Tensor")
def frexp(x: Tensor) -> tuple[Tensor, Tensor]:
    """x = mantissa * 2**exponent with 0.5 <= |mantissa| < 1; zero, inf and NaN give (x, 0). 16-bit floats are
    split in float32 (their mantissa and exponent are exactly float32's)."""
    if x.dtype in (dtypes.float16, dtypes.bfloat16):
        m, e = frexp(x.cast(dtypes.float32))
        return m.cast(x.dtype), e
    lay = _LAYOUTS[x.dtype]
    field = (x.bitcast(lay.bits) >> lay.mantissa) & lay.exponent_mask
    # a subnormal has no implicit leading bit: scale it into the normal range first, and count the scale
    scale = lay.mantissa + 2
    subnormal = field == 0
    xs = subnormal.where(x * float(2 ** scale), x)
    b = xs.bitcast(lay.bits)
    exponent = ((b >> lay.mantissa) & lay.exponent_mask) - (lay.bias - 1) - subnormal.where(scale, 0)
    keep = ~(lay.exponent_mask << lay.mantissa)  # sign and fraction bits
    mantissa = ((b & keep) | ((lay.bias - 1) << lay.mantissa)).bitcast(x.dtype)
    special = (x == 0) | (field == lay.exponent_mask)  # zero (either sign), inf, NaN
    return special.where(x, mantissa), special.where(0, exponent).cast(dtypes.int32)


@lowers("hash_tensor.default")
def hash_tensor(x: Tensor, dim: Sequence[int] = (), keepdim: bool = False, mode: int = 0) -> Tensor:
    """The xor of every element's 64-bit pattern (floats widened to float64, integers to int64 or uint64)."""
    if mode != 0:
        raise RuntimeError(f"hash_tensor: only mode=0 (xor reduction) is supported, got {mode}")
    wide = dtypes.float64 if x.dtype.is_float else dtypes.uint64 if x.dtype.is_unsigned else dtypes.int64
    bits = x.cast(wide).bitcast(dtypes.uint64)
    return bits._reduce(Ops.XOR, tuple(dim) if len(dim) else None, keepdim)
