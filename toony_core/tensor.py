"""The lazy front end: a Tensor is a UOp graph plus a shape; nothing runs until it is realized."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .dtype import (
    DType,
    bf16_bits_to_float32,
    dtypes,
    float32_to_bf16_bits,
    promote,
    result_dtype_with_scalar,
    scalar_dtype,
)
from .helpers import normalize_axes, prod, strides_for
from .runtime import Buffer
from .uop import REDUCE_IDENTITY, Ops, UOp

Scalar = bool | int | float
Shape = tuple[int, ...]

# a reduction over more elements than this, into few outputs, runs as two kernels: partial sums in
# parallel, then a reduction of the partials (more parallel work, and blocked summation is more accurate).
# Below it one kernel does it (a training step's loss of 256k elements: one launch fewer; 1M floats measured
# no slower in one kernel on PoCL)
SPLIT_REDUCE_MIN = 1 << 20
SPLIT_REDUCE_CHUNKS = 256

# scatter_flat's reduce names -> the accumulate op of its ASSIGN (None overwrites)
_SCATTER_REDUCE = {None: None, "add": Ops.ADD, "mul": Ops.MUL, "max": Ops.MAX, "min": Ops.MIN}
_scatter_ids = itertools.count()


def _broadcast_shape(*shapes: Shape) -> Shape:
    nd = max(len(s) for s in shapes)
    padded = [(1,) * (nd - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {shapes} cannot be broadcast together")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


class Tensor:
    """A lazily evaluated n-d array on the toony device."""

    __slots__ = ("uop", "__weakref__")

    def __init__(self, data: Any, dtype: DType | None = None):
        if isinstance(data, UOp):
            self.uop = data
            return
        if isinstance(data, (bool, int, float)) and not isinstance(data, np.generic):
            dt = dtype or scalar_dtype(data)
            self.uop = UOp.const(data, dt)
            return
        arr = np.asarray(data)
        if dtype is None:
            dtype = dtypes.from_np(arr.dtype) if arr.dtype != np.float64 or isinstance(data, np.ndarray) else \
                dtypes.default_float
        if dtype == dtypes.bfloat16:
            host = float32_to_bf16_bits(arr.astype(np.float32))
        else:
            host = np.ascontiguousarray(arr.astype(dtype.np, copy=False))
        buf = Buffer(host.nbytes)
        buf.copyin(host.reshape(-1).view(np.uint8) if host.size else np.zeros(0, np.uint8))
        self.uop = Tensor.from_buffer(buf, dtype, arr.size).reshape(arr.shape).uop

    # ---- construction ----
    @staticmethod
    def from_buffer(buf: Buffer, dtype: DType, numel: int | None = None) -> Tensor:
        """A 1-D tensor over the first numel elements of a device buffer (its contents at this version)."""
        n = buf.nbytes // dtype.itemsize if numel is None else numel
        return Tensor(UOp(Ops.BUFFER, dtype, (), (buf, n, buf.version)))

    @staticmethod
    def full(shape: Sequence[int], value: Scalar, dtype: DType | None = None) -> Tensor:
        t = Tensor(value, dtype or scalar_dtype(value))
        return t.reshape((1,) * len(shape)).expand(tuple(shape)) if shape else t

    @staticmethod
    def zeros(shape: Sequence[int], dtype: DType = dtypes.float32) -> Tensor:
        return Tensor.full(shape, 0, dtype)

    @staticmethod
    def ones(shape: Sequence[int], dtype: DType = dtypes.float32) -> Tensor:
        return Tensor.full(shape, 1, dtype)

    @staticmethod
    def arange(start: Scalar, stop: Scalar | None = None, step: Scalar = 1, dtype: DType | None = None) -> Tensor:
        if stop is None:
            start, stop = 0, start
        if step == 0:
            raise ValueError("arange step must not be zero")
        n = max(0, math.ceil((stop - start) / step))
        dt = dtype or (dtypes.default_float if any(isinstance(v, float) for v in (start, stop, step))
                       else dtypes.default_int)
        iota = Tensor(UOp(Ops.IOTA, dtypes.int64, (), n))
        if dt.is_float:
            compute = dtypes.float64 if dt == dtypes.float64 else dtypes.float32
            return (iota.cast(compute) * step + start).cast(dt)
        return (iota * step + start).cast(dt)

    # ---- properties ----
    @property
    def shape(self) -> Shape:
        return self.uop.shape

    @property
    def dtype(self) -> DType:
        return self.uop.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return self.uop.numel

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<Tensor {self.shape} {self.dtype}>"

    # ---- realization ----
    def realize(self) -> Tensor:
        from .realize import realize
        realize(self)
        return self

    def numpy(self) -> np.ndarray:
        t = self.contiguous().realize() if self.uop.op is not Ops.BUFFER else self
        base = t.uop
        while base.op is not Ops.BUFFER:  # realize leaves a reshape of a buffer
            base = base.src[0]
        buf, n = base.arg[0], base.arg[1]
        host_dt = np.dtype(np.uint16) if self.dtype == dtypes.bfloat16 else self.dtype.np
        out = np.empty(n, dtype=host_dt)
        buf.copyout(out.view(np.uint8))
        if self.dtype == dtypes.bfloat16:
            out = bf16_bits_to_float32(out)
        return out.reshape(self.shape)

    def item(self) -> Scalar:
        if self.numel() != 1:
            raise ValueError(f"item() needs one element, this tensor has {self.numel()}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    # ---- movement ----
    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        new = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else tuple(shape)  # type: ignore
        if new == self.uop.shape:
            return self
        if -1 in new:
            known = prod(s for s in new if s != -1)
            new = tuple(self.numel() // known if s == -1 and known else (0 if s == -1 else s) for s in new)
        if prod(new) != self.numel():
            raise ValueError(f"cannot reshape {self.shape} to {new}")
        base = self.uop.src[0] if self.uop.op is Ops.RESHAPE else self.uop  # a reshape of a reshape is one
        return Tensor(base) if new == base.shape else Tensor(UOp(Ops.RESHAPE, self.dtype, (base,), new))

    def permute(self, *order: int | Sequence[int]) -> Tensor:
        o = tuple(order[0]) if len(order) == 1 and not isinstance(order[0], int) else tuple(order)  # type: ignore
        o = tuple(a % self.ndim for a in o) if self.ndim else o
        if sorted(o) != list(range(self.ndim)):
            raise ValueError(f"permute order {o} is not a permutation of {self.ndim} axes")
        return self if o == tuple(range(self.ndim)) else Tensor(UOp(Ops.PERMUTE, self.dtype, (self.uop,), o))

    def transpose(self, a: int = 0, b: int = 1) -> Tensor:
        order = list(range(self.ndim))
        order[a], order[b] = order[b], order[a]
        return self.permute(order)

    @property
    def T(self) -> Tensor:  # noqa: N802 - numpy's name
        return self.permute(tuple(reversed(range(self.ndim))))

    def expand(self, *shape: int | Sequence[int]) -> Tensor:
        new = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else tuple(shape)  # type: ignore
        src = self.reshape((1,) * (len(new) - self.ndim) + self.shape) if len(new) > self.ndim else self
        new = tuple(s if n == -1 else n for s, n in zip(src.shape, new))
        if any(s != n and s != 1 for s, n in zip(src.shape, new)) or len(new) != src.ndim:
            raise ValueError(f"cannot expand {self.shape} to {new}")
        return src if new == src.shape else Tensor(UOp(Ops.EXPAND, self.dtype, (src.uop,), new))

    def pad(self, pads: Sequence[tuple[int, int]], value: Scalar = 0) -> Tensor:
        pads = tuple((int(b), int(a)) for b, a in pads)
        if len(pads) != self.ndim or any(b < 0 or a < 0 for b, a in pads):
            raise ValueError(f"pad needs one non-negative (before, after) per axis, got {pads}")
        if all(p == (0, 0) for p in pads):
            return self
        padded = Tensor(UOp(Ops.PAD, self.dtype, (self.uop,), pads))
        if value == 0:
            return padded
        inside = Tensor(UOp(Ops.PAD, dtypes.bool, (Tensor.full(self.shape, True).uop,), pads))
        return inside.where(padded, value)

    def shrink(self, bounds: Sequence[tuple[int, int]]) -> Tensor:
        bounds = tuple((int(s), int(e)) for s, e in bounds)
        if len(bounds) != self.ndim or any(not 0 <= s <= e <= n for (s, e), n in zip(bounds, self.shape)):
            raise ValueError(f"shrink {bounds} is out of range for shape {self.shape}")
        if all(b == (0, n) for b, n in zip(bounds, self.shape)):
            return self
        return Tensor(UOp(Ops.SHRINK, self.dtype, (self.uop,), bounds))

    def flip(self, axis: int | Sequence[int]) -> Tensor:
        axes = normalize_axes(axis, self.ndim)
        axes = tuple(a for a in axes if self.shape[a] > 1)
        return Tensor(UOp(Ops.FLIP, self.dtype, (self.uop,), axes)) if axes else self

    def as_strided(self, shape: Sequence[int], strides: Sequence[int], offset: int = 0) -> Tensor:
        """A view of this tensor's elements (taken flat, in order) with element strides and offset, as torch."""
        shape, strides = tuple(int(s) for s in shape), tuple(int(s) for s in strides)
        flat = self.reshape(self.numel()) if self.ndim != 1 else self
        if prod(shape) and offset + sum((n - 1) * s for n, s in zip(shape, strides) if s > 0) >= flat.numel():
            raise ValueError(f"as_strided {shape} {strides} +{offset} reads past {flat.numel()} elements")
        return Tensor(UOp(Ops.STRIDED, self.dtype, (flat.uop,), (shape, strides, int(offset))))

    def flatten(self) -> Tensor:
        return self.reshape(self.numel())

    def contiguous(self) -> Tensor:
        return Tensor(UOp(Ops.CONTIGUOUS, self.dtype, (self.uop,)))

    def _broadcast_to(self, shape: Shape) -> Tensor:
        return self if self.shape == shape else self.expand(shape)

    # ---- elementwise ----
    def _unary(self, op: Ops, dtype: DType | None = None) -> Tensor:
        return Tensor(UOp(op, dtype or self.dtype, (self.uop,)))

    def _operands(self, other: Tensor | Scalar, reverse: bool = False, dtype: DType | None = None) \
            -> tuple[Tensor, Tensor]:
        if isinstance(other, Tensor):
            dt = dtype or promote(self.dtype, other.dtype)
            shape = _broadcast_shape(self.shape, other.shape)
            a, b = self.cast(dt)._broadcast_to(shape), other.cast(dt)._broadcast_to(shape)
        else:
            dt = dtype or result_dtype_with_scalar(self.dtype, other)
            a, b = self.cast(dt), Tensor.full(self.shape, other, dt)
        return (b, a) if reverse else (a, b)

    def _binary(self, op: Ops, other: Tensor | Scalar, reverse: bool = False, dtype: DType | None = None) -> Tensor:
        a, b = self._operands(other, reverse, dtype)
        return Tensor(a.uop.alu(op, b.uop))

    def __add__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.ADD, o)
    def __radd__(self, o: Scalar) -> Tensor: return self._binary(Ops.ADD, o, True)
    def __sub__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.SUB, o)
    def __rsub__(self, o: Scalar) -> Tensor: return self._binary(Ops.SUB, o, True)
    def __mul__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.MUL, o)
    def __rmul__(self, o: Scalar) -> Tensor: return self._binary(Ops.MUL, o, True)
    def __truediv__(self, o: Tensor | Scalar) -> Tensor: return self.div(o)
    def __rtruediv__(self, o: Scalar) -> Tensor: return self.div(o, reverse=True)
    def __floordiv__(self, o: Tensor | Scalar) -> Tensor: return self.floordiv(o)
    def __rfloordiv__(self, o: Scalar) -> Tensor: return self.floordiv(o, reverse=True)
    def __mod__(self, o: Tensor | Scalar) -> Tensor: return self.mod(o)
    def __rmod__(self, o: Scalar) -> Tensor: return self.mod(o, reverse=True)
    def __pow__(self, o: Tensor | Scalar) -> Tensor: return self.pow(o)
    def __rpow__(self, o: Scalar) -> Tensor: return self.pow(o, reverse=True)
    def __neg__(self) -> Tensor: return self.neg()
    def __lt__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.CMPLT, o)
    def __le__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.CMPLE, o)
    def __gt__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.CMPLT, o, True)
    def __ge__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.CMPLE, o, True)
    def __eq__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.CMPEQ, o)  # type: ignore[override]
    def __ne__(self, o: Tensor | Scalar) -> Tensor: return self._binary(Ops.CMPNE, o)  # type: ignore[override]
    def __and__(self, o: Tensor | Scalar) -> Tensor: return self._bitwise(Ops.AND, o)
    def __rand__(self, o: Scalar) -> Tensor: return self._bitwise(Ops.AND, o)
    def __or__(self, o: Tensor | Scalar) -> Tensor: return self._bitwise(Ops.OR, o)
    def __ror__(self, o: Scalar) -> Tensor: return self._bitwise(Ops.OR, o)
    def __xor__(self, o: Tensor | Scalar) -> Tensor: return self._bitwise(Ops.XOR, o)
    def __rxor__(self, o: Scalar) -> Tensor: return self._bitwise(Ops.XOR, o)
    def __invert__(self) -> Tensor: return self.bitwise_not()
    def __lshift__(self, o: Tensor | int) -> Tensor: return self._bitwise(Ops.SHL, o)
    def __rshift__(self, o: Tensor | int) -> Tensor: return self._bitwise(Ops.SHR, o)
    __hash__ = object.__hash__

    def _bitwise(self, op: Ops, other: Tensor | Scalar) -> Tensor:
        a, b = self._operands(other)
        if a.dtype.is_float:
            raise TypeError(f"bitwise {op.name.lower()} is not defined for {a.dtype}")
        return Tensor(a.uop.alu(op, b.uop))

    def _float_dtype(self) -> DType:
        return self.dtype if self.dtype.is_float else dtypes.default_float

    def _float_unary(self, op: Ops) -> Tensor:
        return self.cast(self._float_dtype())._unary(op)

    def _wide(self) -> Tensor:
        """The tensor a composite op computes on: 16-bit floats widen to float32, so the composite rounds
        once at the end like one op (each primitive op on a 16-bit float rounds its own result)."""
        return self.cast(dtypes.float32) if self.dtype in (dtypes.float16, dtypes.bfloat16) else self

    def neg(self) -> Tensor:
        if self.dtype == dtypes.bool:
            raise TypeError("negation is not defined for bool tensors; use logical_not")
        return self._unary(Ops.NEG)

    def abs(self) -> Tensor: return self if self.dtype.kind in "bu" else self._unary(Ops.ABS)
    def exp(self) -> Tensor: return self._float_unary(Ops.EXP)
    def exp2(self) -> Tensor: return self._float_unary(Ops.EXP2)
    def log(self) -> Tensor: return self._float_unary(Ops.LOG)
    def log2(self) -> Tensor: return self._float_unary(Ops.LOG2)
    def sqrt(self) -> Tensor: return self._float_unary(Ops.SQRT)
    def rsqrt(self) -> Tensor: return self._float_unary(Ops.RSQRT)
    def reciprocal(self) -> Tensor: return self._float_unary(Ops.RECIP)
    def sin(self) -> Tensor: return self._float_unary(Ops.SIN)
    def cos(self) -> Tensor: return self._float_unary(Ops.COS)
    def tan(self) -> Tensor: return self._float_unary(Ops.TAN)
    def tanh(self) -> Tensor: return self._float_unary(Ops.TANH)
    def asin(self) -> Tensor: return self._float_unary(Ops.ASIN)
    def acos(self) -> Tensor: return self._float_unary(Ops.ACOS)
    def atan(self) -> Tensor: return self._float_unary(Ops.ATAN)
    def sinh(self) -> Tensor: return self._float_unary(Ops.SINH)
    def cosh(self) -> Tensor: return self._float_unary(Ops.COSH)
    def asinh(self) -> Tensor: return self._float_unary(Ops.ASINH)
    def acosh(self) -> Tensor: return self._float_unary(Ops.ACOSH)
    def atanh(self) -> Tensor: return self._float_unary(Ops.ATANH)
    def lgamma(self) -> Tensor: return self._float_unary(Ops.LGAMMA)
    def expm1(self) -> Tensor: return self._float_unary(Ops.EXPM1)
    def log1p(self) -> Tensor: return self._float_unary(Ops.LOG1P)
    def erf(self) -> Tensor: return self._float_unary(Ops.ERF)
    def floor(self) -> Tensor: return self if not self.dtype.is_float else self._unary(Ops.FLOOR)
    def ceil(self) -> Tensor: return self if not self.dtype.is_float else self._unary(Ops.CEIL)
    def trunc(self) -> Tensor: return self if not self.dtype.is_float else self._unary(Ops.TRUNC)

    def sigmoid(self) -> Tensor:
        x = self.cast(self._float_dtype())
        return (1 + (-x._wide()).exp()).reciprocal().cast(x.dtype)

    def relu(self) -> Tensor:
        return self.maximum(0)

    def sign(self) -> Tensor:
        if self.dtype == dtypes.bool:
            return self
        zero = Tensor.full(self.shape, 0, self.dtype)
        pos, neg = (self > 0).cast(self.dtype), (self < 0).cast(self.dtype)
        out = pos - neg if self.dtype.kind != "u" else pos
        return (self != self).where(self, out) if self.dtype.is_float else out + zero  # nan stays nan

    def div(self, other: Tensor | Scalar, reverse: bool = False) -> Tensor:
        """True division: integer operands divide as floats, like torch and numpy."""
        other_dt = other.dtype if isinstance(other, Tensor) else None
        dt = promote(self.dtype, other_dt) if other_dt else result_dtype_with_scalar(self.dtype, other)  # type: ignore
        dt = dt if dt.is_float else dtypes.default_float
        return self._binary(Ops.FDIV, other, reverse, dtype=dt)

    def floordiv(self, other: Tensor | Scalar, reverse: bool = False) -> Tensor:
        """Floor division (Python's //): rounds toward negative infinity for ints and floats."""
        a, b = self._operands(other, reverse)
        if a.dtype in (dtypes.float16, dtypes.bfloat16):
            return a._wide().floordiv(b._wide()).cast(a.dtype)
        if a.dtype.is_float:
            # Python's definition, so that a == (a // b) * b + a % b: from fmod, not from a rounded a / b
            mod = a.fmod(b)
            div = (a - mod) / b
            div = ((mod != 0) & ((b < 0) != (mod < 0))).where(div - 1, div)
            fl = div.floor()
            fl = (div - fl > 0.5).where(fl + 1, fl)
            signed_zero = (a / b < 0).where(-0.0, 0.0).cast(a.dtype)
            return (b == 0).where(a / b, (div == 0).where(signed_zero, fl))
        if a.dtype == dtypes.bool:
            raise TypeError("floor division is not defined for bool tensors")
        q, r = Tensor(a.uop.alu(Ops.IDIV, b.uop)), Tensor(a.uop.alu(Ops.MOD, b.uop))
        if a.dtype.is_unsigned:
            return q
        needs_fix = (r != 0) & ((r < 0) != (b < 0))
        return needs_fix.where(q - 1, q)

    def mod(self, other: Tensor | Scalar, reverse: bool = False) -> Tensor:
        """Python's % (torch.remainder): the result takes the sign of the divisor."""
        a, b = self._operands(other, reverse)
        if a.dtype in (dtypes.float16, dtypes.bfloat16):
            return a._wide().mod(b._wide()).cast(a.dtype)
        if a.dtype == dtypes.bool:
            raise TypeError("remainder is not defined for bool tensors")
        r = Tensor(a.uop.alu(Ops.MOD, b.uop))
        if a.dtype.is_unsigned:
            return r
        needs_fix = (r != 0) & ((r < 0) != (b < 0))
        return needs_fix.where(r + b, r)

    def fmod(self, other: Tensor | Scalar) -> Tensor:
        """C's fmod / %: the result takes the sign of the dividend."""
        return self._binary(Ops.MOD, other)

    def atan2(self, other: Tensor | Scalar) -> Tensor:
        a, b = self._operands(other, False, None)
        dt = a._float_dtype()
        return Tensor(a.cast(dt).uop.alu(Ops.ATAN2, b.cast(dt).uop))

    def pow(self, other: Tensor | Scalar, reverse: bool = False) -> Tensor:
        return self._binary(Ops.POW, other, reverse)

    def maximum(self, other: Tensor | Scalar) -> Tensor:
        return self._binary(Ops.MAX, other)

    def minimum(self, other: Tensor | Scalar) -> Tensor:
        return self._binary(Ops.MIN, other)

    def clip(self, lo: Tensor | Scalar | None = None, hi: Tensor | Scalar | None = None) -> Tensor:
        out = self if lo is None else self.maximum(lo)
        return out if hi is None else out.minimum(hi)

    def _as_bool(self) -> Tensor:
        return self if self.dtype == dtypes.bool else self != 0

    def logical_not(self) -> Tensor:
        return self._as_bool()._unary(Ops.NOT)

    def logical_and(self, other: Tensor | Scalar) -> Tensor:
        return self._as_bool()._bitwise(Ops.AND, other._as_bool() if isinstance(other, Tensor) else bool(other))

    def logical_or(self, other: Tensor | Scalar) -> Tensor:
        return self._as_bool()._bitwise(Ops.OR, other._as_bool() if isinstance(other, Tensor) else bool(other))

    def logical_xor(self, other: Tensor | Scalar) -> Tensor:
        return self._as_bool()._bitwise(Ops.XOR, other._as_bool() if isinstance(other, Tensor) else bool(other))

    def bitwise_not(self) -> Tensor:
        if self.dtype.is_float:
            raise TypeError(f"bitwise not is not defined for {self.dtype}")
        return self._unary(Ops.NOT)

    def where(self, a: Tensor | Scalar, b: Tensor | Scalar) -> Tensor:
        """Elementwise `a if self else b`, broadcasting all three."""
        ta = a if isinstance(a, Tensor) else None
        tb = b if isinstance(b, Tensor) else None
        if ta is not None and tb is not None:
            dt = promote(ta.dtype, tb.dtype)
        elif ta is not None or tb is not None:
            t = ta if ta is not None else tb
            dt = result_dtype_with_scalar(t.dtype, b if ta is not None else a)  # type: ignore[union-attr, arg-type]
        else:
            dt = promote(scalar_dtype(a), scalar_dtype(b))  # type: ignore[arg-type]
        shapes = [self.shape] + [t.shape for t in (ta, tb) if t is not None]
        shape = _broadcast_shape(*shapes)
        cond = self._as_bool()._broadcast_to(shape)
        x = (ta.cast(dt) if ta is not None else Tensor.full((), a, dt))._broadcast_to(shape)  # type: ignore[arg-type]
        y = (tb.cast(dt) if tb is not None else Tensor.full((), b, dt))._broadcast_to(shape)  # type: ignore[arg-type]
        return Tensor(UOp(Ops.WHERE, dt, (cond.uop, x.uop, y.uop)))

    def cast(self, dtype: DType) -> Tensor:
        return self if dtype == self.dtype else Tensor(UOp(Ops.CAST, dtype, (self.uop,)))

    def bitcast(self, dtype: DType) -> Tensor:
        if dtype.itemsize != self.dtype.itemsize:
            raise ValueError(f"bitcast needs equal item sizes: {self.dtype} is {self.dtype.itemsize} bytes, "
                             f"{dtype} is {dtype.itemsize}")
        if dtypes.bool in (dtype, self.dtype):
            raise TypeError("bitcast to or from bool is not supported")
        return self if dtype == self.dtype else Tensor(UOp(Ops.BITCAST, dtype, (self.uop,)))

    # ---- reductions ----
    def _reduce(self, op: Ops, axis: int | Sequence[int] | None, keepdim: bool) -> Tensor:
        axes = normalize_axes(axis, self.ndim)
        out_shape = tuple(1 if i in axes else s for i, s in enumerate(self.shape))
        if self.numel() == 0 or not axes:
            if self.numel() == 0 and any(self.shape[a] == 0 for a in axes):
                if op in (Ops.MAX, Ops.MIN):
                    raise ValueError("max/min of an empty axis has no identity")
                full = Tensor.full(out_shape, REDUCE_IDENTITY[op](self.dtype), self.dtype)
            else:
                full = self
        else:
            full = self._split_reduce(op, axes) or Tensor(UOp(Ops.REDUCE, self.dtype, (self.uop,), (op, axes)))
        if keepdim:
            return full
        return full.reshape(tuple(s for i, s in enumerate(full.shape) if i not in axes))

    def _split_reduce(self, op: Ops, axes: tuple[int, ...]) -> Tensor | None:
        """Reductions of many elements into few outputs run as two kernels (see SPLIT_REDUCE_MIN)."""
        n_reduce = prod(self.shape[a] for a in axes)
        n_out = self.numel() // n_reduce
        if n_reduce < SPLIT_REDUCE_MIN or n_out * SPLIT_REDUCE_CHUNKS > 4096:
            return None
        keep = [i for i in range(self.ndim) if i not in axes]
        flat = self.permute(keep + list(axes)).reshape(n_out, n_reduce)
        chunk = math.ceil(n_reduce / SPLIT_REDUCE_CHUNKS)
        padded = flat.pad(((0, 0), (0, chunk * SPLIT_REDUCE_CHUNKS - n_reduce)), REDUCE_IDENTITY[op](self.dtype))
        partial = padded.reshape(n_out, SPLIT_REDUCE_CHUNKS, chunk)._reduce(op, 2, True).contiguous()
        total = partial._reduce(op, (1, 2), False)
        out_shape = tuple(1 if i in axes else s for i, s in enumerate(self.shape))
        return total.reshape(out_shape)

    def sum(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dtype: DType | None = None) \
            -> Tensor:
        acc = dtype or (dtypes.int64 if self.dtype.kind in "bi" else dtypes.uint64 if self.dtype.kind == "u"
                        else self.dtype)
        return self.cast(acc)._reduce(Ops.ADD, axis, keepdim)

    def prod(self, axis: int | Sequence[int] | None = None, keepdim: bool = False, dtype: DType | None = None) \
            -> Tensor:
        acc = dtype or (dtypes.int64 if self.dtype.kind in "bi" else dtypes.uint64 if self.dtype.kind == "u"
                        else self.dtype)
        return self.cast(acc)._reduce(Ops.MUL, axis, keepdim)

    def max(self, axis: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return self._reduce(Ops.MAX, axis, keepdim)

    def min(self, axis: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return self._reduce(Ops.MIN, axis, keepdim)

    def mean(self, axis: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        axes = normalize_axes(axis, self.ndim)
        n = prod(self.shape[a] for a in axes)
        x = self.cast(self._float_dtype())
        return x.sum(axis, keepdim) / n if n else x.sum(axis, keepdim) * math.nan

    def softmax(self, axis: int = -1) -> Tensor:
        x = self.cast(self._float_dtype())
        w = x._wide()
        e = (w - w.max(axis, keepdim=True)).exp()
        return (e / e.sum(axis, keepdim=True)).cast(x.dtype)

    # ---- indirect access ----
    def take(self, flat_index: Tensor) -> Tensor:
        """self.flatten()[flat_index] for an integer index tensor of any shape (negative indices wrap)."""
        if flat_index.dtype.is_float or flat_index.dtype == dtypes.bool:
            raise TypeError(f"indices must be integers, not {flat_index.dtype}")
        idx = flat_index.cast(dtypes.int64)
        idx = (idx < 0).where(idx + self.numel(), idx)
        return Tensor(UOp(Ops.GATHER, self.dtype, (self.uop, idx.uop)))

    def _flat_index_along(self, dim: int, index: Tensor) -> Tensor:
        """The flat position in self of element i of index along dim, others at index's own coordinates."""
        dim = dim % max(self.ndim, 1)
        strides = strides_for(self.shape)
        idx = index.cast(dtypes.int64)
        idx = (idx < 0).where(idx + self.shape[dim], idx)
        flat = idx * strides[dim]
        for d in range(index.ndim):
            if d == dim or index.shape[d] == 1:
                continue
            pos = Tensor.arange(index.shape[d]).reshape([index.shape[d] if i == d else 1 for i in range(index.ndim)])
            flat = flat + pos * strides[d]
        return flat

    def gather(self, dim: int, index: Tensor) -> Tensor:
        """torch.gather: out[i][j] = self[index[i][j]][j] for dim=0 (index may be smaller than self)."""
        if index.ndim != self.ndim:
            raise ValueError(f"gather index has {index.ndim} dims, the source {self.ndim}")
        return self.take(self._flat_index_along(dim, index))

    def scatter(self, dim: int, index: Tensor, src: Tensor | Scalar, reduce: str | None = None) -> Tensor:
        """torch.scatter / scatter_add: a copy of self with src written (or combined, see scatter_flat) at index
        along dim."""
        if index.ndim != self.ndim:
            raise ValueError(f"scatter index has {index.ndim} dims, the target {self.ndim}")
        values = src.cast(self.dtype) if isinstance(src, Tensor) else Tensor.full(index.shape, src, self.dtype)
        if values.shape != index.shape:
            values = values.shrink(tuple((0, n) for n in index.shape))
        return self.scatter_flat(self._flat_index_along(dim, index), values, reduce)

    def scatter_flat(self, flat_index: Tensor, values: Tensor, reduce: str | None = None) -> Tensor:
        """A copy of self with values stored at self.flatten()[flat_index]. reduce ("add", "mul", "max" or "min")
        combines each value with the element already there instead; duplicate indices all combine (atomically,
        in no fixed order), and max/min propagate NaN."""
        if reduce not in _SCATTER_REDUCE:
            raise ValueError(f"scatter reduce must be one of {list(_SCATTER_REDUCE)}, not {reduce!r}")
        idx = flat_index.cast(dtypes.int64)
        idx = (idx < 0).where(idx + self.numel(), idx)
        values = values.cast(self.dtype)._broadcast_to(idx.shape)
        # the copy this scatter writes into must be its own (a unique arg): hash-consing would otherwise give
        # every scatter of the same tensor, and any other self.flatten().contiguous(), one shared buffer, and
        # each would see the others' writes
        target = Tensor(UOp(Ops.CONTIGUOUS, self.dtype, (self.flatten().uop,), ("scatter", next(_scatter_ids))))
        out = UOp(Ops.ASSIGN, self.dtype, (target.uop, values.uop, idx.uop), (None, _SCATTER_REDUCE[reduce]))
        return Tensor(out).reshape(self.shape)

    def assign_strided(self, shape: Sequence[int], strides: Sequence[int], offset: int, value: Tensor | Scalar) \
            -> Tensor:
        """Write value into the strided region (shape, element strides, offset) of this 1-D buffer tensor, in
        place: realizing the result writes the buffer. Returns the buffer's new contents."""
        if self.uop.op is not Ops.BUFFER:
            raise ValueError("assign_strided writes into a device buffer: call it on Tensor.from_buffer(...)")
        shape, strides = tuple(int(s) for s in shape), tuple(int(s) for s in strides)
        val = value.cast(self.dtype) if isinstance(value, Tensor) else Tensor.full(shape, value, self.dtype)
        val = val._broadcast_to(shape)
        self.as_strided(shape, strides, offset)  # validates the region
        return Tensor(UOp(Ops.ASSIGN, self.dtype, (self.uop, val.uop), ((shape, strides, int(offset)), None)))

    # ---- matrix product, written with broadcasting and a reduction: one kernel ----
    def matmul(self, other: Tensor) -> Tensor:
        if self.ndim < 1 or other.ndim < 1:
            raise ValueError("matmul needs tensors of at least one dimension")
        a = self.reshape(1, self.shape[0]) if self.ndim == 1 else self
        b = other.reshape(other.shape[0], 1) if other.ndim == 1 else other
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul shapes {self.shape} and {other.shape} do not match")
        prod_ = a.reshape(*a.shape[:-1], a.shape[-1], 1) * b.reshape(*b.shape[:-2], 1, *b.shape[-2:])
        out = prod_._reduce(Ops.ADD, prod_.ndim - 2, False)
        if self.ndim == 1:
            out = out.reshape(*out.shape[:-2], out.shape[-1])
        if other.ndim == 1:
            out = out.reshape(out.shape[:-1])
        return out

    __matmul__ = matmul

