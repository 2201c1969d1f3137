"""Complex values for the eager device, as pairs of lazy real tensors.

toony_core knows only real numbers. A complex toony tensor's storage holds interleaved (re, im) pairs of its
component dtype (complex64 -> float32, complex128 -> float64, complex32 -> float16); torch.view_as_real gives
that storage as a real tensor with a trailing dim of 2, which as_lazy reads like any real tensor. Lowerings in
COMPLEX_LOWERINGS (lowering_complex.py) take `Complex` values for complex tensors and return `Complex` (or
lazy real) results; eager.new_output / write_into hand a `Complex` result to `new_complex_output` /
`write_complex_into` here, which write it through view_as_real of the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toony_core import DType, dtypes
from toony_core import Tensor as Lazy

COMPONENT: dict[torch.dtype, torch.dtype] = {
    torch.complex32: torch.float16, torch.complex64: torch.float32, torch.complex128: torch.float64,
}
COMPLEX_OF: dict[torch.dtype, torch.dtype] = {v: k for k, v in COMPONENT.items()}

Number = bool | int | float | complex


@dataclass(frozen=True)
class Complex:
    """A lazy complex tensor: re + i*im, two real lazy tensors of one shape and one float dtype."""

    re: Lazy
    im: Lazy

    @staticmethod
    def lift(x: Complex | Lazy | Number, like: Complex | None = None) -> Complex:
        """x as a Complex value: a real tensor or number gets a zero imaginary part."""
        if isinstance(x, Complex):
            return x
        if isinstance(x, Lazy):
            return Complex(x, Lazy.zeros(tuple(x.shape), x.dtype))
        dt = like.re.dtype if like is not None else dtypes.float32
        z = complex(x)
        return Complex(Lazy(z.real, dt), Lazy(z.imag, dt))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.re.shape)

    @property
    def dtype(self) -> DType:
        return self.re.dtype

    def cast(self, dt: DType) -> Complex:
        return Complex(self.re.cast(dt), self.im.cast(dt))

    def map(self, f) -> Complex:  # noqa: ANN001 - a view or movement op applied to both parts
        return Complex(f(self.re), f(self.im))

    def reshape(self, shape: tuple[int, ...]) -> Complex:
        return self.map(lambda t: t.reshape(shape))

    def expand(self, shape: tuple[int, ...]) -> Complex:
        return self.map(lambda t: t.expand(shape))

    # --- arithmetic -------------------------------------------------------------------------------------
    def __add__(self, o: Complex | Lazy | Number) -> Complex:
        o = Complex.lift(o, self)
        return Complex(self.re + o.re, self.im + o.im)

    __radd__ = __add__

    def __sub__(self, o: Complex | Lazy | Number) -> Complex:
        o = Complex.lift(o, self)
        return Complex(self.re - o.re, self.im - o.im)

    def __rsub__(self, o: Complex | Lazy | Number) -> Complex:
        return Complex.lift(o, self) - self

    def __neg__(self) -> Complex:
        return Complex(-self.re, -self.im)

    def __mul__(self, o: Complex | Lazy | Number) -> Complex:
        if isinstance(o, Lazy) or (isinstance(o, (bool, int, float))):
            return Complex(self.re * o, self.im * o)  # a real factor: no cross terms (keeps inf * 0 out)
        o = Complex.lift(o, self)
        return Complex(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)

    __rmul__ = __mul__

    def conj(self) -> Complex:
        return Complex(self.re, -self.im)

    def __truediv__(self, o: Complex | Lazy | Number) -> Complex:
        if isinstance(o, Lazy) or (isinstance(o, (bool, int, float))):
            return Complex(self.re / o, self.im / o)
        o = Complex.lift(o, self)
        # Smith's division: scale by the larger part of the divisor, so |o|^2 never over/underflows
        big_re = o.re.abs() >= o.im.abs()
        r1 = o.im / o.re
        d1 = o.re + o.im * r1
        r2 = o.re / o.im
        d2 = o.im + o.re * r2
        re = big_re.where((self.re + self.im * r1) / d1, (self.re * r2 + self.im) / d2)
        im = big_re.where((self.im - self.re * r1) / d1, (self.im * r2 - self.re) / d2)
        return Complex(re, im)

    def __rtruediv__(self, o: Complex | Lazy | Number) -> Complex:
        return Complex.lift(o, self) / self

    def abs(self) -> Lazy:
        """|z| without overflow: max * sqrt(1 + (min/max)^2); inf if either part is inf (even with a nan)."""
        a, b = self.re.abs(), self.im.abs()
        hi, lo = a.maximum(b), a.minimum(b)
        ratio = (hi == 0).where(0.0, lo / hi)
        r = hi * (ratio * ratio + 1).sqrt()
        inf = (a == float("inf")) | (b == float("inf"))
        return inf.where(float("inf"), r)

    def angle(self) -> Lazy:
        return self.im.atan2(self.re)

    def exp(self) -> Complex:
        m = self.re.exp()
        # a zero imaginary part stays exactly zero (exp(inf + 0j) = inf + 0j, not inf * sin(0) = nan)
        im = (self.im == 0).where(self.im, m * self.im.sin())
        return Complex(m * self.im.cos(), im)

    def log(self) -> Complex:
        return Complex(self.abs().log(), self.angle())

    def sqrt(self) -> Complex:
        """Principal square root: re >= 0, im carries the sign of the input's im (signed zeros kept)."""
        r = self.abs()
        t = ((r + self.re.abs()) * 0.5).sqrt()
        u = (t == 0).where(0.0, self.im.abs() / (t * 2))
        pos = self.re >= 0
        re = pos.where(t, u)
        im_mag = pos.where(u, t)
        neg_im = (self.im < 0) | ((self.im == 0) & (self.im.bitcast(_int_of(self.im.dtype)) < 0))
        im = neg_im.where(-im_mag, im_mag)
        inf_im = self.im.abs() == float("inf")  # sqrt(x +- inf j) = inf +- inf j, even for a nan x
        return Complex(inf_im.where(float("inf"), re), inf_im.where(self.im, im))

    def sin(self) -> Complex:
        return Complex(self.re.sin() * self.im.cosh(), self.re.cos() * self.im.sinh())

    def cos(self) -> Complex:
        return Complex(self.re.cos() * self.im.cosh(), -(self.re.sin() * self.im.sinh()))

    def sinh(self) -> Complex:
        return Complex(self.re.sinh() * self.im.cos(), self.re.cosh() * self.im.sin())

    def cosh(self) -> Complex:
        return Complex(self.re.cosh() * self.im.cos(), self.re.sinh() * self.im.sin())

    def tanh(self) -> Complex:
        """(sinh 2a + i sin 2b) / (cosh 2a + cos 2b); for large |a| (where that overflows) sign(a) + i*tiny."""
        a, b = self.re, self.im
        den = (a * 2).cosh() + (b * 2).cos()
        big = a.abs() > 20
        re = big.where(a.sign(), (a * 2).sinh() / den)
        tiny = (a.abs() == float("inf")).where(0.0, (b * 2).sin() * (a.abs() * -2).exp() * 2)  # tanh(inf+bj)=1
        im = big.where(tiny, (b * 2).sin() / den)
        return Complex(re, im)

    def tan(self) -> Complex:
        t = Complex(-self.im, self.re).tanh()  # tan z = -i tanh(i z)
        return Complex(t.im, -t.re)

    def sigmoid(self) -> Complex:
        return 1.0 / ((-self).exp() + 1.0)

    def pow(self, w: Complex | Lazy | Number) -> Complex:
        """z ** w = exp(w log z); 0 ** w is 0 for a real positive w."""
        if isinstance(w, (int, float)) and not isinstance(w, bool):
            if w == 2:
                return self * self
            if w == 3:
                return self * self * self
            if w == 1:
                return self
            if w == 0.5:
                return self.sqrt()
            if w == -1:
                return 1.0 / self
        wc = Complex.lift(w, self)
        r = (wc * self.log()).exp()
        zero = (self.re == 0) & (self.im == 0)
        wpos = wc.re > 0
        return Complex((zero & wpos).where(0.0, r.re), (zero & wpos).where(0.0, r.im))

    def isinf(self) -> Lazy:
        return (self.re.abs() == float("inf")) | (self.im.abs() == float("inf"))

    def isfinite(self) -> Lazy:
        return ~(self.isnan() | self.isinf())

    def isnan(self) -> Lazy:
        return (self.re != self.re) | (self.im != self.im)

    def eq(self, o: Complex | Lazy | Number) -> Lazy:
        o = Complex.lift(o, self)
        return (self.re == o.re) & (self.im == o.im)


