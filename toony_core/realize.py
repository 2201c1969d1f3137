"""Realize: schedule lazy tensors, compile each distinct kernel once, and run them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyopencl as cl

from .helpers import debug_level
from .lower import lower
from .render import render
from .runtime import compile_kernel, launch, wall
from .scheduler import ScheduleItem, create_schedule, realized
from .uop import Ops, UOp, pretty

if TYPE_CHECKING:
    from .tensor import Tensor


@dataclass
class CompiledKernel:
    name: str
    source: str
    kernel: cl.Kernel
    global_size: int
    local_size: int | None
    bytes_moved: int  # for GB/s at TOONY_DEBUG=2

    def __call__(self, buffers: list, timed: bool = False) -> float:
        if self.global_size == 0:
            return 0.0
        return launch(self.kernel, self.global_size, self.local_size, [b.cl for b in buffers], timed)


class Stats:
    kernels_launched = 0


# kernels by AST: ASTs are hash-consed and name parameters, not buffers, so equal work finds its kernel
_kernels: dict[UOp, CompiledKernel] = {}


def get_kernel(ast: UOp) -> CompiledKernel:
    if (k := _kernels.get(ast)) is not None:
        return k
    info = lower(ast)
    params = {u.arg[0]: u.dtype for u in ast.toposort() if u.op is Ops.DEFINE_GLOBAL}
    source = render(info.uops, info.name, params)
    if debug_level() >= 5:
        print(pretty(info.uops, limit=10_000))
    if debug_level() >= 4:
        print(source)
    moved = sum(u.arg[1] * u.dtype.itemsize for u in ast.toposort() if u.op is Ops.DEFINE_GLOBAL)
    k = CompiledKernel(info.name, source, compile_kernel(source, info.name), info.global_size, info.local_size, moved)
    _kernels[ast] = k
    return k


def run_schedule(items: list[ScheduleItem]) -> None:
    dbg = debug_level()
    start = wall()
    for item in items:
        k = get_kernel(item.ast)
        t = k(item.buffers, timed=dbg >= 2)
        Stats.kernels_launched += 1
        if dbg >= 2:
            gbs = k.bytes_moved / t / 1e9 if t else 0.0
            print(f"  {k.name:<40} {t * 1e6:9.1f} us  {gbs:7.2f} GB/s  global={k.global_size} local={k.local_size}")
    if dbg >= 1 and items:
        print(f"realize: {len(items)} kernel{'s' if len(items) != 1 else ''} in {(wall() - start) * 1e3:.2f} ms")


def _is_buffer_view(u: UOp) -> bool:
    while u.op is Ops.RESHAPE:
        u = u.src[0]
    return u.op is Ops.BUFFER


def realize(*tensors: Tensor) -> None:
    todo = list({id(t): t for t in tensors if not _is_buffer_view(t.uop)}.values())  # each Tensor once
    if not todo:
        return
    roots = list(dict.fromkeys(t.uop for t in todo))
    items, outputs = create_schedule(roots)
    if debug_level() >= 3:
        for i, it in enumerate(items):
            print(f"kernel {i}: {it.name}  buffers={[b.nbytes for b in it.buffers]}")
    run_schedule(items)
    for t in todo:
        realized[t.uop] = outputs[t.uop]
        t.uop = outputs[t.uop]
