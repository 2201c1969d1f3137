"""Eager kernels for batch norm's forms that write the running statistics in place.

native_batch_norm, _native_batch_norm_legit and _batch_norm_with_update update running_mean and
running_var as a side effect (the first without even saying so in its schema), which a lowering table entry
(pure: lazy values in, lazy values out) cannot express. These kernels compute the batch statistics once
(mean and variance realized together: two reduction kernels), build the output as one lazy elementwise
value over them, and write the new running statistics into the caller's tensors right away, so no lazy
chain of running-stat updates keeps old activations alive. Output shapes and dtypes follow the CPU kernels
(eval mode saves empty statistics; reduced-precision inputs with float32 parameters save float32 ones).
The pure forms (_native_batch_norm_legit_functional, ...) are table entries in lowering_nn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from toony_core import Tensor

from . import extra_kernels
from .dtypes import to_toony
from .lowering_nn import _inv_sqrt, batch_norm_apply, batch_norm_functional, batch_norm_stats, per_count, running_update

_HALF = (torch.float16, torch.bfloat16)


def _meta(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _stat_dtype(x: torch.Tensor, *params: torch.Tensor | None) -> torch.dtype:
    """CPU rule: a half/bfloat16 input with float32 parameters or statistics saves float32 statistics."""
    if x.dtype in _HALF and any(p is not None and p.dtype == torch.float32 for p in params):
        return torch.float32
    return x.dtype


def _check(x: torch.Tensor, op: str, *params: torch.Tensor | None) -> None:
    if x.dim() < 2:
        raise RuntimeError(f"{op}: expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}")
    c = x.shape[1]
    for p in params:
        if p is not None and p.numel() != c:
            raise RuntimeError(f"{op}: expected a per-channel tensor of {c} elements, got shape {tuple(p.shape)}")


def batch_norm_eager(op: str, x_t: torch.Tensor, w_t: torch.Tensor | None, b_t: torch.Tensor | None,
                     rm_t: torch.Tensor | None, rv_t: torch.Tensor | None, training: bool, momentum: float,
                     eps: float, update: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, save_mean, save_invstd) as torch tensors; with update, rm_t and rv_t are written in place."""
    from . import eager, lazy

    _check(x_t, op, w_t, b_t, rm_t, rv_t)
    ins = [t for t in (x_t, w_t, b_t, rm_t, rv_t) if t is not None]

    def lz(t: torch.Tensor | None) -> Tensor | None:
        return None if t is None else lazy.as_lazy(t, op)

    x, w, b, rm, rv = lz(x_t), lz(w_t), lz(b_t), lz(rm_t), lz(rv_t)
    stat = _stat_dtype(x_t, w_t, b_t, rm_t, rv_t)
    c = x_t.shape[1]
    out_meta = torch.empty_like(x_t, device="meta")
    if not training:
        if rm is None or rv is None:
            raise RuntimeError(f"{op}: running_mean and running_var must be defined in evaluation mode")
        out, *_ = batch_norm_functional(x, w, b, rm, rv, False, momentum, eps)
        empty = _meta((0,), stat)
        return (eager.new_output(out_meta, out, ins), eager.new_output(empty, Tensor.zeros((0,)), []),
                eager.new_output(empty, Tensor.zeros((0,)), []))
    acc = torch.float32 if x_t.dtype in _HALF else x_t.dtype
    mean, var_sum = batch_norm_stats(x)
    mean_t = eager.new_output(_meta((c,), acc), mean, ins)
    vsum_t = eager.new_output(_meta((c,), acc), var_sum, ins)
    lazy.realize_storages([lazy.addr_of(t) for t in (mean_t, vsum_t) if t.numel()])
    mean, var_sum = lz(mean_t), lz(vsum_t)
    n = x_t.numel() // c if c else 0
    if stat in _HALF:  # CPU keeps mean and the squared-deviation sum in half and goes on from the rounded values
        tt = to_toony(stat)
        mean = mean.cast(tt).cast(mean.dtype)
        if stat == torch.bfloat16:  # and its bfloat16 path (not its float16 one) the squared-deviation sum too
            var_sum = var_sum.cast(tt).cast(var_sum.dtype)
    invstd = _inv_sqrt(per_count(var_sum, n) + eps)
    if stat in _HALF:
        invstd = invstd.cast(to_toony(stat)).cast(invstd.dtype)
    stats = [mean_t, vsum_t]
    if update and rm_t is not None and rv_t is not None:
        eager.write_into(rm_t, running_update(rm, mean, momentum), [rm_t, *stats])
        eager.write_into(rv_t, running_update(rv, per_count(var_sum, n - 1), momentum), [rv_t, *stats])
        lazy.realize_storages([lazy.addr_of(t) for t in (rm_t, rv_t) if t.numel()])
    out = batch_norm_apply(x, mean, invstd, w, b)
    return (eager.new_output(out_meta, out, [t for t in (x_t, w_t, b_t) if t is not None] + stats),
            eager.new_output(_meta((c,), stat), mean, stats), eager.new_output(_meta((c,), stat), invstd, stats))