def _int_of(dt: DType) -> DType:
    return {2: dtypes.int16, 4: dtypes.int32, 8: dtypes.int64}[dt.itemsize]


# --- glue with torch tensors ------------------------------------------------------------------------------
def component(dt: torch.dtype) -> torch.dtype:
    return COMPONENT.get(dt, dt)


def as_complex(t: torch.Tensor, op: str = "") -> Complex:
    """A complex toony tensor (or a 0-d CPU complex scalar) as a Complex value."""
    from . import lazy

    if t.device.type == "cpu" and t.dim() == 0:
        from .dtypes import to_toony
        z = complex(t.item())
        dt = to_toony(component(t.dtype))
        return Complex(Lazy(z.real, dt), Lazy(z.imag, dt))
    if t.is_conj():  # a lazy conjugate view: its storage holds the unconjugated values
        return as_complex(t.conj(), op).conj()
    v = lazy.as_lazy(torch.view_as_real(t), op)
    shape = tuple(t.shape)
    bounds = [(0, n) for n in shape]
    re = v.shrink([*bounds, (0, 1)]).reshape(shape)
    im = v.shrink([*bounds, (1, 2)]).reshape(shape)
    return Complex(re, im)


def stacked(value: Complex) -> Lazy:
    """re and im interleaved on a new trailing dim of 2 (the layout of view_as_real)."""
    shape = value.shape
    pads = [(0, 0)] * len(shape)
    re = value.re.reshape((*shape, 1)).pad([*pads, (0, 1)])
    im = value.im.reshape((*shape, 1)).pad([*pads, (1, 0)])
    return re + im


