"""Lowerings only the compile backend needs: views, factories, random numbers, copies, symbolic sizes.

On the eager device, views are metadata ops done in C++ over a shared storage and factories allocate
storages; in a compiled ATen graph every value is a logical lazy tensor, so views become movement ops and
factories become constants. Random ops live here (not in the shared table) because a compiled graph is
replayed: its random numbers must come from a seed bound at every call, never from one baked in at
capture. Each function takes a `NodeContext` (concrete output metadata, the node's seed) and the node's
arguments with tensors replaced by lazy toony_core Tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from toony_core import Tensor, dtypes
from toony_core.helpers import strides_for

from .compile_meta import Meta, dense_order
from .dtypes import to_toony
from .lowering import arange_values

aten = torch.ops.aten


class NodeContext:
    """What a compile-side lowering may ask about the node it lowers."""

    def __init__(self, out: Any, arg_metas: list[Any], rng: Callable[[tuple[int, ...], int], Tensor]):
        self.out = out  # Meta, or a list/tuple of Meta for multi-output ops
        self.arg_metas = arg_metas  # Meta (or None) per positional argument
        self._rng = rng

    def bits(self, shape: tuple[int, ...], stream: int = 0) -> Tensor:
        """Uniform random uint64 words of this shape, fresh at every call of the compiled graph."""
        return self._rng(shape, stream)


COMPILE_LOWERINGS: dict[Any, Callable[..., Any]] = {}
_BY_NAME: dict[str, Callable[..., Any]] = {}  # ops registered only once some torch module loads ("prims.fma")


def compile_lowers(*ops: Any) -> Callable:
    def deco(fn: Callable) -> Callable:
        for op in ops:
            if isinstance(op, str):
                _BY_NAME[op] = fn
            else:
                COMPILE_LOWERINGS[op] = fn
        return fn
    return deco


def compile_lowering(op: Any) -> Callable[..., Any] | None:
    fn = COMPILE_LOWERINGS.get(op)
    return fn if fn is not None or not _BY_NAME else _BY_NAME.get(str(op))


def _dt(ctx: NodeContext) -> Any:
    return to_toony(ctx.out.dtype)


# ---------------------------------------------------------------- views

@compile_lowers(aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.view_copy.default,
                aten.unsqueeze.default, aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims,
                aten._reshape_alias.default, aten.unsqueeze_copy.default, aten.squeeze_copy.dim)
def reshape(ctx: NodeContext, x: Tensor, *args: Any) -> Tensor:
    return x.reshape(ctx.out.shape)


@compile_lowers(aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default, aten.lift_fresh.default,
                aten.alias_copy.default, aten.detach_copy.default, aten.clone.default,
                aten.contiguous.default)
def identity(ctx: NodeContext, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return x


@compile_lowers(aten.permute.default, aten.permute_copy.default)
def permute(ctx: NodeContext, x: Tensor, dims: Sequence[int]) -> Tensor:
    return x.permute([d % max(x.ndim, 1) for d in dims]) if x.ndim else x


@compile_lowers(aten.t.default, aten.t_copy.default)
def t(ctx: NodeContext, x: Tensor) -> Tensor:
    return x.T if x.ndim == 2 else x


@compile_lowers(aten.transpose.int, aten.transpose_copy.int)
def transpose(ctx: NodeContext, x: Tensor, a: int, b: int) -> Tensor:
    return x.transpose(a % x.ndim, b % x.ndim) if x.ndim else x


@compile_lowers(aten.expand.default, aten.expand_copy.default)
def expand(ctx: NodeContext, x: Tensor, size: Sequence[int], implicit: bool = False) -> Tensor:
    return x.expand(ctx.out.shape)


def _strided(x: Tensor, shape: Sequence[int], strides: Sequence[int], offset: int) -> Tensor:
    """A view of x (taken in logical row-major order) with these element strides, as torch views do it."""
    if math.prod(shape) == 0:
        return Tensor.zeros(tuple(shape), x.dtype)
    return x.as_strided(tuple(shape), tuple(strides), offset)


@compile_lowers(aten.slice.Tensor, aten.slice_copy.Tensor)
def slice_(ctx: NodeContext, x: Tensor, dim: int = 0, start: int | None = None, end: int | None = None,
           step: int = 1) -> Tensor:
    dim = dim % x.ndim
    n = x.shape[dim]
    s = 0 if start is None else (start + n if start < 0 else start)
    s = min(max(s, 0), n)
    count = ctx.out.shape[dim]
    if step == 1:
        return x.shrink([(s, s + count) if i == dim else (0, m) for i, m in enumerate(x.shape)])
    st = list(strides_for(x.shape))
    offset = s * st[dim]
    st[dim] *= step
    return _strided(x, ctx.out.shape, st, offset)


@compile_lowers(aten.select.int, aten.select_copy.int)
def select(ctx: NodeContext, x: Tensor, dim: int, index: int) -> Tensor:
    dim = dim % x.ndim
    i = index + x.shape[dim] if index < 0 else index
    return x.shrink([(i, i + 1) if d == dim else (0, m) for d, m in enumerate(x.shape)]).reshape(ctx.out.shape)


@compile_lowers(aten.split.Tensor, aten.split_with_sizes.default, aten.split_copy.Tensor,
                aten.split_with_sizes_copy.default, aten.chunk.default)
def split(ctx: NodeContext, x: Tensor, sizes: Any, dim: int = 0) -> list[Tensor]:
    dim = dim % x.ndim
    outs, start = [], 0
    for o in ctx.out:  # torch's metadata gives each piece's size along dim
        n = o.shape[dim]
        outs.append(x.shrink([(start, start + n) if i == dim else (0, m) for i, m in enumerate(x.shape)]))
        start += n
    return outs


@compile_lowers(aten.unbind.int, aten.unbind_copy.int)
def unbind(ctx: NodeContext, x: Tensor, dim: int = 0) -> list[Tensor]:
    dim = dim % x.ndim
    return [x.shrink([(i, i + 1) if d == dim else (0, m) for d, m in enumerate(x.shape)]).reshape(o.shape)
            for i, o in enumerate(ctx.out)]


@compile_lowers(aten.as_strided.default, aten.as_strided_copy.default)
def as_strided(ctx: NodeContext, x: Tensor, size: Sequence[int], stride: Sequence[int],
               storage_offset: int | None = None) -> Tensor:
    base = ctx.arg_metas[0]
    offset = base.offset if storage_offset is None else storage_offset
    flat = _storage_flat(x, base)
    if flat is None:
        raise NotImplementedError("as_strided of a tensor that does not cover its storage densely")
    return _strided(flat, ctx.out.shape, ctx.out.stride, offset - base.offset)


def _storage_flat(x: Tensor, m: Meta) -> Tensor | None:
    """x's values in the order its storage holds them (x dense and non-overlapping), flattened; else None."""
    order = dense_order(m)
    if order is None:
        return None
    return x.permute(order).reshape(m.numel) if x.ndim else x.reshape(1)


