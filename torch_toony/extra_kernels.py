"""PrivateUse1 kernels for ops the lowering table's automatic twins cannot express.

eager.register() makes each LOWERINGS entry the kernel of its functional overload and of the in-place and
out= twins named by ATen's pattern (add_.Tensor, add.out). Some ops need more: in-place ops whose functional
form has another name (normal_ -> normal_functional), out= overloads with other names (sort.values_stable),
ops that mutate arguments besides their outputs (native_batch_norm's running statistics), and eager-only ops
that must stay out of the shared table (random numbers: a compiled graph draws its own at every call).
This module registers those. It reuses the eager layer's kernel builders, looked up at the first call: the
eager module is still importing when the lowering modules register.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .lowering import Lowering

_lib: list[torch.library.Library] = []
REGISTERED: set[str] = set()  # overload names registered here (never also by eager.register)


@functools.cache
def overload(name: str) -> torch._ops.OpOverload:
    base, _, ov = name.partition(".")
    return getattr(getattr(torch.ops.aten, base), ov or "default")


def kernel(name: str, fn: Callable[..., Any]) -> None:
    """Register fn as the PrivateUse1 kernel of aten `name` (overload included, e.g. "normal_.default")."""
    if not _lib:
        _lib.append(torch.library.Library("aten", "IMPL"))  # noqa: TOR901 - implementing existing aten ops
    if name in REGISTERED:
        raise RuntimeError(f"toony: {name} is registered twice")
    REGISTERED.add(name)
    # no allow_override=False: a clash with another Python registration must not take the whole device down
    # at import; tests/torch_toony/test_nn_ops.py checks that nothing here shares an overload with the table
    _lib[0].impl(name.replace(".default", ""), fn, "PrivateUse1")


def _deferred(build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    """A kernel that builds the real one (from the eager layer) at its first call."""
    built: list[Callable[..., Any]] = []

    def k(*args: Any, **kwargs: Any) -> Any:
        if not built:
            built.append(build())
        return built[0](*args, **kwargs)

    return k


def functional(name: str, fn: Callable[..., Any], pointwise: bool = False) -> None:
    """An eager-only functional kernel: fn gets lazy values and returns lazy results, like a table entry."""
    def build() -> Callable[..., Any]:
        from . import eager
        return eager._functional_kernel(overload(name), Lowering(fn, pointwise))
    kernel(name, _deferred(build))


def _with_defaults(op: torch._ops.OpOverload, k: Callable[..., Any]) -> Callable[..., Any]:
    """k called with op's omitted positional defaults filled in: the dispatcher drops trailing arguments equal
    to their defaults, and the functional form that computes the op may have no default for them
    (bernoulli_.float's p=0.5 is a required p in bernoulli.p)."""
    positional = [a for a in op._schema.arguments if not a.kwarg_only]

    def call(*args: Any, **kwargs: Any) -> Any:
        if len(args) < len(positional):
            extra = []
            for a in positional[len(args):]:
                if a.name in kwargs:
                    extra.append(kwargs.pop(a.name))
                elif a.has_default_value():
                    extra.append(a.default_value)
                else:
                    break
            args = (*args, *extra)
        return k(*args, **kwargs)

    return call


def inplace(name: str, functional_name: str, fn: Callable[..., Any], pointwise: bool = False) -> None:
    """In-place op `name` computed by fn, the lowering of `functional_name` (its out-of-place form)."""
    def build() -> Callable[..., Any]:
        from . import eager
        op = overload(name)
        return _with_defaults(op, eager._inplace_kernel(op, overload(functional_name), Lowering(fn, pointwise)))
    kernel(name, _deferred(build))


def out(name: str, functional_name: str, fn: Callable[..., Any], pointwise: bool = False) -> None:
    """out= op `name` computed by fn, the lowering of `functional_name`."""
    def build() -> Callable[..., Any]:
        from . import eager
        op = overload(name)
        outs = [a.name for a in op._schema.arguments if a.is_out]
        return eager._out_kernel(op, overload(functional_name), Lowering(fn, pointwise), outs)
    kernel(name, _deferred(build))


def _efficient_zero_tensor(size: list[int], *, dtype: torch.dtype | None = None, layout: Any = None,
                           device: Any = None, pin_memory: bool | None = None) -> torch.Tensor:
    """Autograd's stand-in for a gradient known to be zero (sgn's backward): an ordinary zero tensor here,
    where the CPU makes a ZeroTensor that skips its arithmetic; the values are the same."""
    return torch.zeros(size, dtype=dtype, device=device)


kernel("_efficientzerotensor.default", _efficient_zero_tensor)
