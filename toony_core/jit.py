"""A captured schedule: kernels scheduled, rendered and compiled once, then replayed with new buffers.

A `JitBuilder` schedules lazy tensors (every call to `schedule` is one schedule, so work fuses across
everything passed together) and records host steps between them. Some buffers are *slots*: placeholders
for buffers that change from call to call (the inputs and outputs of a compiled graph). `finish` gives a
`JitProgram`: each kernel gets its own OpenCL kernel object with its fixed arguments set once, so a call
only sets the slot arguments and enqueues the kernels; nothing is scheduled, rendered or compiled again.
Buffers that are neither slots nor the caller's (intermediates) belong to the program and are reused by
every call, so calls must not overlap (the runtime's queue is in order and toony is single-threaded).
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyopencl as cl

from . import scheduler as schedule_mod
from .helpers import debug_level
from .realize import Stats, get_kernel
from .runtime import Buffer, device
from .scheduler import create_schedule
from .tensor import Tensor
from .uop import Ops

# a host step gets a function from a buffer the program was built with to the buffer bound in this call
Resolve = Callable[[Buffer], Buffer]
HostFn = Callable[[Resolve], None]


@dataclass
class _Launch:
    name: str
    kernel: cl.Kernel  # this program's own kernel object: its arguments stay set between calls
    global_size: tuple[int, ...]
    local_size: tuple[int, ...] | None


def schedule_lazy(tensors: Sequence[Tensor]) -> tuple[list[schedule_mod.ScheduleItem], list[Tensor]]:
    """Schedule tensors as one graph, ignoring values realized earlier elsewhere: a captured program must
    compute everything it reads from its own inputs, never from a buffer someone else may overwrite."""
    saved = schedule_mod.realized
    schedule_mod.realized = type(saved)()
    try:
        items, outputs = create_schedule(list(dict.fromkeys(t.uop for t in tensors)))
    finally:
        schedule_mod.realized = saved
    return items, [Tensor(outputs[t.uop]) for t in tensors]


class HostMemory:
    """Host memory that kernels read and write in place, for binding to a slot. Only where the device works in
    host memory (a CPU OpenCL device): there a buffer made with USE_HOST_PTR is the host memory itself, so
    no copy is needed, and the data is the host's once the queue has finished."""

    __slots__ = ("cl", "nbytes")

    def __init__(self, host: object, nbytes: int):
        self.cl = cl.Buffer(device().context, cl.mem_flags.READ_WRITE | cl.mem_flags.USE_HOST_PTR, hostbuf=host)
        self.nbytes = nbytes


@functools.lru_cache(maxsize=256)
def host_memory(address: int, nbytes: int) -> HostMemory:
    """The host memory at address as a bindable buffer. Kept per (address, nbytes): a graph called again with
    the same CPU tensors (or new ones the CPU allocator put at the same place) binds the same OpenCL buffer,
    so its kernels' arguments need not be set again. The buffer only names the memory; nothing is cached."""
    return HostMemory((ctypes.c_char * nbytes).from_address(address), nbytes)


def can_use_host_memory() -> bool:
    dev = device()
    return dev.host_unified_memory and not dev.is_gpu


def base_buffer(t: Tensor) -> tuple[Buffer, int] | None:
    """(buffer, element count) when t is a buffer seen whole (possibly reshaped); None otherwise."""
    u = t.uop
    while u.op is Ops.RESHAPE:
        u = u.src[0]
    if u.op is not Ops.BUFFER:
        return None
    return u.arg[0], u.arg[1]