@compile_lowers(aten.diagonal.default, aten.diagonal_copy.default)
def diagonal(ctx: NodeContext, x: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    d1, d2 = dim1 % x.ndim, dim2 % x.ndim
    st = strides_for(x.shape)
    keep = [st[i] for i in range(x.ndim) if i not in (d1, d2)]
    start = offset * st[d2] if offset >= 0 else -offset * st[d1]
    return _strided(x, ctx.out.shape, keep + [st[d1] + st[d2]], start)


@compile_lowers(aten.unfold.default, aten.unfold_copy.default)
def unfold(ctx: NodeContext, x: Tensor, dim: int, size: int, step: int) -> Tensor:
    if x.ndim == 0:
        return x.reshape(ctx.out.shape)
    dim = dim % x.ndim
    st = list(strides_for(x.shape))
    return _strided(x, ctx.out.shape, st[:dim] + [st[dim] * step] + st[dim + 1:] + [st[dim]], 0)


@compile_lowers(aten.view.dtype, aten.view_copy.dtype)
def view_dtype(ctx: NodeContext, x: Tensor, dtype: torch.dtype) -> Tensor:
    dt = to_toony(dtype)
    if dt.itemsize != x.dtype.itemsize:
        raise NotImplementedError("view(dtype) between dtypes of different sizes")
    return x.bitcast(dt)


# ---------------------------------------------------------------- copies and conversions

@compile_lowers(aten._to_copy.default)
def to_copy(ctx: NodeContext, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return x.cast(_dt(ctx))  # a device move is no work: every value of the graph lives on the toony device


@compile_lowers(aten.copy.default)
def copy(ctx: NodeContext, dst: Tensor, src: Tensor, non_blocking: bool = False) -> Tensor:
    v = src.cast(_dt(ctx))
    return v.expand(ctx.out.shape) if v.shape != ctx.out.shape else v


@compile_lowers("prims.fma.default")  # dynamo writes addcmul_ and add_ with a tensor alpha as inductor's fma
def fma(ctx: NodeContext, a: Tensor | float, b: Tensor | float, c: Tensor | float) -> Tensor:
    dt = _dt(ctx)
    a, b, c = (x.cast(dt) if isinstance(x, Tensor) else Tensor.full((), x, dt) for x in (a, b, c))
    return a * b + c


# ---------------------------------------------------------------- factories

def _full(ctx: NodeContext, value: Any) -> Tensor:
    return Tensor.full(ctx.out.shape, value, _dt(ctx))


@compile_lowers(aten.full.default)
def full(ctx: NodeContext, size: Sequence[int], fill_value: Any, **kwargs: Any) -> Tensor:
    return _full(ctx, fill_value)


@compile_lowers(aten.new_full.default)
def new_full(ctx: NodeContext, x: Tensor, size: Sequence[int], fill_value: Any, **kwargs: Any) -> Tensor:
    return _full(ctx, fill_value)


@compile_lowers(aten.full_like.default)
def full_like(ctx: NodeContext, x: Tensor, fill_value: Any, **kwargs: Any) -> Tensor:
    return _full(ctx, fill_value)


@compile_lowers(aten.scalar_tensor.default)
def scalar_tensor(ctx: NodeContext, value: Any, **kwargs: Any) -> Tensor:
    return _full(ctx, value)


@compile_lowers(aten.zeros.default, aten.new_zeros.default, aten.zeros_like.default, aten.empty.memory_format,
                aten.empty_strided.default, aten.new_empty.default, aten.new_empty_strided.default,
                aten.empty_like.default, aten.empty_permuted.default)
def zeros(ctx: NodeContext, *args: Any, **kwargs: Any) -> Tensor:
    return _full(ctx, 0)  # empty memory is unspecified; zeros keep results deterministic


@compile_lowers(aten.ones.default, aten.new_ones.default, aten.ones_like.default)
def ones(ctx: NodeContext, *args: Any, **kwargs: Any) -> Tensor:
    return _full(ctx, 1)


@compile_lowers(aten.arange.default, aten.arange.start, aten.arange.start_step)
def arange(ctx: NodeContext, *args: Any, **kwargs: Any) -> Tensor:
    nums = [a for a in args if isinstance(a, (int, float))]
    start, step = (0, 1) if len(nums) == 1 else (nums[0], nums[2] if len(nums) > 2 else kwargs.get("step", 1))
    return arange_values(ctx.out.shape[0], start, step, _dt(ctx))


# ---------------------------------------------------------------- random numbers

_MANTISSA = {dtypes.float16: 11, dtypes.bfloat16: 8, dtypes.float32: 24, dtypes.float64: 53}


def uniform01(ctx: NodeContext, shape: tuple[int, ...], dt: Any, stream: int = 0) -> Tensor:
    """Uniform values in [0, 1) with as many random bits as dt's mantissa holds (so rounding never gives 1)."""
    bits = _MANTISSA.get(dt, 24)
    words = ctx.bits(shape, stream)
    acc = dtypes.float64 if bits > 24 else dtypes.float32
    return ((words >> (64 - bits)).cast(acc) * (1.0 / (1 << bits))).cast(dt)


@compile_lowers(aten.rand.default, aten.rand_like.default)
def rand(ctx: NodeContext, *args: Any, **kwargs: Any) -> Tensor:
    return uniform01(ctx, ctx.out.shape, _dt(ctx))


@compile_lowers(aten.uniform.default)
def uniform(ctx: NodeContext, x: Tensor, low: float = 0.0, high: float = 1.0, **kwargs: Any) -> Tensor:
    return (uniform01(ctx, ctx.out.shape, _dt(ctx)) * (high - low) + low).cast(_dt(ctx))


def _normal(ctx: NodeContext) -> Tensor:
    """Box-Muller: two independent uniform streams give one standard normal value per element."""
    dt = _dt(ctx)
    acc = dtypes.float64 if dt == dtypes.float64 else dtypes.float32
    bits = 53 if acc == dtypes.float64 else 24
    u1 = ((ctx.bits(ctx.out.shape, 0) >> (64 - bits)).cast(acc) + 1) * (1.0 / (1 << bits))  # (0, 1]: log is finite
    u2 = (ctx.bits(ctx.out.shape, 1) >> (64 - bits)).cast(acc) * (1.0 / (1 << bits))
    return (u1.log() * -2).sqrt() * (u2 * (2 * math.pi)).cos()


@compile_lowers(aten.randn.default, aten.randn_like.default)
def randn(ctx: NodeContext, *args: Any, **kwargs: Any) -> Tensor:
    return _normal(ctx).cast(_dt(ctx))


@compile_lowers(aten.normal_functional.default)
def normal(ctx: NodeContext, x: Tensor, mean: float = 0.0, std: float = 1.0, **kwargs: Any) -> Tensor:
    return (_normal(ctx) * std + mean).cast(_dt(ctx))


@compile_lowers(aten.bernoulli.p)
def bernoulli_p(ctx: NodeContext, x: Tensor, p: float = 0.5, **kwargs: Any) -> Tensor:
    return (uniform01(ctx, ctx.out.shape, dtypes.float64 if x.dtype == dtypes.float64 else dtypes.float32) < p) \
        .cast(_dt(ctx))


@compile_lowers(aten.bernoulli.default)
def bernoulli(ctx: NodeContext, probs: Tensor, **kwargs: Any) -> Tensor:
    u = uniform01(ctx, ctx.out.shape, dtypes.float64 if probs.dtype == dtypes.float64 else dtypes.float32)
    return (u < probs).cast(_dt(ctx))


@compile_lowers(aten.native_dropout.default)
def native_dropout(ctx: NodeContext, x: Tensor, p: float, train: bool | None) -> tuple[Tensor, Tensor]:
    if not train or p == 0:
        return x, Tensor.full(x.shape, True, dtypes.bool)
    if p == 1:
        return Tensor.zeros(x.shape, x.dtype), Tensor.full(x.shape, False, dtypes.bool)
    keep = uniform01(ctx, x.shape, dtypes.float32 if x.dtype != dtypes.float64 else dtypes.float64) > p
    return keep.where(x * (1.0 / (1.0 - p)), 0).cast(x.dtype), keep


@compile_lowers(aten.native_dropout_backward.default)
def native_dropout_backward(ctx: NodeContext, grad: Tensor, mask: Tensor, scale: float) -> Tensor:
    return (grad * mask.cast(grad.dtype) * scale).cast(_dt(ctx))


RANDOM_OPS = {aten.rand.default, aten.rand_like.default, aten.uniform.default, aten.randn.default,
              aten.randn_like.default, aten.normal_functional.default, aten.bernoulli.p, aten.bernoulli.default,
              aten.native_dropout.default}


# ---------------------------------------------------------------- sizes and asserts (no tensor work)

NOOPS = {aten._assert_async.msg, aten._assert_async.default, aten._assert_scalar.default,
         aten.sym_constrain_range_for_size.default, aten.sym_constrain_range.default,
         aten._assert_tensor_metadata.default}


from . import compile_attention  # noqa: E402, F401 - registers the attention lowerings
