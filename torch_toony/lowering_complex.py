"""Lowerings for ops with complex tensors (see complex.py for the representation).

eager._compute sends an op here when any tensor argument or meta output is complex. A lowering in
COMPLEX_LOWERINGS takes a `Complex` for each complex tensor argument, a lazy real tensor for each real one,
and returns a `Complex` (or a lazy real tensor: abs, angle, comparisons). An op without an entry raises
UnsupportedDtype naming the op and dtype.

Ops linear in their complex values with real coefficients (data movement, indexing, sums) reuse the real
lowering twice, once on the real parts and once on the imaginary parts (`_linear`): their "value" arguments
are split (a real tensor or number there has a zero imaginary part), every other argument (indices, masks,
dims, real alpha) is passed unchanged to both calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from toony_core import Tensor as Lazy

from . import lazy
from .complex import COMPONENT, Complex, as_complex
from .dtypes import UnsupportedDtype, to_toony
from .lowering import LOWERINGS, Lowering

COMPLEX_LOWERINGS: dict[str, Lowering] = {}


def lowers_complex(*names: str, pointwise: bool = False) -> Callable:
    """Register fn as the complex lowering of these ATen overloads (pointwise: cast every tensor argument to
    the compute dtype's component first: complex32 and float16 compute in float32)."""
    def deco(fn: Callable) -> Callable:
        for n in names:
            COMPLEX_LOWERINGS[n] = Lowering(fn, pointwise)
        return fn
    return deco


def _flat_tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _flat_tensors(v)]
    if isinstance(x, dict):
        return _flat_tensors(list(x.values()))
    return []


def involves_complex(args: tuple, kwargs: dict, meta: Any) -> bool:
    return any(t is not None and t.is_complex() for t in _flat_tensors((args, kwargs, meta)))


def _key(op: torch._ops.OpOverload) -> str:
    return f"{op._schema.name.removeprefix('aten::')}.{op._overloadname}"


def _convert(a: Any, name: str) -> Any:
    if isinstance(a, torch.Tensor):
        return as_complex(a, name) if a.is_complex() else lazy.as_lazy(a, name)
    if isinstance(a, (list, tuple)):
        return type(a)(_convert(x, name) for x in a)
    return a


def _compute_dtype(args: tuple, kwargs: dict, meta: Any) -> torch.dtype:
    """The component dtype complex arithmetic runs in: the widest complex dtype involved, 16-bit as 32-bit."""
    found = [t.dtype for t in _flat_tensors((meta, args, kwargs)) if t is not None and t.is_complex()]
    widest = torch.complex128 if torch.complex128 in found else torch.complex64
    return COMPONENT[widest]


def complex_compute(op: torch._ops.OpOverload, args: tuple, kwargs: dict, meta: Any) -> Any:
    name = _key(op)
    low = _lookup(name)
    if low is None:
        dts = sorted({str(t.dtype) for t in _flat_tensors((args, kwargs, meta)) if t is not None and t.is_complex()})
        raise UnsupportedDtype(f"toony has no kernel for {name} with dtype {', '.join(dts) or 'complex'}")
    largs, lkwargs = _convert(args, name), {k: _convert(v, name) for k, v in kwargs.items()}
    if low.pointwise:
        dt = to_toony(_compute_dtype(args, kwargs, meta))
        largs = tuple(x.cast(dt) if isinstance(x, (Lazy, Complex)) else x for x in largs)
    return low.fn(*largs, **lkwargs)


# --- ops linear in their complex values -------------------------------------------------------------------
def _part(x: Any, imag: bool, like: Any) -> Any:
    """One part of a value argument: a real tensor or number has a zero imaginary part."""
    if isinstance(x, Complex):
        return x.im if imag else x.re
    if isinstance(x, Lazy):
        x = x.cast(like.re.dtype) if isinstance(like, Complex) else x
        return Lazy.zeros(tuple(x.shape), x.dtype) if imag else x
    if isinstance(x, (list, tuple)):
        return type(x)(_part(v, imag, like) for v in x)
    if isinstance(x, (bool, int, float, complex)):
        z = complex(x)
        if not imag and not isinstance(x, complex):
            return x
        return z.imag if imag else z.real
    return x


def _plain(x: Any) -> Any:
    """A non-value argument: a complex dtype argument (sum's dtype=) names its component dtype."""
    if isinstance(x, torch.dtype):
        return COMPONENT.get(x, x)
    return x