class JitBuilder:
    """Collects scheduled kernels and host steps in call order."""

    def __init__(self) -> None:
        self._steps: list[schedule_mod.ScheduleItem | HostFn] = []
        self._slots: list[Buffer] = []

    def slot(self, nbytes: int) -> Buffer:
        """A placeholder buffer that every call binds to a buffer of its own."""
        buf = Buffer(nbytes)
        self._slots.append(buf)
        return buf

    def make_slot(self, buf: Buffer) -> None:
        """Turn a buffer the program computes (an output) into a slot: each call binds a fresh one."""
        if buf not in self._slots:
            self._slots.append(buf)

    def is_slot(self, buf: Buffer) -> bool:
        return any(b is buf for b in self._slots)

    @property
    def slots(self) -> list[Buffer]:
        return list(self._slots)

    def schedule(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Schedule these tensors together now; return each as a tensor over the buffer that will hold it."""
        if not tensors:
            return []
        items, outs = schedule_lazy(tensors)
        self._steps.extend(items)
        return outs

    def host(self, fn: HostFn) -> None:
        """A host step, run between the kernels scheduled before and after it."""
        self._steps.append(fn)

    def finish(self) -> JitProgram:
        return JitProgram(self._steps, self._slots)


class JitProgram:
    """Replays a captured schedule. Call it with one buffer per slot (in slot order)."""

    def __init__(self, steps: list[schedule_mod.ScheduleItem | HostFn], slots: list[Buffer]):
        self.slots = slots
        slot_index = {id(b): i for i, b in enumerate(slots)}
        self._binds: list[list[tuple[cl.Kernel, int]]] = [[] for _ in slots]
        self._runs: list[list[_Launch] | HostFn] = []  # consecutive kernels grouped, host steps between
        self.kernel_names: list[str] = []
        self._keep: list[Buffer] = []  # intermediates this program owns
        for step in steps:
            if not isinstance(step, schedule_mod.ScheduleItem):
                self._runs.append(step)
                continue
            ck = get_kernel(step.ast)
            if ck.global_size == 0:
                continue
            kern = cl.Kernel(ck.kernel.program, ck.kernel.function_name)
            for i, buf in enumerate(step.buffers):
                j = slot_index.get(id(buf))
                if j is None:
                    kern.set_arg(i, buf.cl)
                    self._keep.append(buf)
                else:
                    self._binds[j].append((kern, i))
            launch = _Launch(ck.name, kern, (ck.global_size,), None if ck.local_size is None else (ck.local_size,))
            if self._runs and isinstance(self._runs[-1], list):
                self._runs[-1].append(launch)
            else:
                self._runs.append([launch])
            self.kernel_names.append(ck.name)
        self.kernels = len(self.kernel_names)
        self._queue = device().queue
        self._bound: list[Buffer] = list(slots)
        self._mems: list[cl.Buffer | None] = [None] * len(slots)  # what each slot's kernel args point at now

    def __call__(self, bindings: Sequence[Buffer | HostMemory]) -> None:
        if len(bindings) != len(self.slots):
            raise ValueError(f"this program has {len(self.slots)} slots, {len(bindings)} buffers were given")
        mems = self._mems
        for j, (binds, buf) in enumerate(zip(self._binds, bindings)):
            if binds and buf.cl is not mems[j]:  # a slot bound to the same memory as last call keeps its args
                mems[j] = buf.cl
                for kern, i in binds:
                    kern.set_arg(i, mems[j])
        self._bound = list(bindings)
        dbg = debug_level()
        start = time.perf_counter()
        queue, enqueue = self._queue, cl.enqueue_nd_range_kernel
        for run in self._runs:
            if isinstance(run, list):
                for launch in run:
                    ev = enqueue(queue, launch.kernel, launch.global_size, launch.local_size)
                    if dbg >= 2:
                        ev.wait()
                        t = (ev.profile.end - ev.profile.start) * 1e-9
                        print(f"  {launch.name:<40} {t * 1e6:9.1f} us")
            else:
                run(self._resolve)
        Stats.kernels_launched += self.kernels
        if dbg >= 1:
            print(f"jit: {self.kernels} kernels replayed in {(time.perf_counter() - start) * 1e3:.2f} ms")

    def _resolve(self, buf: Buffer) -> Buffer:
        for slot, bound in zip(self.slots, self._bound):
            if slot is buf:
                return bound
        return buf
