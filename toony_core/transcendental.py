"""Transcendental functions written as plain arithmetic: a rule set run when a kernel is lowered.

OpenCL's built-in `exp` is a library call that a CPU driver (PoCL) runs one work-item at a time, while
multiplies, adds, comparisons, a float->int conversion and a bit shift vectorize across work-items like any
other arithmetic: on this project's 2-core CI machine, exp of 16M floats takes ~46 ms built in and ~6 ms
written out. Only float32 is expanded (float64 and the 16-bit types keep the built-ins); erf, sin and cos
are still built-ins. Measured errors are in tests/toony_core/test_ops.py (TRANSCENDENTAL_ULPS).

exp(x) = 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2] (Cody-Waite: ln 2 split in
two so n * LN2_HI is exact), e^r from a degree-7 polynomial (Cephes' expf coefficients), and 2^n built from
its bits in two halves so 2^128 (exp(88.7)) and 2^-150 (results in the subnormal range) stay representable.
"""

from __future__ import annotations

from .dtype import dtypes
from .uop import Ops, PatternMatcher, UOp, UPat

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
LN2_HI = 0.693359375  # 9 significant bits: n * LN2_HI is exact for every n exp can reach
LN2_LO = -2.12194440e-4  # LN2 - LN2_HI
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
EXP_MAX = 88.72283935546875  # exp of anything larger overflows float32
EXP_MIN = -103.97208404541016  # exp of anything smaller rounds to 0


def _horner(coeffs: tuple[float, ...], x: UOp) -> UOp:
    """The polynomial with these coefficients (highest power first) at x."""
    p = UOp.const(coeffs[0], dtypes.float32)
    for c in coeffs[1:]:
        p = p * x + c
    return p


def _round(t: UOp) -> UOp:
    """t rounded to the nearest integer (halves away from zero), as int32; t is within int32's range."""
    return (t + (t < 0.0).where(UOp.const(-0.5, t.dtype), 0.5)).cast(dtypes.int32)


def _pow2(n: UOp) -> tuple[UOp, UOp]:
    """Two floats whose product is 2^n, for n in [-150, 128]: each half of n is a normal exponent."""
    half = n.alu(Ops.SHR, 1)
    def bits(e: UOp) -> UOp:
        return UOp(Ops.BITCAST, dtypes.float32, ((e + 127).alu(Ops.SHL, 23),))
    return bits(half), bits(n - half)


def _exp_reduced(n: UOp, r: UOp) -> UOp:
    """2^n * e^r for r in [-ln2/2, ln2/2]."""
    p = _horner(EXP_POLY, r)
    y = p * (r * r) + r + 1.0
    s1, s2 = _pow2(n)
    return y * s1 * s2


def _special(x: UOp, y: UOp, big: float, small: float) -> UOp:
    """y, except inf past `big`, 0 below `small` and nan for nan."""
    y = (UOp.const(big, x.dtype) < x).where(float("inf"), y)
    y = (x < small).where(0.0, y)
    return x.ne(x).where(x, y)


def _clamp(x: UOp, lo: float, hi: float) -> UOp:
    x = (x < lo).where(lo, x)
    return (UOp.const(hi, x.dtype) < x).where(hi, x)


def exp(x: UOp) -> UOp:
    xc = _clamp(x, EXP_MIN, EXP_MAX)
    n = _round(xc * LOG2E)
    nf = n.cast(dtypes.float32)
    r = xc - nf * LN2_HI - nf * LN2_LO
    return _special(x, _exp_reduced(n, r), EXP_MAX, EXP_MIN)


def exp2(x: UOp) -> UOp:
    xc = _clamp(x, -150.0, 128.0)
    n = _round(xc)
    r = (xc - n.cast(dtypes.float32)) * LN2
    return _special(x, _exp_reduced(n, r), 128.0, -150.0)


# Cephes' logf: log(1 + f) = f - f^2/2 + f^3 P(f) for f in [sqrt(1/2) - 1, sqrt(2) - 1]
LOG_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
            -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
SQRT_HALF = 0.7071067811865476
FLT_MIN = 1.1754943508222875e-38  # the smallest normal float32


def log(x: UOp) -> UOp:
    """log(x) = e ln 2 + log(m) with x = m 2^e, m in [sqrt(1/2), sqrt(2)) read from x's bits."""
    tiny = x < FLT_MIN
    xs = tiny.where(x * 33554432.0, x)  # subnormals scaled by 2^25 into the normal range
    bits = UOp(Ops.BITCAST, dtypes.int32, (xs,))
    e = bits.alu(Ops.SHR, 23).alu(Ops.AND, 0xFF) - 126 - tiny.where(UOp.const(25, dtypes.int32), 0)
    m = UOp(Ops.BITCAST, dtypes.float32, (bits.alu(Ops.AND, 0x807FFFFF).alu(Ops.OR, 0x3F000000),))  # [0.5, 1)
    low = m < SQRT_HALF
    e = e - low.where(UOp.const(1, dtypes.int32), 0)
    f = low.where(m + m, m) - 1.0
    ef = e.cast(dtypes.float32)
    z = f * f
    p = _horner(LOG_POLY, f)
    y = p * f * z + ef * LN2_LO - z * 0.5
    y = f + y + ef * LN2_HI
    y = (x < 0.0).where(float("nan"), y)
    y = x.eq(0.0).where(float("-inf"), y)
    return x.eq(float("inf")).alu(Ops.OR, x.ne(x)).where(x, y)


# Cephes' tanhf: tanh(x) = x + x^3 P(x^2) for |x| < 0.625, else 1 - 2 / (e^2|x| + 1) with x's sign
TANH_POLY = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)


def tanh(x: UOp) -> UOp:
    z = x * x
    p = _horner(TANH_POLY, z)
    small = x.eq(0.0).where(x, p * z * x + x)  # keeps the sign of -0.0
    neg = x < 0.0
    a = neg.where(x.alu(Ops.NEG), x)
    big = 1.0 - UOp.const(2.0, x.dtype).alu(Ops.FDIV, exp(a + a) + 1.0)
    big = neg.where(big.alu(Ops.NEG), big)
    return (a < 0.625).where(small, big)


transcendental = PatternMatcher([
    # x ** 2 is x * x exactly (inf and nan included), and a multiply vectorizes where pow() does not
    (UPat(Ops.POW, src=(UPat(name="x"), UPat(Ops.CONST, arg=2.0)), name="u"), lambda u, x: x * x),
    (UPat(Ops.TANH, dtypes.float32, name="u"), lambda u: tanh(u.src[0])),
    (UPat(Ops.LOG, dtypes.float32, name="u"), lambda u: log(u.src[0])),
    (UPat(Ops.EXP, dtypes.float32, name="u"), lambda u: exp(u.src[0])),
    (UPat(Ops.EXP2, dtypes.float32, name="u"), lambda u: exp2(u.src[0])),
])
