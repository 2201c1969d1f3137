"""The lowering table: ATen overloads -> toony_core lazy operations.

One table serves both paths: the eager device registers each entry as the PrivateUse1 kernel of the
overload (and of its in-place and out= twins), and the compile backend runs ATen graphs through the same
functions on lazy values. A lowering takes the overload's arguments with every tensor replaced by a lazy
toony_core Tensor and returns lazy results; torch's own meta kernels supply output dtypes and shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from toony_core import Tensor, dtypes
from toony_core.dtype import min_max
from toony_core.uop import Ops

from .dtypes import to_toony


@dataclass(frozen=True)
class Lowering:
    fn: Callable[..., Any]
    pointwise: bool = False  # cast every tensor argument to the compute dtype first
    compare: bool = False  # compute dtype is the promoted input dtype, not the (bool) output dtype

    def compute_dtype(self, args: tuple, kwargs: dict, meta: Any) -> torch.dtype:
        if self.compare:
            vals = [a for a in args if isinstance(a, (torch.Tensor, bool, int, float))]
            return torch.result_type(*vals[:2]) if len(vals) >= 2 else vals[0].dtype
        # torch computes a 16-bit float op in float32 and rounds its result once (its "opmath" type)
        return torch.float32 if meta.dtype in (torch.float16, torch.bfloat16) else meta.dtype


LOWERINGS: dict[str, Lowering] = {}


def lowers(*names: str, pointwise: bool = False, compare: bool = False) -> Callable:
    def deco(fn: Callable) -> Callable:
        for n in names:
            LOWERINGS[n] = Lowering(fn, pointwise, compare)
        return fn
    return deco


Scalar = bool | int | float


def _dims(dim: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted({d % max(ndim, 1) for d in dims})) if ndim else ()


# ---------------------------------------------------------------- pointwise

@lowers("add.Tensor", "add.Scalar", pointwise=True)
def add(a: Tensor, b: Tensor | Scalar, alpha: Scalar = 1) -> Tensor:
    return a + (b * alpha if alpha != 1 else b)


@lowers("sub.Tensor", "sub.Scalar", pointwise=True)
def sub(a: Tensor, b: Tensor | Scalar, alpha: Scalar = 1) -> Tensor:
    return a - (b * alpha if alpha != 1 else b)


@lowers("rsub.Tensor", "rsub.Scalar", pointwise=True)
def rsub(a: Tensor, b: Tensor | Scalar, alpha: Scalar = 1) -> Tensor:
    return sub(b, a, alpha) if isinstance(b, Tensor) else (b - a * alpha if alpha != 1 else b - a)


@lowers("mul.Tensor", "mul.Scalar", pointwise=True)
def mul(a: Tensor | Scalar, b: Tensor | Scalar) -> Tensor:
    if not isinstance(a, Tensor):  # a wrapped Python scalar as self (torch.mul(2, t))
        a, b = b, a
    return a & b if a.dtype == dtypes.bool and (isinstance(b, bool) or getattr(b, "dtype", None) == dtypes.bool) \
        else a * b


@lowers("div.Tensor", "div.Scalar", pointwise=True)
def div(a: Tensor, b: Tensor | Scalar) -> Tensor:
    return a / b


@lowers("div.Tensor_mode", "div.Scalar_mode", pointwise=True)
def div_mode(a: Tensor | Scalar, b: Tensor | Scalar, rounding_mode: str | None = None) -> Tensor:
    if not isinstance(a, Tensor):  # a wrapped Python scalar as self; b is then a tensor of the compute dtype
        a = Tensor.full((), a, b.dtype)
    if rounding_mode is None:
        return a / b
    if rounding_mode == "floor":
        return a // b
    if a.dtype.is_float:
        return (a / b).trunc()
    return a._binary(Ops.IDIV, b)  # C division truncates


@lowers("floor_divide.default", "floor_divide.Scalar", pointwise=True)
def floor_divide(a: Tensor, b: Tensor | Scalar) -> Tensor:
    return a // b


@lowers("remainder.Tensor", "remainder.Scalar", pointwise=True)
def remainder(a: Tensor, b: Tensor | Scalar) -> Tensor:
    return a % b


@lowers("remainder.Scalar_Tensor", pointwise=True)
def remainder_scalar_tensor(a: Scalar, b: Tensor) -> Tensor:
    return Tensor.full(b.shape, a, b.dtype) % b


@lowers("fmod.Tensor", "fmod.Scalar", pointwise=True)
def fmod(a: Tensor, b: Tensor | Scalar) -> Tensor:
    return a.fmod(b)


@lowers("pow.Tensor_Tensor", "pow.Tensor_Scalar", pointwise=True)
def pow_(a: Tensor, b: Tensor | Scalar) -> Tensor:
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        if b == 2:
            return a * a
        if b == 1:
            return a
        if b == 0.5 and a.dtype.is_float:
            return a.sqrt()
    return a ** b


@lowers("pow.Scalar", pointwise=True)
def pow_scalar(a: Scalar, b: Tensor) -> Tensor:
    return b.pow(a, reverse=True)


@lowers("atan2.default", pointwise=True)
def atan2(a: Tensor, b: Tensor) -> Tensor:
    return a.atan2(b)


@lowers("signbit.default")
def signbit(x: Tensor) -> Tensor:
    if not x.dtype.is_float:
        return x < 0
    bits = {2: dtypes.int16, 4: dtypes.int32, 8: dtypes.int64}[x.dtype.itemsize]
    return x.bitcast(bits) < 0  # -0.0 and negative nans have the sign bit set too


@lowers("maximum.default", pointwise=True)
def maximum(a: Tensor, b: Tensor) -> Tensor:
    return a.maximum(b)


@lowers("minimum.default", pointwise=True)
def minimum(a: Tensor, b: Tensor) -> Tensor:
    return a.minimum(b)


for _name, _fn in [("eq", Tensor.__eq__), ("ne", Tensor.__ne__), ("lt", Tensor.__lt__), ("le", Tensor.__le__),
                   ("gt", Tensor.__gt__), ("ge", Tensor.__ge__)]:
    lowers(f"{_name}.Tensor", f"{_name}.Scalar", pointwise=True, compare=True)(
        lambda a, b, _f=_fn: _f(a, b))

for _name, _fn in [("logical_and", Tensor.logical_and), ("logical_or", Tensor.logical_or),
                   ("logical_xor", Tensor.logical_xor)]:
    lowers(f"{_name}.default")(lambda a, b, _f=_fn: _f(a, b))


@lowers("fmax.default", pointwise=True)
def fmax(a: Tensor, b: Tensor) -> Tensor:
    """maximum that ignores a NaN operand (NaN only when both are)."""
    return a.maximum(b) if not a.dtype.is_float else (a != a).where(b, (b != b).where(a, a.maximum(b)))


@lowers("fmin.default", pointwise=True)
def fmin(a: Tensor, b: Tensor) -> Tensor:
    return a.minimum(b) if not a.dtype.is_float else (a != a).where(b, (b != b).where(a, a.minimum(b)))


@lowers("hypot.default", pointwise=True)
def hypot(a: Tensor, b: Tensor) -> Tensor:
    """sqrt(a^2 + b^2) without overflow or underflow in between, as C's hypot: the larger magnitude times
    sqrt(1 + ratio^2); an infinite operand gives inf even beside a NaN."""
    x, y = a.abs(), b.abs()
    big, small = x.maximum(y), x.minimum(y)
    ratio = small / big
    out = (big == 0).where(0.0, big * (ratio * ratio + 1).sqrt())
    return ((x == math.inf) | (y == math.inf)).where(math.inf, out)


@lowers("logit_backward.default", pointwise=True)
def logit_backward(grad: Tensor, x: Tensor, eps: float | None = None) -> Tensor:
    """d/dx log(x / (1 - x)) = 1 / (x (1 - x)); outside [0, 1] (no eps) NaN, outside [eps, 1 - eps] 0."""
    slope = grad / (x * (1 - x))
    if eps is None or eps < 0:
        return ((x < 0) | (x > 1)).where(math.nan, slope)
    return ((x < eps) | (x > 1 - eps)).where(0.0, slope)


@lowers("hardshrink_backward.default", "softshrink_backward.default", pointwise=True)
def shrink_backward(grad: Tensor, x: Tensor, lambd: Scalar) -> Tensor:
    """Both shrinks pass the gradient where |x| > lambd and stop it inside [-lambd, lambd]."""
    return ((x >= -lambd) & (x <= lambd)).where(0.0, grad)


@lowers("logical_not.default")
def logical_not(a: Tensor) -> Tensor:
    return a.logical_not()


for _name, _fn in [("bitwise_and", Tensor.__and__), ("bitwise_or", Tensor.__or__),
                   ("bitwise_xor", Tensor.__xor__), ("bitwise_left_shift", Tensor.__lshift__),
                   ("bitwise_right_shift", Tensor.__rshift__)]:
    lowers(f"{_name}.Tensor", f"{_name}.Scalar", f"{_name}.Tensor_Scalar", pointwise=True)(
        lambda a, b, _f=_fn: _f(a, b))


@lowers("bitwise_not.default", pointwise=True)
def bitwise_not(a: Tensor) -> Tensor:
    return a.logical_not() if a.dtype == dtypes.bool else ~a


def _torch_sign(x: Tensor) -> Tensor:
    """torch's sign: NaN gives 0 (numpy's, which toony_core follows, keeps NaN)."""
    if x.dtype.is_float:
        return (x > 0).cast(x.dtype) - (x < 0).cast(x.dtype)
    return x.sign()


_UNARY: dict[str, Callable[[Tensor], Tensor]] = {
    "neg": Tensor.neg, "abs": Tensor.abs, "exp": Tensor.exp, "exp2": Tensor.exp2, "log": Tensor.log,
    "log2": Tensor.log2, "sqrt": Tensor.sqrt, "rsqrt": Tensor.rsqrt, "reciprocal": Tensor.reciprocal,
    "sin": Tensor.sin, "cos": Tensor.cos, "tan": Tensor.tan, "tanh": Tensor.tanh, "erf": Tensor.erf,
    "sigmoid": Tensor.sigmoid, "floor": Tensor.floor, "ceil": Tensor.ceil, "trunc": Tensor.trunc,
    "sign": _torch_sign, "sgn": _torch_sign, "relu": Tensor.relu,
    "asin": Tensor.asin, "acos": Tensor.acos, "atan": Tensor.atan, "sinh": Tensor.sinh, "cosh": Tensor.cosh,
    "asinh": Tensor.asinh, "acosh": Tensor.acosh, "atanh": Tensor.atanh, "lgamma": Tensor.lgamma,
    "expm1": Tensor.expm1, "log1p": Tensor.log1p,
    "log10": lambda x: x.log() * (1 / math.log(10)),
    "erfc": lambda x: 1 - x.erf(),
    "silu": lambda x: x * x.sigmoid(),
    "frac": lambda x: x - x.trunc(),
    "square": lambda x: x * x,
    "round": lambda x: _round_half_even(x),
}
for _name, _fn in _UNARY.items():
    lowers(f"{_name}.default", pointwise=True)(lambda a, _f=_fn: _f(a))


def _round_half_even(x: Tensor) -> Tensor:
    if not x.dtype.is_float:
        return x
    r = (x + 0.5).floor()
    tie = (r - x) == 0.5
    return (tie & ((r % 2) != 0)).where(r - 1, r)


@lowers("gelu.default", pointwise=True)
def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate == "tanh":
        return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)).tanh())
    return 0.5 * x * (1 + (x * (1 / math.sqrt(2))).erf())


@lowers("leaky_relu.default", pointwise=True)
def leaky_relu(x: Tensor, negative_slope: Scalar = 0.01) -> Tensor:
    return (x > 0).where(x, x * negative_slope)


@lowers("hardtanh.default", pointwise=True)
def hardtanh(x: Tensor, min_val: Scalar = -1, max_val: Scalar = 1) -> Tensor:
    return x.clip(min_val, max_val)


@lowers("clamp.default", pointwise=True)
def clamp(x: Tensor, min: Scalar | None = None, max: Scalar | None = None) -> Tensor:  # noqa: A002 - torch's names
    out = x if min is None else (x < min).where(min, x) if x.dtype.is_float else x.maximum(min)
    if x.dtype.is_float and min is not None:
        out = (x != x).where(x, out)  # nan stays nan
    if max is not None:
        out = (out > max).where(max, out)
    return out


@lowers("clamp.Tensor", pointwise=True)
def clamp_tensor(x: Tensor, min: Tensor | None = None, max: Tensor | None = None) -> Tensor:  # noqa: A002
    out = x if min is None else x.maximum(min)
    return out if max is None else out.minimum(max)


@lowers("clamp_min.default", pointwise=True)
def clamp_min(x: Tensor, min: Scalar) -> Tensor:  # noqa: A002
    return clamp(x, min, None)


@lowers("clamp_max.default", pointwise=True)
def clamp_max(x: Tensor, max: Scalar) -> Tensor:  # noqa: A002
    return clamp(x, None, max)


@lowers("where.self", "where.ScalarOther", "where.ScalarSelf", "where.Scalar")
def where(cond: Tensor, a: Tensor | Scalar, b: Tensor | Scalar) -> Tensor:
    return cond.where(a, b)


@lowers("masked_fill.Scalar", "masked_fill.Tensor")
def masked_fill(x: Tensor, mask: Tensor, value: Tensor | Scalar) -> Tensor:
    v = value.cast(x.dtype) if isinstance(value, Tensor) else value
    return mask.where(v, x).cast(x.dtype)


@lowers("lerp.Scalar", "lerp.Tensor", pointwise=True)
def lerp(a: Tensor, b: Tensor, w: Tensor | Scalar) -> Tensor:
    return a + (b - a) * w


@lowers("nan_to_num.default", pointwise=True)
def nan_to_num(x: Tensor, nan: float | None = None, posinf: float | None = None, neginf: float | None = None) \
        -> Tensor:
    if not x.dtype.is_float:
        return x
    big = {dtypes.float16: 65504.0, dtypes.bfloat16: 3.3895313892515355e38, dtypes.float32: 3.4028234663852886e38,
           dtypes.float64: 1.7976931348623157e308}[x.dtype]
    out = (x != x).where(0.0 if nan is None else nan, x)
    out = (out == math.inf).where(big if posinf is None else posinf, out)
    return (out == -math.inf).where(-big if neginf is None else neginf, out)


@lowers("fill.Scalar")
def fill(x: Tensor, value: Scalar) -> Tensor:
    return Tensor.full(x.shape, value, x.dtype)


@lowers("fill.Tensor")
def fill_tensor(x: Tensor, value: Tensor) -> Tensor:
    return value.cast(x.dtype).reshape(()).expand(x.shape) if x.shape else value.cast(x.dtype).reshape(())


@lowers("zero.default")
def zero(x: Tensor) -> Tensor:
    return Tensor.full(x.shape, 0, x.dtype)


@lowers("clone.default")
def clone(x: Tensor, memory_format: Any = None) -> Tensor:
    return x


# ---------------------------------------------------------------- reductions

def _reduce_dtype(x: Tensor, dtype: torch.dtype | None) -> Tensor:
    return x if dtype is None else x.cast(to_toony(dtype))


@lowers("sum.default")
def sum_all(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return _reduce_dtype(x, dtype).sum()


@lowers("sum.dim_IntList")
def sum_dim(x: Tensor, dim: Sequence[int] | None, keepdim: bool = False, dtype: torch.dtype | None = None) -> Tensor:
    return _reduce_dtype(x, dtype).sum(_dims(dim, x.ndim), keepdim)


@lowers("mean.default")
def mean_all(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return _reduce_dtype(x, dtype).mean()


@lowers("mean.dim")
def mean_dim(x: Tensor, dim: Sequence[int] | None, keepdim: bool = False, dtype: torch.dtype | None = None) \
        -> Tensor:
    return _reduce_dtype(x, dtype).mean(_dims(dim, x.ndim), keepdim)


@lowers("prod.default")
def prod_all(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return _reduce_dtype(x, dtype).prod()


@lowers("prod.dim_int")
def prod_dim(x: Tensor, dim: int, keepdim: bool = False, dtype: torch.dtype | None = None) -> Tensor:
    return _reduce_dtype(x, dtype).prod(_dims(dim, x.ndim), keepdim)


@lowers("amax.default")
def amax(x: Tensor, dim: Sequence[int] = (), keepdim: bool = False) -> Tensor:
    return x.max(_dims(dim, x.ndim), keepdim)


@lowers("amin.default")
def amin(x: Tensor, dim: Sequence[int] = (), keepdim: bool = False) -> Tensor:
    return x.min(_dims(dim, x.ndim), keepdim)


@lowers("max.default")
def max_all(x: Tensor) -> Tensor:
    return x.max()


@lowers("min.default")
def min_all(x: Tensor) -> Tensor:
    return x.min()


def _arg_extreme(x: Tensor, dim: int | None, keepdim: bool, largest: bool) -> Tensor:
    """The first index of the max (min) along dim; nan counts as the extreme, as in torch."""
    if dim is None:
        flat = x.reshape(x.numel())
        out = _arg_extreme(flat, 0, False, largest)
        return out.reshape((1,) * x.ndim) if keepdim else out
    dim = dim % max(x.ndim, 1)
    if x.ndim == 0:
        return Tensor.full((), 0, dtypes.int64)
    m = x.max(dim, keepdim=True) if largest else x.min(dim, keepdim=True)
    hit = x == m
    if x.dtype.is_float:
        hit = hit | ((x != x) & (m != m))
    n = x.shape[dim]
    pos = Tensor.arange(n).reshape([n if i == dim else 1 for i in range(x.ndim)]).expand(x.shape)
    return hit.where(pos, n).min(dim, keepdim)


@lowers("argmax.default")
def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return _arg_extreme(x, dim, keepdim, True)


@lowers("argmin.default")
def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return _arg_extreme(x, dim, keepdim, False)


@lowers("max.dim")
def max_dim(x: Tensor, dim: int, keepdim: bool = False) -> tuple[Tensor, Tensor]:
    return x.max(_dims(dim, x.ndim), keepdim), _arg_extreme(x, dim, keepdim, True)


@lowers("min.dim")
def min_dim(x: Tensor, dim: int, keepdim: bool = False) -> tuple[Tensor, Tensor]:
    return x.min(_dims(dim, x.ndim), keepdim), _arg_extreme(x, dim, keepdim, False)


@lowers("any.default", "any.dim", "any.dims")
def any_(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
    return (x != 0).max(_dims(dim, x.ndim), keepdim) if x.numel() else \
        Tensor.full(_kept(x, dim, keepdim), False, dtypes.bool)


@lowers("all.default", "all.dim", "all.dims")
def all_(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
    return (x != 0).min(_dims(dim, x.ndim), keepdim) if x.numel() else \
        Tensor.full(_kept(x, dim, keepdim), True, dtypes.bool)


def _kept(x: Tensor, dim: Any, keepdim: bool) -> tuple[int, ...]:
    axes = _dims(dim, x.ndim)
    return tuple(1 if i in axes else s for i, s in enumerate(x.shape) if keepdim or i not in axes)


@lowers("var.correction")
def var(x: Tensor, dim: Sequence[int] | None = None, *, correction: Scalar | None = None, keepdim: bool = False) \
        -> Tensor:
    axes = _dims(dim, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    xf = x.cast(x.dtype if x.dtype.is_float else dtypes.float32)
    dev = xf - xf.mean(axes, keepdim=True)
    denom = max(n - (1 if correction is None else correction), 0)
    return (dev * dev).sum(axes, keepdim) / denom if denom else (dev * dev).sum(axes, keepdim) * math.nan


@lowers("var_mean.correction")
def var_mean(x: Tensor, dim: Sequence[int] | None = None, *, correction: Scalar | None = None,
             keepdim: bool = False) -> tuple[Tensor, Tensor]:
    return var(x, dim, correction=correction, keepdim=keepdim), x.mean(_dims(dim, x.ndim), keepdim)


@lowers("std.correction")
def std(x: Tensor, dim: Sequence[int] | None = None, *, correction: Scalar | None = None, keepdim: bool = False) \
        -> Tensor:
    return var(x, dim, correction=correction, keepdim=keepdim).sqrt()


@lowers("logsumexp.default")
def logsumexp(x: Tensor, dim: Sequence[int], keepdim: bool = False) -> Tensor:
    axes = _dims(dim, x.ndim)
    xf = x.cast(x.dtype if x.dtype.is_float else dtypes.float32)
    if any(x.shape[a] == 0 for a in axes):  # the log of an empty sum
        return Tensor.full(_kept(x, axes, keepdim), -math.inf, xf.dtype)
    m = xf.max(axes, keepdim=True)
    m = (m.abs() == math.inf).where(0.0, m)
    out = (xf - m).exp().sum(axes, keepdim=True).log() + m
    return out if keepdim else out.reshape(_kept(x, axes, False))


def _scan(x: Tensor, dim: int, op: Callable[[Tensor, Tensor], Tensor], identity: Scalar) -> Tensor:
    """Inclusive scan of one tensor along dim (see _scan_many)."""
    return _scan_many([x], dim, lambda a, b: [op(a[0], b[0])], [identity])[0]


def _scan_many(xs: list[Tensor], dim: int, op: Callable[[list[Tensor], list[Tensor]], list[Tensor]],
               identities: list[Scalar]) -> list[Tensor]:
    """Inclusive scan of same-shaped tensors carried together (a value and its index) along dim, in log2(n)
    steps (Hillis-Steele): each step combines every element with the one 2^k back, op(earlier, later); op
    must be associative and leave `later` unchanged when `earlier` is the identity."""
    x = xs[0]
    dim = dim % max(x.ndim, 1)
    if x.ndim == 0:
        return xs
    n, step = x.shape[dim], 1
    while step < n:
        pads = [(step, 0) if i == dim else (0, 0) for i in range(x.ndim)]
        window = [(0, n) if i == dim else (0, s) for i, s in enumerate(x.shape)]
        earlier = [t.pad(pads, v).shrink(window) for t, v in zip(xs, identities)]
        xs = [t.contiguous() for t in op(earlier, xs)]
        step *= 2
    return xs


def _scan_in(x: Tensor, dtype: torch.dtype | None, op: Callable[[Tensor, Tensor], Tensor], identity: Scalar,
             dim: int) -> Tensor:
    """A scan in torch's accumulation type: int64 for integers, float32 for 16-bit floats (rounded once)."""
    x = _reduce_dtype(x, dtype)
    if dtype is None and not x.dtype.is_float:
        x = x.cast(dtypes.int64)
    if x.dtype in (dtypes.float16, dtypes.bfloat16):
        return _scan(x.cast(dtypes.float32), dim, op, identity).cast(x.dtype)
    return _scan(x, dim, op, identity)


