"""The eager device: every entry of the lowering table becomes a PrivateUse1 kernel.

A kernel turns its toony tensor arguments into lazy values (lazy.as_lazy), runs the lowering, and gives a
new toony tensor the lazy result as its pending value: no kernel runs until the bytes are needed. Output
metadata (shape, dtype, strides, and every error torch raises for bad arguments) comes from running the
same op on the meta device once per argument signature. In-place and out= overloads reuse the functional
lowering and write the result into their target.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

from toony_core import Tensor as Lazy

from . import lazy, storage
from .complex import Complex, as_complex, new_complex_output, write_complex_into
from .copy import is_dense
from .dtypes import to_toony
from .lowering import LOWERINGS, Lowering
from .lowering_complex import COMPLEX_LOWERINGS, complex_compute, involves_complex

_libs: list[torch.library.Library] = []


def _meta_arg(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        if x.device.type == "cpu" and x.dim() == 0:
            return torch.empty((), dtype=x.dtype, device="meta")  # a 0-d CPU tensor mixes with any device
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
    if isinstance(x, torch.device):
        return torch.device("meta")
    return x


def _sig(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), tuple(x.stride()), x.dtype, x.device.type == "cpu" and x.dim() == 0)
    if isinstance(x, float):
        return ("f", x if x != x or x in (float("inf"), float("-inf")) else 0.0)  # the value never changes meta
    if isinstance(x, (list, tuple)):
        return tuple(_sig(v) for v in x)
    return x


_meta_cache: dict[Any, Any] = {}


def meta_outputs(op: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    """The op's outputs on the meta device: torch's own shape, dtype and stride rules, and its errors."""
    key = (op, _sig(args), _sig(tuple(sorted(kwargs.items()))))
    try:
        hit = _meta_cache.get(key)
    except TypeError:  # an unhashable argument: no caching
        key, hit = None, None
    if hit is not None:
        return hit
    out = op(*tree_map(_meta_arg, args), **tree_map(_meta_arg, kwargs))
    if key is not None:
        _meta_cache[key] = out
    return out


def _storage_order(value: Lazy, like: torch.Tensor) -> Lazy | None:
    """value laid out as like's storage holds it (like dense, possibly permuted); None if like is not dense."""
    if like.is_contiguous():
        return value.reshape(value.numel())
    order = sorted(range(like.dim()), key=lambda d: (-like.stride()[d], d))
    shape = [like.shape[d] for d in order]
    expected = 1
    for d in reversed(order):
        if like.shape[d] != 1 and like.stride()[d] != expected:
            return None
        expected *= like.shape[d]
    return value.permute(order).reshape(int(torch.Size(shape).numel()))


def new_output(meta: torch.Tensor, value: Lazy, inputs: list) -> torch.Tensor:
    """A fresh toony tensor laid out like meta whose pending value is `value`."""
    if meta.is_complex() or isinstance(value, Complex):
        return new_complex_output(meta, value, inputs)
    value = value.cast(to_toony(meta.dtype))
    if tuple(value.shape) != tuple(meta.shape):
        value = value.reshape(tuple(meta.shape)) if value.numel() == meta.numel() else value.expand(tuple(meta.shape))
    ordered = _storage_order(value, meta)
    if ordered is None:
        out = torch.empty(meta.shape, dtype=meta.dtype, device="toony")
        ordered = value.reshape(value.numel())
    else:
        out = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device="toony")
    if meta.numel():
        lazy.set_pending(out, ordered, inputs)
    return out


def write_into(dst: torch.Tensor, value: Lazy, inputs: list) -> None:
    """dst <- value (broadcast and cast to dst), as an in-place op or an out= argument does it."""
    if dst.is_complex() or isinstance(value, Complex):
        return write_complex_into(dst, value, inputs)
    if dst.numel() == 0:
        return
    value = value.cast(to_toony(dst.dtype))
    if tuple(value.shape) != tuple(dst.shape):
        value = value.expand(tuple(dst.shape))
    addr = lazy.addr_of(dst)
    e = storage.entry(addr)
    lazy._before_write(addr)
    whole = dst.storage_offset() == 0 and dst.numel() * dst.element_size() == e.nbytes
    ordered = _storage_order(value, dst) if whole else None
    if ordered is not None:
        lazy.set_pending(dst, ordered, inputs)
        return
    buf = storage.read_buffer(addr)
    target = Lazy.from_buffer(buf, to_toony(dst.dtype))
    lazy.run(target.assign_strided(tuple(dst.shape), tuple(dst.stride()), dst.storage_offset(), value))


def _tensors(args: Any) -> list[torch.Tensor]:
    """The tensors among ATen arguments (which are flat, or lists of tensors, or dicts of kwargs)."""
    out: list[torch.Tensor] = []
    for a in (args.values() if isinstance(args, dict) else args):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple, dict)):
            out.extend(_tensors(a))
    return out


