"""What runs an ATen op the toony device has no kernel for: its decomposition, else the CPU.

An op with a decomposition in `torch._decomp` runs it on the device: the decomposition calls ops toony
has kernels for (lazily, so its pieces fuse). View ops are never decomposed (a decomposition returns a
copy where the op must alias), and a decomposition that reaches its own op again goes to the CPU.

Otherwise the op runs on the CPU. Every toony storage an op touches is copied to the host once, and each toony
argument becomes a CPU tensor with the same dtype, sizes, strides and offset
over that copy, so aliasing between arguments (an out= that is also an input,
views of one base) is exactly as on the device. After the op runs, storages
of mutated arguments are written back whole; new outputs are copied to the
device; outputs that alias an argument become toony views of the same storage.

Each op warns once. TOONY_FALLBACK=0 makes the fallback an error, so the
coverage of native kernels can be measured honestly.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

from . import copy, device_module, metrics

_warned: set[str] = set()
_decomposing: set[torch._ops.OpOverload] = set()  # ops whose decomposition is running now
_TOONY = "toony:0"


class _Mirror:
    """Host copies of the toony storages one op call touches."""

    def __init__(self) -> None:
        self.host: dict[int, torch.UntypedStorage] = {}  # toony StorageImpl id -> host copy
        self.device: dict[int, torch.UntypedStorage] = {}  # toony StorageImpl id -> toony storage
        self.by_host: dict[int, int] = {}  # host StorageImpl id -> toony StorageImpl id
        self.tensors: dict[int, torch.Tensor] = {}  # host TensorImpl id -> the toony tensor it stands for
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (toony tensor, host stand-in)

    def to_cpu(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            if x.device.type != "toony":
                return x
            st = x.untyped_storage()
            key = st._cdata
            if key not in self.host:
                host = copy.storage_to_host(st)
                self.host[key] = host
                self.device[key] = st
                self.by_host[host._cdata] = key
            c = torch.empty(0, dtype=x.dtype).set_(self.host[key], x.storage_offset(), x.shape, x.stride())
            if x.is_conj():
                c = c.conj()
            if x.is_neg():
                c = c._neg_view()
            self.tensors[c._cdata] = x
            self.pairs.append((x, c))
            return c
        if isinstance(x, torch.device) and x.type == "toony":
            return torch.device("cpu")
        return x

    def write_back(self, written: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        done: set[int] = set()
        for t, c in written:
            key = t.untyped_storage()._cdata
            c_st = c.untyped_storage()
            if key not in done:
                done.add(key)
                if c_st.nbytes() != t.untyped_storage().nbytes():
                    # The CPU op resized its output: resize the toony storage in place (keeping the
                    # StorageImpl, so every alias of it sees the new bytes).
                    t.untyped_storage().resize_(c_st.nbytes())
                copy.host_storage_to_device(c_st, t.untyped_storage())
            if (t.shape, t.stride(), t.storage_offset()) != (c.shape, c.stride(), c.storage_offset()):
                t.set_(t.untyped_storage(), c.storage_offset(), c.shape, c.stride())

    def to_device(self, x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or x.device.type != "cpu":
            return x
        orig = self.tensors.get(x._cdata)
        if orig is not None:
            return orig  # in-place and out= ops return their argument
        key = self.by_host.get(x.untyped_storage()._cdata)
        if key is not None:
            # A view of an argument: the same view of the toony storage.
            return torch.empty(0, dtype=x.dtype, device=_TOONY).set_(
                self.device[key], x.storage_offset(), x.shape, x.stride()
            )
        if copy.is_dense(x):
            out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=_TOONY)
        else:
            out = torch.empty(x.shape, dtype=x.dtype, device=_TOONY)
        copy.from_host(out, x)
        return out


def _mix64(a: int, b: int) -> int:
    """splitmix64 of (a, b): a CPU seed per (toony seed, offset) pair."""
    z = (a * 0x9E3779B97F4A7C15 + b + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


def _cpu_generator(gen: torch.Generator | None) -> torch.Generator:
    """A CPU generator seeded from the toony generator's (seed, offset); advances the toony offset, so a
    random op on the fallback is reproducible under torch.manual_seed and never repeats a stream."""
    if gen is None:
        gen = device_module.default_generators[0]
    seed, offset = gen.initial_seed(), gen.get_offset()
    gen.set_offset(offset + 1)
    return torch.Generator().manual_seed(_mix64(seed, offset))


def _swap_generators(op: torch._ops.OpOverload, args: list[Any], kwargs: dict[str, Any]) -> None:
    for i, arg in enumerate(op._schema.arguments):
        if "Generator" not in str(arg.type):  # "Generator" or "Optional[Generator]"
            continue
        if arg.name in kwargs:
            gen = kwargs[arg.name]
        elif not arg.kwarg_only and i < len(args):
            gen = args[i]
        else:
            gen = None
        if gen is not None and gen.device.type != "toony":
            continue
        cpu_gen = _cpu_generator(gen)
        if arg.name in kwargs or arg.kwarg_only or i >= len(args):
            kwargs[arg.name] = cpu_gen
        else:
            args[i] = cpu_gen


def _written_args(op: torch._ops.OpOverload, args: tuple, kwargs: dict, m: _Mirror) -> list:
    """(toony tensor, host stand-in) for every argument the schema says the op writes."""
    out = []
    for i, arg in enumerate(op._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = kwargs.get(arg.name) if (arg.kwarg_only or i >= len(args)) else args[i]
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, torch.Tensor) and v.device.type == "toony":
                out.append(v)
    by_id = {id(t): c for t, c in m.pairs}
    return [(t, by_id[id(t)]) for t in out]


def _decomposition(op: torch._ops.OpOverload) -> Any:
    from torch._decomp import decomposition_table

    fn = decomposition_table.get(op)
    if fn is None or op in _decomposing:
        return None
    if any(r.alias_info is not None and not r.alias_info.is_write for r in op._schema.returns):
        return None  # a view op: the decomposition would copy
    return fn


def _check_inplace_shape(op: torch._ops.OpOverload, args: tuple, kwargs: dict) -> None:
    """Raise what torch raises when an in-place op's result would not have self's shape (operands broadcasting
    beyond self, addr_ on a 0-d self) or cannot be cast to self's dtype (logit_ of ints): its decomposition
    computes out of place and copies back, resizing and casting self, which an in-place op never does. The
    result's shape and dtype are the functional twin's, from its meta kernel."""
    from .eager import check_fits_self, meta_outputs

    functional = _inplace_twin(op)
    if functional is None or not args or not isinstance(args[0], torch.Tensor):
        return
    try:
        meta = meta_outputs(functional, args, kwargs)
    except Exception:  # noqa: BLE001 - the op itself raises torch's error for arguments its meta rejects
        return
    if isinstance(meta, torch.Tensor):
        check_fits_self(args[0], meta.shape)
        if not torch.can_cast(meta.dtype, args[0].dtype):  # logit_ of an int tensor
            raise RuntimeError(f"result type {meta.dtype} can't be cast to the desired output type {args[0].dtype}")


@functools.cache
def _inplace_twin(op: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """The functional overload an in-place overload (`addr_`) is the twin of: same arguments, no underscore."""
    packet = getattr(torch.ops.aten, op._schema.name.split("::")[-1].rstrip("_"), None)
    args = [(a.name, str(a.type)) for a in op._schema.arguments]
    for name in packet.overloads() if packet is not None else []:
        cand = getattr(packet, name)
        if [(a.name, str(a.type)) for a in cand._schema.arguments] == args:
            return cand
    return None


def _functional_twin(op: torch._ops.OpOverload) -> tuple[torch._ops.OpOverload, list[str]] | None:
    """For an out= overload (`hypot.out`), the functional overload taking the same other arguments and the
    names of its out arguments; None for any other op."""
    outs = [a.name for a in op._schema.arguments if a.is_out]
    if not outs or not all(a.kwarg_only for a in op._schema.arguments if a.is_out):
        return None
    args = [(a.name, str(a.type)) for a in op._schema.arguments if not a.is_out]
    packet = op.overloadpacket
    for name in packet.overloads():
        cand = getattr(packet, name)
        if [(a.name, str(a.type)) for a in cand._schema.arguments] == args and cand._schema.returns:
            return cand, outs
    return None


def _takes(fn: Callable | None, names: list[str]) -> bool:
    """Whether fn accepts these keyword arguments."""
    if fn is None:
        return False
    params = inspect.signature(fn).parameters
    return all(n in params for n in names) or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _via_functional(fn: Callable, out_names: list[str], args: tuple, kwargs: dict) -> Any:
    """An out= op as fn (its functional twin or a decomposition without out tensors: those registered for a
    whole op packet do not all take the out= overload's argument names) copied into the out tensors, with
    torch's out= rules: out is resized if its shape differs, and the result must cast to out's dtype."""
    from torch._prims_common.wrappers import _maybe_resize_out, _safe_copy_out

    outs = [kwargs.pop(n) for n in out_names]
    result = fn(*args, **kwargs)
    results = result if isinstance(result, (tuple, list)) else (result,)
    for out, r in zip(outs, results):
        _maybe_resize_out(out, r.shape)
        _safe_copy_out(copy_from=r, copy_to=out, exact_dtype=False)
    return outs[0] if len(outs) == 1 else tuple(outs)


def backend_fallback(op: torch._ops.OpOverload, *args: Any, **kwargs: Any) -> Any:
    """The PrivateUse1 kernel of every op without one of its own."""
    decomposition = _decomposition(op)
    twin = _functional_twin(op)
    if twin is not None and not _takes(decomposition, twin[1]) and (decomposition or op not in _decomposing):
        # an out= op computed out of place (by a decomposition that takes no out tensors, else by its
        # functional twin) and copied into out; a functional twin calling back into this op goes to the CPU
        _decomposing.add(op)
        try:
            return _via_functional(decomposition or twin[0], twin[1], args, dict(kwargs))
        finally:
            _decomposing.discard(op)
    if decomposition is None:
        return cpu_fallback(op, *args, **kwargs)
    if op._schema.name.endswith("_") and args:
        _check_inplace_shape(op, args, kwargs)
    if op._schema.name.endswith("_") and args:  # an in-place decomposition (_foreach_lerp_, addcmul_)
        from . import lazy
        for t in args[0] if isinstance(args[0], (list, tuple)) else [args[0]]:
            if isinstance(t, torch.Tensor) and t.device.type == "toony" and t.numel():
                lazy.realize_if_it_reads_others(lazy.addr_of(t))
    metrics.count_decomposition(op.name())
    _decomposing.add(op)
    try:
        return decomposition(*args, **kwargs)
    finally:
        _decomposing.discard(op)


def cpu_fallback(op: torch._ops.OpOverload, *args: Any, **kwargs: Any) -> Any:
    """Run op on the CPU over host copies of its toony arguments."""
    name = op.name()
    if os.environ.get("TOONY_FALLBACK", "1") == "0":
        raise NotImplementedError(
            f"toony: {name} has no toony kernel and the CPU fallback is off (TOONY_FALLBACK=0). "
            "Unset TOONY_FALLBACK to run it on the CPU."
        )
    metrics.count_fallback(name)
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f"toony: {name} has no toony kernel yet; running it on the CPU (copy in, run, copy out). "
            "Set TOONY_FALLBACK=0 to make this an error.",
            stacklevel=2,
        )
    m = _Mirror()
    cpu_args = [tree_map(m.to_cpu, a) for a in args]
    cpu_kwargs = {k: tree_map(m.to_cpu, v) for k, v in kwargs.items()}
    _swap_generators(op, cpu_args, cpu_kwargs)
    result = op(*cpu_args, **cpu_kwargs)
    m.write_back(_written_args(op, args, kwargs, m))
    return tree_map(m.to_device, result)


_lib: torch.library.Library | None = None
_checks: list[torch.library.Library] = []


def register() -> None:
    global _lib
    if _lib is not None:
        return
    lib = torch.library.Library("_", "IMPL")  # noqa: TOR901 - a backend fallback, not an op
    lib.fallback(backend_fallback, dispatch_key="PrivateUse1")
    _lib = lib


def register_inplace_checks() -> None:
    """In-place ops whose only kernel is CompositeExplicitAutograd (addr_, ldexp_) run as their out= overload
    with self as out, and out= resizes: torch's CPU kernels refuse a result that does not fit self instead
    (resize_as_ resizes self by design and is left alone).
    Each gets a PrivateUse1 kernel that checks the shape first (after every other kernel is registered, so
    ops toony implements keep their own)."""
    lib = torch.library.Library("aten", "IMPL")  # noqa: TOR901 - kernels for existing aten ops
    _checks.append(lib)
    explicit = torch._C.DispatchKey.CompositeExplicitAutograd
    for qualified in torch._C._dispatch_get_all_op_names():  # "aten::name" or "aten::name.overload"
        base, _, overload = qualified.removeprefix("aten::").partition(".")
        if not qualified.startswith("aten::") or not base.endswith("_") or base.startswith("resize"):
            continue
        if not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CompositeExplicitAutograd") or any(
                torch._C._dispatch_has_kernel_for_dispatch_key(qualified, k)
                for k in ("CompositeImplicitAutograd", "PrivateUse1")):
            continue
        op = getattr(getattr(torch.ops.aten, base, None), overload or "default", None)
        twin = _inplace_twin(op) if op is not None else None
        if twin is None or any(r.alias_info is not None for r in twin._schema.returns) or \
                str(op._schema.arguments[0].type) != "Tensor":
            continue  # no functional twin, a view (squeeze_ changes self's shape by design), a list (_foreach_)

        def kernel(*args: Any, op: torch._ops.OpOverload = op, **kwargs: Any) -> Any:
            _check_inplace_shape(op, args, kwargs)
            return op._op_dk(explicit, *args, **kwargs)

        lib.impl(op, kernel, "PrivateUse1")
