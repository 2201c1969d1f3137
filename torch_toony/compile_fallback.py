"""An op toony cannot lower, run on the CPU inside a captured graph.

What the op reads is scheduled (so the kernels before it produce buffers), a host step of the captured
program copies those buffers out, runs the op with PyTorch's CPU kernel and copies its results into buffers
the rest of the graph reads. The host step runs at every call of the compiled graph, between the kernels
that come before and after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from toony_core import Tensor as Lazy
from toony_core.jit import JitBuilder, base_buffer
from toony_core.runtime import Buffer

from .compile_meta import Meta, contiguous_strides
from .dtypes import TO_TORCH, to_toony
from .metrics import count_fallback


def host_bytes(t: torch.Tensor) -> np.ndarray:
    """A uint8 numpy view of a contiguous CPU tensor's bytes."""
    return t.reshape(-1).view(torch.uint8).numpy()


def add_cpu_step(builder: JitBuilder, op: torch._ops.OpOverload, args: Any, kwargs: Any, meta: Any,
                 arg_metas: list[Any]) -> tuple[Any, list[tuple[int, Lazy]]]:
    """Capture `op(*args, **kwargs)` as a host step. Returns the op's results as lazy values over the buffers
    the step fills, and (leaf position, realized value) for each lazy argument, so later readers of those
    values read the buffers instead of computing them again. arg_metas: per flattened argument, its Meta
    (the layout the op saw when traced) or None."""
    leaves, spec = tree_flatten((args, kwargs))
    positions = [i for i, x in enumerate(leaves) if isinstance(x, Lazy)]
    # the step reads buffers the program owns (a slot may be bound to memory the host cannot copy from)
    owned = [leaves[i].contiguous() if _is_slot(builder, leaves[i]) else leaves[i] for i in positions]
    realized = builder.schedule(owned)
    reads = []
    for i, r in zip(positions, realized):
        bb = base_buffer(r)
        assert bb is not None
        m = arg_metas[i] if i < len(arg_metas) else None
        layout = (m.shape, m.stride) if isinstance(m, Meta) and m.stride != contiguous_strides(m.shape) else None
        reads.append((i, bb[0], tuple(leaves[i].shape), TO_TORCH[leaves[i].dtype], layout))
    metas = [meta] if isinstance(meta, Meta) else list(meta)
    writes = [Buffer(m.numel * torch.empty((), dtype=m.dtype).element_size())
              if isinstance(m, Meta) and m.numel else None for m in metas]
    cpu = torch.device("cpu")

    def step(resolve: Callable[[Buffer], Buffer]) -> None:
        host = list(leaves)
        for i, buf, shape, dtype, layout in reads:
            t = torch.empty(shape, dtype=dtype)
            if t.numel():
                resolve(buf).copyout(host_bytes(t))
            if layout is not None:  # the layout the op was traced with (some CPU kernels care)
                t = torch.empty_strided(*layout, dtype=dtype).copy_(t)
            host[i] = t
        host = [cpu if isinstance(x, torch.device) else x for x in host]
        cargs, ckwargs = tree_unflatten(host, spec)
        result = op(*cargs, **ckwargs)
        results = [result] if isinstance(result, torch.Tensor) else list(result)
        for r, buf in zip(results, writes):
            if buf is not None and isinstance(r, torch.Tensor):
                resolve(buf).copyin(host_bytes(r.contiguous()))
        count_fallback(op.name())

    builder.host(step)
    outs = []
    for m, buf in zip(metas, writes):
        if not isinstance(m, Meta):
            outs.append(None)
        elif buf is None:
            outs.append(Lazy.zeros(m.shape, to_toony(m.dtype)))
        else:
            outs.append(Lazy.from_buffer(buf, to_toony(m.dtype), m.numel).reshape(m.shape))
    return (outs[0] if isinstance(meta, Meta) else outs), list(zip(positions, realized))


def _is_slot(builder: JitBuilder, t: Lazy) -> bool:
    bb = base_buffer(t)
    return bb is not None and builder.is_slot(bb[0])