def _lazy_args(args: Any, name: str) -> Any:
    """ATen arguments with each toony tensor (also inside lists) replaced by its lazy value."""
    def conv(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return lazy.as_lazy(a, name)
        if isinstance(a, (list, tuple)):
            return type(a)(conv(x) for x in a)
        return a
    if isinstance(args, dict):
        return {k: conv(v) for k, v in args.items()}
    return tuple(conv(a) for a in args)


def _compute(low: Lowering | None, op: torch._ops.OpOverload, args: tuple, kwargs: dict, meta: Any) -> Any:
    if low is None or involves_complex(args, kwargs, meta):  # complex tensors: lowering_complex's table
        return complex_compute(op, args, kwargs, meta)
    largs, lkwargs = _lazy_args(args, op.__name__), _lazy_args(kwargs, op.__name__)
    if low.pointwise:
        dt = to_toony(low.compute_dtype(args, kwargs, meta))
        largs = tuple(x.cast(dt) if isinstance(x, Lazy) else x for x in largs)
    return low.fn(*largs, **lkwargs)


def _functional_kernel(op: torch._ops.OpOverload, low: Lowering | None) -> Callable:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        meta = meta_outputs(op, args, kwargs)
        res = _compute(low, op, args, kwargs, meta)
        ins = _tensors(args) + _tensors(kwargs)
        if isinstance(meta, torch.Tensor):
            return new_output(meta, res, ins)
        # masked outputs of multi-output ops (convolution_backward's output_mask) are None on meta too
        outs = type(meta)(new_output(m, r, ins) if m is not None else None for m, r in zip(meta, res))
        lazy.set_siblings(list(outs))
        return outs

    return kernel


def check_fits_self(self: torch.Tensor, shape: torch.Size) -> None:
    """An in-place op's result must have self's shape: torch's error when the operands broadcast beyond it."""
    if shape != self.shape:
        raise RuntimeError(f"output with shape {list(self.shape)} doesn't match the broadcast shape {list(shape)}")


def _inplace_kernel(op: torch._ops.OpOverload, functional: torch._ops.OpOverload, low: Lowering | None) \
        -> Callable:
    def kernel(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        meta_outputs(op, (self, *args), kwargs)  # torch's checks (broadcast to self, castable result)
        if self.numel() and torch._debug_has_internal_overlap(self) != 0:
            # a view that may overlap itself (as_strided): read self from its buffer, so each element is
            # updated in place in launch order as the CPU's loop does, not recomputed from a pending value
            storage.read_buffer(lazy.addr_of(self))
        meta = meta_outputs(functional, (self, *args), kwargs)
        if isinstance(meta, torch.Tensor):  # (not every meta in-place kernel checks)
            check_fits_self(self, meta.shape)
            if not torch.can_cast(meta.dtype, self.dtype):  # logit_ of an int tensor
                raise RuntimeError(f"result type {meta.dtype} can't be cast to the desired output type {self.dtype}")
        if self.device.type == "toony" and self.numel():  # (a CPU self is torch's device-mismatch error below)
            lazy.realize_if_it_reads_others(lazy.addr_of(self))
        res = _compute(low, functional, (self, *args), kwargs, meta)
        write_into(self, res, _tensors((self, args, kwargs)))
        return self

    return kernel


def _out_kernel(
    op: torch._ops.OpOverload, functional: torch._ops.OpOverload, low: Lowering | None, out_names: list[str]
) -> Callable:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        outs = [kwargs.pop(n) for n in out_names]
        meta = meta_outputs(functional, args, kwargs)
        res = _compute(low, functional, args, kwargs, meta)
        metas, results = ([meta], [res]) if isinstance(meta, torch.Tensor) else (list(meta), list(res))
        for out, m, r in zip(outs, metas, results):
            if out.dtype != m.dtype and not torch.can_cast(m.dtype, out.dtype):
                raise RuntimeError(f"result type {m.dtype} can't be cast to the desired output type {out.dtype}")
            if tuple(out.shape) != tuple(m.shape):
                out.resize_(m.shape)  # torch's out= semantics (it warns for non-empty outs; we follow the resize)
            write_into(out, r, _tensors((args, kwargs)))
        return outs[0] if len(outs) == 1 else tuple(outs)

    return kernel


@functools.cache
def _overload(name: str) -> torch._ops.OpOverload:
    base, _, overload = name.partition(".")
    packet = getattr(torch.ops.aten, base)
    return getattr(packet, overload or "default")


def _variants(name: str) -> list[tuple[str, str]]:
    """(overload name, kind) for the functional overload, its in-place twin and its out= twin, where they exist.
    Twins are found by schema, not by overload name: the out= twin takes the functional's arguments plus out
    tensors (mean.out belongs to mean.dim, sum.IntList_out to sum.dim_IntList), the in-place twin takes the same
    arguments (pow_.Scalar belongs to pow.Tensor_Scalar, not to pow.Scalar)."""
    base = name.partition(".")[0]
    found = [(name, "functional")]
    args = [(a.name, str(a.type)) for a in _overload(name)._schema.arguments]
    for packet_name, kind in ((f"{base}_", "inplace"), (base, "out")):
        packet = getattr(torch.ops.aten, packet_name, None)
        for cand in packet.overloads() if packet is not None else []:
            schema = getattr(packet, cand)._schema
            outs = [a for a in schema.arguments if a.is_out]
            if (kind == "out") == bool(outs) and [(a.name, str(a.type)) for a in schema.arguments
                                                  if not a.is_out] == args:
                found.append((f"{packet_name}.{cand}", kind))
                break
    return found


def _to_copy(x: torch.Tensor, *, dtype: torch.dtype | None = None, layout: Any = None, device: Any = None,
             pin_memory: bool | None = None, non_blocking: bool = False,
             memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """Dtype conversion on the device is a lazy cast; moves between devices are copies."""
    dst = torch.device(device) if device is not None else x.device
    dtype = dtype or x.dtype
    if x.device.type == "toony" and dst.type == "toony" and memory_format in (None, torch.preserve_format):
        meta = torch.empty_strided(x.shape, x.stride(), dtype=dtype, device="meta") if is_dense(x) else \
            torch.empty(x.shape, dtype=dtype, device="meta")
        if x.is_complex() or dtype.is_complex:  # complex <-> real: the real part, or a zero imaginary part
            return new_output(meta, as_complex(x) if x.is_complex() else lazy.as_lazy(x, "_to_copy"), [x])
        return new_output(meta, lazy.as_lazy(x, "_to_copy").cast(to_toony(dtype)), [x])
    fmt = memory_format or torch.preserve_format
    out = torch.empty_like(x, dtype=dtype, device=dst, memory_format=fmt, pin_memory=bool(pin_memory))
    return out.copy_(x)


def _expanding_masks(k: Callable) -> Callable:
    from .masks import masks_to_indices

    def kernel(*args: Any, **kwargs: Any) -> Any:
        return k(*masks_to_indices(args, kwargs)[0], **kwargs)
    return kernel


def _complex_only(op: torch._ops.OpOverload, k: Callable) -> Callable:
    """An op with only a complex lowering (addcmul, lerp, polar): its real calls keep the path they had before
    (the decomposition, or the CPU fallback), which for in-place ones also keeps optimizer state from chaining."""
    from .fallback import backend_fallback

    def kernel(*args: Any, **kwargs: Any) -> Any:
        tensors = _tensors(args) + _tensors(kwargs)
        if any(t.is_complex() for t in tensors):
            return k(*args, **kwargs)
        meta = meta_outputs(op, args, kwargs)
        metas = [meta] if isinstance(meta, torch.Tensor) else [m for m in meta if isinstance(m, torch.Tensor)] \
            if isinstance(meta, (tuple, list)) else []
        if any(m.is_complex() for m in metas):  # torch.complex(re, im): real in, complex out
            return k(*args, **kwargs)
        return backend_fallback(op, *args, **kwargs)
    return kernel


def register() -> None:
    """Register every lowering as the PrivateUse1 kernel of its ATen overloads."""
    if _libs:
        return
    from .masks import MASKED_INDEX_OPS

    lib = torch.library.Library("aten", "IMPL")  # noqa: TOR901 - implementing existing aten ops
    # an op with only a complex lowering (torch.complex, polar) is registered too; its real calls (if any)
    # reach the complex table as well
    # (not one extra_kernels registers itself: normal_functional's complex form is reached through that kernel)
    from .extra_kernels import REGISTERED
    table: dict[str, Lowering | None] = {
        **dict.fromkeys(n for n in COMPLEX_LOWERINGS if n not in REGISTERED), **LOWERINGS}
    for name, low in table.items():
        try:
            functional = _overload(name)
        except AttributeError:  # the loop-generated names list overloads some ops lack (bitwise_not.Scalar)
            continue
        for variant, kind in _variants(name):
            op = _overload(variant)
            if torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CompositeImplicitAutograd"):
                continue  # a PrivateUse1 kernel there would replace the op's autograd formula
            if kind == "functional":
                k = _functional_kernel(op, low)
            elif kind == "inplace":
                k = _inplace_kernel(op, functional, low)
            else:
                outs = [a.name for a in op._schema.arguments if a.is_out]
                k = _out_kernel(op, functional, low, outs)
            if variant in MASKED_INDEX_OPS:
                k = _expanding_masks(k)
            if low is None:
                k = _complex_only(op, k)
            with warnings.catch_warnings():
                # aten::clamp.out carries a stray kernel under PrivateUse1 in torch 2.13: replacing it is the point
                warnings.filterwarnings("ignore", message="Warning only once for all operators")
                lib.impl(variant.replace(".default", ""), k, "PrivateUse1")
    lib.impl("_to_copy", _to_copy, "PrivateUse1")
    _libs.append(lib)