def _first_complex(x: Any) -> Complex | None:
    if isinstance(x, Complex):
        return x
    if isinstance(x, (list, tuple)):
        for v in x:
            if (c := _first_complex(v)) is not None:
                return c
    return None


def _linear(real_name: str, values: Sequence[int | str]) -> Callable:
    """A complex lowering from the real one: run it on the real parts and on the imaginary parts.
    `values` names the positional indices / keyword names of the arguments the result is linear in."""
    def fn(*args: Any, **kwargs: Any) -> Complex:
        real = LOWERINGS[real_name].fn
        like = _first_complex((list(args), list(kwargs.values())))
        if like is None:  # a real call (conj_physical of a real tensor): nothing to split
            return real(*args, **kwargs)

        def call(imag: bool) -> Lazy:
            a = [(_part(v, imag, like) if i in values else _plain(v)) for i, v in enumerate(args)]
            k = {n: (_part(v, imag, like) if n in values else _plain(v)) for n, v in kwargs.items()}
            return real(*a, **k)
        return Complex(call(False), call(True))
    return fn


_LINEAR: dict[str, tuple[int | str, ...]] = {
    "clone.default": (0,), "cat.default": (0, "tensors"), "roll.default": (0,), "flip.default": (0,),
    "constant_pad_nd.default": (0, 2, "value"), "gather.default": (0,), "index_select.default": (0,),
    "scatter.src": (0, 3, "src"), "scatter.value": (0, 3, "value"), "scatter_add.default": (0, 3, "src"),
    "index.Tensor": (0,), "index_put.default": (0, 2, "values"), "tril.default": (0,), "triu.default": (0,),
    "where.self": (1, 2), "where.ScalarOther": (1, 2), "where.ScalarSelf": (1, 2), "where.Scalar": (1, 2),
    "masked_fill.Scalar": (0, 2, "value"), "masked_fill.Tensor": (0, 2, "value"),
    "fill.Scalar": (0, 1, "value"), "fill.Tensor": (0, 1, "value"), "zero.default": (0,),
    "sum.default": (0,), "sum.dim_IntList": (0,), "mean.default": (0,), "mean.dim": (0,),
    "cumsum.default": (0,), "take.default": (0,), "put.default": (0, 2, "source"),
    "masked_scatter.default": (0, 2, "source"),
}


def _lookup(name: str) -> Lowering | None:
    """The complex lowering of an overload (linear ones are made on first use: every lowering file has been
    imported by then)."""
    if name not in COMPLEX_LOWERINGS and name in _LINEAR and name in LOWERINGS:
        COMPLEX_LOWERINGS[name] = Lowering(_linear(name, _LINEAR[name]))
    return COMPLEX_LOWERINGS.get(name)

# torch's conjugate views are resolved by these; on a real tensor they are copies
COMPLEX_LOWERINGS["conj_physical.default"] = Lowering(
    lambda x: x.conj() if isinstance(x, Complex) else x + 0)
COMPLEX_LOWERINGS["_conj_physical.default"] = COMPLEX_LOWERINGS["conj_physical.default"]


# --- arithmetic ---------------------------------------------------------------------------------------------
Value = Complex | Lazy | bool | int | float | complex


@lowers_complex("add.Tensor", "add.Scalar", pointwise=True)
def add(a: Value, b: Value, alpha: Value = 1) -> Complex:
    return Complex.lift(a) + (b if alpha == 1 else Complex.lift(b) * alpha)


@lowers_complex("sub.Tensor", "sub.Scalar", pointwise=True)
def sub(a: Value, b: Value, alpha: Value = 1) -> Complex:
    return Complex.lift(a) - (b if alpha == 1 else Complex.lift(b) * alpha)


@lowers_complex("rsub.Tensor", "rsub.Scalar", pointwise=True)
def rsub(a: Value, b: Value, alpha: Value = 1) -> Complex:
    return sub(b, a, alpha)


@lowers_complex("mul.Tensor", "mul.Scalar", pointwise=True)
def mul(a: Value, b: Value) -> Complex:
    return a * b if isinstance(a, Complex) else Complex.lift(b) * a


@lowers_complex("div.Tensor", "div.Scalar", pointwise=True)
def div(a: Value, b: Value) -> Complex:
    return Complex.lift(a) / b


@lowers_complex("neg.default", pointwise=True)
def neg(x: Complex) -> Complex:
    return -x


@lowers_complex("reciprocal.default", pointwise=True)
def reciprocal(x: Complex) -> Complex:
    return 1.0 / x