def _native_batch_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                       running_mean: torch.Tensor | None, running_var: torch.Tensor | None, training: bool,
                       momentum: float, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch_norm_eager("native_batch_norm", x, weight, bias, running_mean, running_var, training, momentum,
                            eps, update=True)


def _native_batch_norm_legit(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                             running_mean: torch.Tensor, running_var: torch.Tensor, training: bool,
                             momentum: float, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch_norm_eager("_native_batch_norm_legit", x, weight, bias, running_mean, running_var, training,
                            momentum, eps, update=True)


def _native_batch_norm_legit_no_stats(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                                      training: bool, momentum: float, eps: float) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # an eager kernel, not a table entry: torch's meta kernel saves float32 statistics for half inputs, the CPU
    # (which the device matches) saves them in the input type
    return batch_norm_eager("_native_batch_norm_legit.no_stats", x, weight, bias, None, None, training, momentum,
                            eps, update=False)


def _reserve() -> torch.Tensor:
    return torch.empty((0,), dtype=torch.uint8, device="toony")


def _batch_norm_with_update(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                            running_mean: torch.Tensor, running_var: torch.Tensor, momentum: float,
                            eps: float) -> tuple[torch.Tensor, ...]:
    out = batch_norm_eager("_batch_norm_with_update", x, weight, bias, running_mean, running_var, True, momentum,
                           eps, update=True)
    return (*out, _reserve())


def _batch_norm_no_update(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                          running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
                          eps: float) -> tuple[torch.Tensor, ...]:
    training = running_mean is None or running_var is None
    out = batch_norm_eager("_batch_norm_no_update", x, weight, bias, running_mean, running_var, training,
                           momentum, eps, update=False)
    return (*out, _reserve())


def _batch_norm_with_update_functional(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                                       running_mean: torch.Tensor, running_var: torch.Tensor, momentum: float,
                                       eps: float) -> tuple[torch.Tensor, ...]:
    new_rm, new_rv = running_mean.clone(), running_var.clone()
    out = batch_norm_eager("_batch_norm_with_update_functional", x, weight, bias, new_rm, new_rv, True, momentum,
                           eps, update=True)
    return (*out, _reserve(), new_rm, new_rv)


def _out_form(fn: Callable[..., tuple[torch.Tensor, ...]], names: tuple[str, ...]) -> Callable[..., tuple]:
    """The out= overload of a batch norm form: compute, then write each result into its out tensor."""
    def kernel(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        from . import eager, lazy
        outs = [kwargs.pop(n) for n in names]
        for o, r in zip(outs, fn(*args, **kwargs)):
            if o.dtype != r.dtype:
                raise RuntimeError(f"Expected out tensor to have dtype {r.dtype}, but got {o.dtype} instead")
            if o.shape != r.shape:
                o.resize_(r.shape)
            eager.write_into(o, lazy.as_lazy(r), [r])
        return tuple(outs)
    return kernel


extra_kernels.kernel("native_batch_norm.out", _out_form(_native_batch_norm, ("out", "save_mean", "save_invstd")))
extra_kernels.kernel("_native_batch_norm_legit.out",
                     _out_form(_native_batch_norm_legit, ("out", "save_mean", "save_invstd")))
extra_kernels.kernel("_native_batch_norm_legit.no_stats_out",
                     _out_form(_native_batch_norm_legit_no_stats, ("out", "save_mean", "save_invstd")))
extra_kernels.kernel("_native_batch_norm_legit.no_stats", _native_batch_norm_legit_no_stats)
extra_kernels.kernel("native_batch_norm.default", _native_batch_norm)
extra_kernels.kernel("_native_batch_norm_legit.default", _native_batch_norm_legit)
extra_kernels.kernel("_batch_norm_with_update.default", _batch_norm_with_update)
extra_kernels.kernel("_batch_norm_no_update.default", _batch_norm_no_update)
extra_kernels.kernel("_batch_norm_with_update_functional.default", _batch_norm_with_update_functional)