@lowers("cumsum.default")
def cumsum(x: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    return _scan_in(x, dtype, lambda a, b: a + b, 0, dim)


@lowers("cumprod.default")
def cumprod(x: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    return _scan_in(x, dtype, lambda a, b: a * b, 1, dim)


@lowers("cummax.default")
def cummax(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    return _cumulative_extreme(x, dim, Tensor.__ge__)


@lowers("cummin.default")
def cummin(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    return _cumulative_extreme(x, dim, Tensor.__le__)


def _cumulative_extreme(x: Tensor, dim: int, at_least: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Running max (or min) and the index where it was reached, as the CPU's loop keeps them: a later element
    takes over when it is NaN or at least as extreme (ties go to the later index; a NaN sticks)."""
    if x.ndim == 0:
        return x, Tensor.full((), 0, dtypes.int64)
    n = x.shape[dim % x.ndim]
    index = Tensor.arange(n, dtype=dtypes.int64).reshape([n if i == dim % x.ndim else 1 for i in range(x.ndim)])
    index = index._broadcast_to(x.shape)

    def combine(earlier: list[Tensor], later: list[Tensor]) -> list[Tensor]:
        take = at_least(later[0], earlier[0])
        if x.dtype.is_float:
            take = take | (later[0] != later[0])
            take = take & ((earlier[0] == earlier[0]) | (later[0] != later[0]))
        return [take.where(later[0], earlier[0]), take.where(later[1], earlier[1])]

    lowest, highest = min_max(x.dtype)
    identity = lowest if at_least is Tensor.__ge__ else highest
    values, indices = _scan_many([x, index], dim, combine, [identity, 0])
    return values, indices


# meta kernels for ATen ops that have none (eager toony computes every output's shape on the meta device first)
META_LIB = torch.library.Library("aten", "IMPL")  # noqa: TOR901 - implementing existing aten ops
META_LIB.impl("_logcumsumexp", lambda x, dim: torch.empty_like(x), "Meta")


@lowers("_logcumsumexp.default")
def logcumsumexp(x: Tensor, dim: int) -> Tensor:
    """log(cumsum(exp(x))) without overflow: a scan of log-add-exp, computed wider than x."""
    def log_add_exp(earlier: list[Tensor], later: list[Tensor]) -> list[Tensor]:
        a, b = earlier[0], later[0]
        hi, lo = a.maximum(b), a.minimum(b)
        # equal infinities stay themselves (inf - inf would be NaN); everything else is hi + log1p(exp(lo - hi))
        same_inf = (a == b) & ((a == math.inf) | (a == -math.inf))
        return [same_inf.where(a, hi + (lo - hi).exp().log1p())]

    from toony_core import device
    wide = x.cast(dtypes.float32) if x.dtype in (dtypes.float16, dtypes.bfloat16) else x
    if wide.dtype == dtypes.float32 and device().supports_fp64:
        wide = wide.cast(dtypes.float64)  # log2(n) roundings per element instead of the CPU loop's one: widen
    return _scan_many([wide], dim, log_add_exp, [-math.inf])[0].cast(x.dtype)


# ---------------------------------------------------------------- linear algebra

def _wide(x: Tensor) -> Tensor:
    """16-bit floats in float32: torch's CPU matmuls sum their products in float32 and round once at the end."""
    return x.cast(dtypes.float32) if x.dtype in (dtypes.float16, dtypes.bfloat16) else x


@lowers("mm.default", "bmm.default")
def mm(a: Tensor, b: Tensor) -> Tensor:
    return (_wide(a) @ _wide(b)).cast(a.dtype)


@lowers("mv.default")
def mv(a: Tensor, v: Tensor) -> Tensor:
    return (_wide(a) @ _wide(v)).cast(a.dtype)


@lowers("dot.default", "vdot.default")
def dot(a: Tensor, b: Tensor) -> Tensor:
    return (_wide(a) * _wide(b)).sum().cast(a.dtype)


@lowers("addmm.default", "baddbmm.default")
def addmm(bias: Tensor, a: Tensor, b: Tensor, *, beta: Scalar = 1, alpha: Scalar = 1) -> Tensor:
    # 16-bit: beta * bias + alpha * (a @ b) all in float32, rounded once (the CPU's addmm/baddbmm)
    prod = _wide(a) @ _wide(b)
    if alpha != 1:
        prod = prod * alpha
    if beta == 0:
        return prod.cast(a.dtype)
    wb = _wide(bias)
    return ((wb * beta if beta != 1 else wb) + prod).cast(a.dtype)


@lowers("addbmm.default")
def addbmm(bias: Tensor, a: Tensor, b: Tensor, *, beta: Scalar = 1, alpha: Scalar = 1) -> Tensor:
    return addmm(bias, a.permute(1, 0, 2).reshape(a.shape[1], a.shape[0] * a.shape[2]),
                 b.reshape(b.shape[0] * b.shape[1], b.shape[2]), beta=beta, alpha=alpha)


@lowers("addmv.default")
def addmv(bias: Tensor, a: Tensor, v: Tensor, *, beta: Scalar = 1, alpha: Scalar = 1) -> Tensor:
    return addmm(bias, a, v, beta=beta, alpha=alpha)


# ---------------------------------------------------------------- softmax

@lowers("_softmax.default")
def softmax(x: Tensor, dim: int, half_to_float: bool = False) -> Tensor:
    xf = x.cast(dtypes.float32) if x.dtype in (dtypes.float16, dtypes.bfloat16) else x
    if x.numel() == 0:
        return xf
    m = xf.max(dim, keepdim=True)
    e = (xf - m).exp()
    return e / e.sum(dim, keepdim=True)


@lowers("_log_softmax.default")
def log_softmax(x: Tensor, dim: int, half_to_float: bool = False) -> Tensor:
    xf = x.cast(dtypes.float32) if x.dtype in (dtypes.float16, dtypes.bfloat16) else x
    if x.numel() == 0:
        return xf
    shifted = xf - xf.max(dim, keepdim=True)
    return shifted - shifted.exp().sum(dim, keepdim=True).log()


@lowers("_softmax_backward_data.default")
def softmax_backward(grad: Tensor, out: Tensor, dim: int, input_dtype: torch.dtype) -> Tensor:
    g = grad * out
    return g - out * g.sum(dim, keepdim=True)


@lowers("_log_softmax_backward_data.default")
def log_softmax_backward(grad: Tensor, out: Tensor, dim: int, input_dtype: torch.dtype) -> Tensor:
    return grad - out.exp() * grad.sum(dim, keepdim=True)


# ---------------------------------------------------------------- shapes and indexing

@lowers("cat.default")
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    ts = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]  # torch skips legacy empty (0,) inputs
    if not ts:
        return tensors[0]
    dim = dim % ts[0].ndim
    total = sum(t.shape[dim] for t in ts)
    out, start = None, 0
    from toony_core.dtype import promote
    dt = ts[0].dtype
    for t in ts[1:]:
        dt = promote(dt, t.dtype)
    for t in ts:
        n = t.shape[dim]
        padded = t.cast(dt).pad([(start, total - start - n) if i == dim else (0, 0) for i in range(t.ndim)])
        out = padded if out is None else out + padded
        start += n
    return out


@lowers("roll.default")
def roll(x: Tensor, shifts: Sequence[int], dims: Sequence[int] = ()) -> Tensor:
    if not dims:  # roll the flattened tensor
        return roll(x.reshape(x.numel()), shifts, [0]).reshape(x.shape)
    for shift, d in zip(shifts, dims):
        d %= x.ndim
        n = x.shape[d]
        if n == 0 or shift % n == 0:
            continue
        cut = n - shift % n
        x = cat([_slice(x, d, cut, n), _slice(x, d, 0, cut)], d)
    return x


def _slice(x: Tensor, dim: int, lo: int, hi: int) -> Tensor:
    return x.shrink([(lo, hi) if i == dim else (0, s) for i, s in enumerate(x.shape)])


@lowers("constant_pad_nd.default")
def constant_pad_nd(x: Tensor, pad: Sequence[int], value: Scalar = 0) -> Tensor:
    pads = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        pads[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    # negative padding crops
    crop = [(max(-b, 0), s - max(-a, 0)) for (b, a), s in zip(pads, x.shape)]
    x = x.shrink(crop)
    return x.pad([(max(b, 0), max(a, 0)) for b, a in pads], value)


@lowers("flip.default")
def flip(x: Tensor, dims: Sequence[int]) -> Tensor:
    return x.flip(_dims(dims, x.ndim)) if len(dims) else x


@lowers("gather.default")
def gather(x: Tensor, dim: int, index: Tensor, sparse_grad: bool = False) -> Tensor:
    if index.numel() == 0:  # torch checks no dims against an empty index: the result is empty, index-shaped
        return Tensor.zeros(index.shape, x.dtype)
    if x.ndim == 0:
        return x.reshape(()) if index.ndim == 0 else x.expand(index.shape)
    return x.gather(dim, index)


@lowers("index_select.default")
def index_select(x: Tensor, dim: int, index: Tensor) -> Tensor:
    if x.ndim == 0:
        return x
    dim = dim % x.ndim
    idx = index.reshape(index.numel()) if index.ndim else index.reshape(1)
    shape = list(x.shape)
    shape[dim] = idx.shape[0]
    full = idx.reshape([idx.shape[0] if i == dim else 1 for i in range(x.ndim)]).expand(tuple(shape))
    return x.gather(dim, full)


@lowers("embedding.default")
def embedding(weight: Tensor, indices: Tensor, padding_idx: int = -1, scale_grad_by_freq: bool = False,
              sparse: bool = False) -> Tensor:
    rows = index_select(weight, 0, indices.reshape(indices.numel()))
    return rows.reshape(*indices.shape, weight.shape[1])


@lowers("scatter.src", "scatter.value")
def scatter(x: Tensor, dim: int, index: Tensor, src: Tensor | Scalar) -> Tensor:
    if index.numel() == 0:  # nothing written (torch checks no dims against an empty index)
        return x
    return x.scatter(dim, index, src) if x.ndim else (src if isinstance(src, Tensor) else Tensor.full((), src, x.dtype))


@lowers("scatter_add.default")
def scatter_add(x: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    if x.dtype in (dtypes.float16, dtypes.bfloat16):  # the CPU adds 16-bit floats in float32, rounding once
        return scatter_add(x.cast(dtypes.float32), dim, index, src.cast(dtypes.float32)).cast(x.dtype)
    if index.numel() == 0:
        return x
    return x.scatter(dim, index, src, reduce="add") if x.ndim else x + src


def _broadcast_indices(x: Tensor, indices: Sequence[Tensor | None]) -> tuple[Tensor, tuple[int, ...], int]:
    """Flat positions in x for advanced indexing x[indices] (torch.index semantics), the result shape, and
    where the indexed dims land."""
    idx = list(indices) + [None] * (x.ndim - len(indices))
    if any(t is not None and t.dtype == dtypes.bool for t in idx):
        raise NotImplementedError("boolean mask indexing needs data-dependent shapes")
    expanded: list[Tensor | None] = idx
    tensor_dims = [i for i, t in enumerate(expanded) if t is not None]
    from toony_core.tensor import _broadcast_shape
    bshape = _broadcast_shape(*[expanded[i].shape for i in tensor_dims])
    contiguous = tensor_dims == list(range(tensor_dims[0], tensor_dims[-1] + 1))
    before = [d for d in range(x.ndim) if expanded[d] is None and d < tensor_dims[0]] if contiguous else []
    after = [d for d in range(x.ndim) if expanded[d] is None and d not in before]
    out_shape = tuple(x.shape[d] for d in before) + bshape + tuple(x.shape[d] for d in after)
    nb = len(bshape)
    from toony_core.helpers import strides_for
    strides = strides_for(x.shape)
    flat = None

    def place(t: Tensor, at: int) -> Tensor:  # put a tensor of shape bshape at position `at` of out_shape
        shape = [1] * len(out_shape)
        shape[at:at + nb] = list(bshape)
        return t.reshape(shape)

    pos = len(before)
    for d in tensor_dims:
        t = expanded[d].cast(dtypes.int64)
        t = (t < 0).where(t + x.shape[d], t)._broadcast_to(bshape)
        term = place(t, pos) * strides[d]
        flat = term if flat is None else flat + term
    for k, d in enumerate(before + after):
        at = k if k < len(before) else k + nb
        n = x.shape[d]
        term = Tensor.arange(n).reshape([n if i == at else 1 for i in range(len(out_shape))]) * strides[d]
        flat = flat + term
    return flat._broadcast_to(out_shape), out_shape, pos


@lowers("index.Tensor")
def index(x: Tensor, indices: Sequence[Tensor | None]) -> Tensor:
    flat, _, _ = _broadcast_indices(x, indices)
    return x.take(flat)


@lowers("index_put.default")
def index_put(x: Tensor, indices: Sequence[Tensor | None], values: Tensor, accumulate: bool = False) -> Tensor:
    flat, shape, _ = _broadcast_indices(x, indices)
    return x.scatter_flat(flat, values.cast(x.dtype)._broadcast_to(shape), "add" if accumulate else None)


# ---------------------------------------------------------------- misc

def arange_values(n: int, start: Scalar, step: Scalar, dt: dtypes.DType) -> Tensor:
    """start + i * step for i < n, as torch computes it: in double for float results (rounded once), in
    int64 for integer results."""
    iota = Tensor.arange(n, dtype=dtypes.int64)
    if dt.is_float:
        from toony_core import device
        acc = dtypes.float64 if dt == dtypes.float64 or device().supports_fp64 else dtypes.float32
        return (iota.cast(acc) * step + start).cast(dt)
    return (iota * int(step) + int(start)).cast(dt)


@lowers("tril.default")
def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    return _triangle(x, diagonal, lower=True)


@lowers("triu.default")
def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    return _triangle(x, diagonal, lower=False)


def _triangle(x: Tensor, diagonal: int, lower: bool) -> Tensor:
    r, c = x.shape[-2], x.shape[-1]
    rows = Tensor.arange(r).reshape(r, 1)
    cols = Tensor.arange(c).reshape(1, c)
    keep = (cols - rows <= diagonal) if lower else (cols - rows >= diagonal)
    return keep._broadcast_to(x.shape).where(x, Tensor.full((), 0, x.dtype))


# the other lowering modules add their entries to LOWERINGS when imported
from . import lowering_conv, lowering_nn  # noqa: E402, F401