@lowers_complex("abs.default", pointwise=True)
def abs_(x: Complex) -> Lazy:
    return x.abs()


@lowers_complex("angle.default", pointwise=True)
def angle(x: Complex) -> Lazy:
    return x.angle()


@lowers_complex("exp.default", pointwise=True)
def exp(x: Complex) -> Complex:
    return x.exp()


@lowers_complex("log.default", pointwise=True)
def log(x: Complex) -> Complex:
    return x.log()


@lowers_complex("sqrt.default", pointwise=True)
def sqrt(x: Complex) -> Complex:
    return x.sqrt()


@lowers_complex("isnan.default", pointwise=True)
def isnan(x: Complex) -> Lazy:
    return x.isnan()


@lowers_complex("eq.Tensor", "eq.Scalar", pointwise=True)
def eq(a: Value, b: Value) -> Lazy:
    return Complex.lift(a).eq(b)


@lowers_complex("ne.Tensor", "ne.Scalar", pointwise=True)
def ne(a: Value, b: Value) -> Lazy:
    return Complex.lift(a).eq(b).logical_not()


@lowers_complex("sgn.default", pointwise=True)
def sgn(x: Complex) -> Complex:
    r = x.abs()
    zero = r == 0
    safe = zero.where(1.0, r)
    return Complex(zero.where(0.0, x.re / safe), zero.where(0.0, x.im / safe))


@lowers_complex("complex.default")
def complex_(re: Lazy, im: Lazy) -> Complex:
    return Complex(re, im)


@lowers_complex("polar.default")
def polar(r: Lazy, theta: Lazy) -> Complex:
    return Complex(r * theta.cos(), r * theta.sin())


# --- bilinear ops: complex products from real ones ------------------------------------------------------------
def _product(real_name: str, a: Value, b: Value, *rest: Any) -> Complex:
    """a (x) b for a real bilinear op (x): (ar + i ai)(br + i bi) from four real products."""
    f = LOWERINGS[real_name].fn
    a, b = Complex.lift(a), Complex.lift(b)
    dt = a.re.dtype if a.re.dtype.itemsize >= b.re.dtype.itemsize else b.re.dtype
    a, b = a.cast(dt), b.cast(dt)
    return Complex(f(a.re, b.re, *rest) - f(a.im, b.im, *rest), f(a.re, b.im, *rest) + f(a.im, b.re, *rest))


@lowers_complex("mm.default")
def mm(a: Value, b: Value) -> Complex:
    return _product("mm.default", a, b)


@lowers_complex("bmm.default")
def bmm(a: Value, b: Value) -> Complex:
    return _product("bmm.default", a, b)


@lowers_complex("dot.default")
def dot(a: Value, b: Value) -> Complex:
    return _product("dot.default", a, b)


@lowers_complex("vdot.default")
def vdot(a: Value, b: Value) -> Complex:
    return _product("dot.default", Complex.lift(a).conj(), b)


@lowers_complex("addmm.default")
def addmm(x: Value, a: Value, b: Value, *, beta: Value = 1, alpha: Value = 1) -> Complex:
    prod = mm(a, b) * alpha if alpha != 1 else mm(a, b)
    if beta == 0:  # torch ignores x (nan included) when beta is 0
        return prod
    return prod + (Complex.lift(x) * beta if beta != 1 else x)


@lowers_complex("baddbmm.default")
def baddbmm(x: Value, a: Value, b: Value, *, beta: Value = 1, alpha: Value = 1) -> Complex:
    prod = bmm(a, b) * alpha if alpha != 1 else bmm(a, b)
    if beta == 0:
        return prod
    return prod + (Complex.lift(x) * beta if beta != 1 else x)


def _unary(name: str, method: str) -> None:
    COMPLEX_LOWERINGS[f"{name}.default"] = Lowering(lambda x: getattr(Complex.lift(x), method)(), True)


for _n in ("sin", "cos", "tan", "sinh", "cosh", "tanh", "sigmoid", "isinf", "isfinite"):
    _unary(_n, _n)


@lowers_complex("rsqrt.default", pointwise=True)
def rsqrt(x: Complex) -> Complex:
    return 1.0 / x.sqrt()


COMPLEX_LOWERINGS["log2.default"] = Lowering(lambda x: x.log() * (1 / math.log(2)), True)
COMPLEX_LOWERINGS["log10.default"] = Lowering(lambda x: x.log() * (1 / math.log(10)), True)
COMPLEX_LOWERINGS["exp2.default"] = Lowering(lambda x: (x * math.log(2)).exp(), True)