def _fit(value: Complex, shape: tuple[int, ...], dtype: torch.dtype) -> Complex:
    from .dtypes import to_toony
    value = value.cast(to_toony(component(dtype)))
    if value.shape != tuple(shape):
        n = 1
        for s in shape:
            n *= s
        same = n == value.re.numel()
        value = value.reshape(tuple(shape)) if same else value.expand(tuple(shape))
    return value


def new_complex_output(meta: torch.Tensor, value: Complex | Lazy, inputs: list) -> torch.Tensor:
    """A fresh toony tensor laid out like meta holding value (complex meta), or its real part (real meta)."""
    from .eager import new_output, write_into
    if not meta.is_complex():
        return new_output(meta, value.re if isinstance(value, Complex) else value, inputs)
    value = _fit(Complex.lift(value), tuple(meta.shape), meta.dtype)
    out = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device="toony")
    if meta.numel():
        write_into(torch.view_as_real(out), stacked(value), inputs)
    return out


def write_complex_into(dst: torch.Tensor, value: Complex | Lazy, inputs: list) -> None:
    """dst <- value, broadcast and cast to dst (in-place and out= targets)."""
    from .eager import write_into
    if not dst.is_complex():
        write_into(dst, value.re if isinstance(value, Complex) else value, inputs)
        return
    if dst.numel() == 0:
        return
    from . import lazy, storage
    value = _fit(Complex.lift(value), tuple(dst.shape), dst.dtype)
    e = storage.entry(lazy.addr_of(dst))
    if not (dst.storage_offset() == 0 and dst.is_contiguous() and dst.numel() * dst.element_size() == e.nbytes):
        # written in place element by element: a part of the result may read both parts of an element that
        # the same kernel has already overwritten (sinh_ of a view), so compute it into a temporary first
        tmp = torch.empty(dst.shape, dtype=dst.dtype, device="toony")
        write_into(torch.view_as_real(tmp), stacked(value), inputs)
        lazy.realize_storages([lazy.addr_of(tmp)])
        write_into(torch.view_as_real(dst), lazy.as_lazy(torch.view_as_real(tmp)), [tmp])
        return
    write_into(torch.view_as_real(dst), stacked(value), inputs)


# other names for the same glue (used by code written against an earlier draft of this module)
from_tensor = as_complex
write_complex = write_complex_into