@lowers_complex("pow.Tensor_Tensor", "pow.Tensor_Scalar", "pow.Scalar", pointwise=True)
def pow_(a: Value, b: Value) -> Complex:
    return Complex.lift(a).pow(b)


@lowers_complex("addcmul.default", pointwise=True)
def addcmul(x: Value, a: Value, b: Value, *, value: Value = 1) -> Complex:
    return Complex.lift(x) + Complex.lift(a) * b * value


@lowers_complex("addcdiv.default", pointwise=True)
def addcdiv(x: Value, a: Value, b: Value, *, value: Value = 1) -> Complex:
    return Complex.lift(x) + Complex.lift(a) / b * value


@lowers_complex("lerp.Scalar", "lerp.Tensor", pointwise=True)
def lerp(a: Value, b: Value, w: Value) -> Complex:
    a = Complex.lift(a)
    return a + (Complex.lift(b) - a) * w


@lowers_complex("normal_functional.default")
def normal(x: Complex, mean: float = 0.0, std: float = 1.0, *, generator: torch.Generator | None = None) -> Complex:
    """As torch: each part is N(mean, std^2 / 2)."""
    from .random import standard_normal
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    n = standard_normal((*x.shape, 2), x.dtype, generator) * (std / math.sqrt(2)) + mean
    bounds = [(0, s) for s in x.shape]
    return Complex(n.shrink([*bounds, (0, 1)]).reshape(x.shape), n.shrink([*bounds, (1, 2)]).reshape(x.shape))


@lowers_complex("mv.default")
def mv(a: Value, b: Value) -> Complex:
    return _product("mv.default", a, b)


@lowers_complex("addmv.default")
def addmv(x: Value, a: Value, b: Value, *, beta: Value = 1, alpha: Value = 1) -> Complex:
    prod = mv(a, b) * alpha if alpha != 1 else mv(a, b)
    if beta == 0:
        return prod
    return prod + (Complex.lift(x) * beta if beta != 1 else x)


@lowers_complex("addbmm.default")
def addbmm(x: Value, a: Value, b: Value, *, beta: Value = 1, alpha: Value = 1) -> Complex:
    p = bmm(a, b)
    prod = Complex(p.re.sum(0), p.im.sum(0))
    prod = prod * alpha if alpha != 1 else prod
    if beta == 0:
        return prod
    return prod + (Complex.lift(x) * beta if beta != 1 else x)


@lowers_complex("square.default", pointwise=True)
def square(x: Complex) -> Complex:
    return x * x


def _nonzero(x: Value) -> Lazy:
    c = Complex.lift(x)
    return (c.re != 0) | (c.im != 0)


@lowers_complex("logical_not.default")
def logical_not(x: Value) -> Lazy:
    return _nonzero(x).logical_not()


def _on_nonzero(name: str) -> Lowering:
    """any/all of a complex tensor: the real reduction of its nonzero mask."""
    return Lowering(lambda x, *a, **k: LOWERINGS[name].fn(_nonzero(x), *a, **k))


for _n in ("any.default", "any.dim", "any.dims", "all.default", "all.dim", "all.dims"):
    COMPLEX_LOWERINGS[_n] = _on_nonzero(_n)


@lowers_complex("var.correction")
def var(x: Complex, *args: Any, **kwargs: Any) -> Lazy:
    """The variance of a complex tensor is that of its real parts plus that of its imaginary parts."""
    f = LOWERINGS["var.correction"].fn
    return f(x.re, *args, **kwargs) + f(x.im, *args, **kwargs)


@lowers_complex("std.correction")
def std(x: Complex, *args: Any, **kwargs: Any) -> Lazy:
    return var(x, *args, **kwargs).sqrt()


def _scatter_reduce_add(name: str, values: tuple[int | str, ...]) -> Lowering:
    """scatter with reduce="add" is linear (the other reduction, multiply, is not implemented)."""
    linear = _linear(name, values)

    def fn(*args: Any, reduce: str, **kwargs: Any) -> Complex:
        if reduce != "add":
            raise UnsupportedDtype(f"toony has no kernel for {name} reduce={reduce!r} with a complex dtype")
        return linear(*args, reduce=reduce, **kwargs)
    return Lowering(fn)


COMPLEX_LOWERINGS["scatter.reduce"] = _scatter_reduce_add("scatter.reduce", (0, 3, "src"))
COMPLEX_LOWERINGS["scatter.value_reduce"] = _scatter_reduce_add("scatter.value_reduce", (0, 3, "value"))
