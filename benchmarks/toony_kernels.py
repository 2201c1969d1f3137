"""Per-kernel device times of one toony call, with the bytes each kernel moves.

Times come from toony's own TOONY_DEBUG=2 output (OpenCL profiling events, one wait per kernel) of one call.
Eager realizes print each kernel's GB/s; replays of a captured program (toony_core.jit) print only times, and
kernel names are not unique (every 16M-element elementwise kernel is `E_16777216`), so `install` records, for
every JitProgram built, its kernel names and each kernel's bytes in launch order; a replay's lines (closed by
its `jit: N kernels replayed` line) are matched to the program with the same name sequence.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Any

from toony_core import jit
from toony_core.realize import get_kernel
from toony_core.scheduler import ScheduleItem

_EAGER = re.compile(r"^\s+(\S+)\s+([\d.]+) us\s+([\d.]+) GB/s")
_REPLAY = re.compile(r"^\s+(\S+)\s+([\d.]+) us\s*$")
_REPLAY_END = re.compile(r"^jit: (\d+) kernels replayed")


@dataclass
class KernelTime:
    name: str
    seconds: float
    nbytes: float | None  # None: the kernel could not be matched to its program

    @property
    def gbs(self) -> float | None:
        return self.nbytes / self.seconds / 1e9 if self.nbytes is not None and self.seconds > 0 else None


_programs: list[tuple[tuple[str, ...], tuple[int, ...]]] = []  # (names, bytes) per JitProgram, in build order


def install() -> None:
    """Record every JitProgram built from now on (wraps its __init__; the original runs unchanged)."""
    if getattr(jit.JitProgram.__init__, "_bench_recorder", False):
        return
    original = jit.JitProgram.__init__

    def init(self: jit.JitProgram, steps: list, slots: list) -> None:
        original(self, steps, slots)
        sizes = []
        for step in steps:
            if isinstance(step, ScheduleItem):
                k = get_kernel(step.ast)  # cached: the program just compiled it
                if k.global_size:
                    sizes.append(k.bytes_moved)
        if len(sizes) == len(self.kernel_names):
            _programs.append((tuple(self.kernel_names), tuple(sizes)))

    init._bench_recorder = True  # type: ignore[attr-defined]
    jit.JitProgram.__init__ = init  # type: ignore[method-assign]


def _bytes_for(names: list[str]) -> tuple[int, ...] | None:
    for prog_names, sizes in reversed(_programs):  # the newest program of that shape is this workload's
        if list(prog_names) == names:
            return sizes
    return None


def profile(call: Callable[[], Any]) -> tuple[Any, list[KernelTime]]:
    """Run call() once at TOONY_DEBUG=2; return its result and every kernel it launched, in launch order."""
    out = io.StringIO()
    saved = os.environ.get("TOONY_DEBUG")
    os.environ["TOONY_DEBUG"] = "2"
    try:
        with redirect_stdout(out):
            result = call()
    finally:
        if saved is None:
            del os.environ["TOONY_DEBUG"]
        else:
            os.environ["TOONY_DEBUG"] = saved
    kernels: list[KernelTime] = []
    pending: list[tuple[str, float]] = []  # replay lines waiting for their program's end line
    for line in out.getvalue().splitlines():
        if m := _EAGER.match(line):
            t = float(m[2]) * 1e-6
            kernels.append(KernelTime(m[1], t, float(m[3]) * 1e9 * t))
        elif m := _REPLAY.match(line):
            pending.append((m[1], float(m[2]) * 1e-6))
        elif _REPLAY_END.match(line):
            sizes = _bytes_for([n for n, _ in pending])
            for i, (name, t) in enumerate(pending):
                kernels.append(KernelTime(name, t, None if sizes is None else float(sizes[i])))
            pending = []
    kernels.extend(KernelTime(n, t, None) for n, t in pending)
    return result, kernels
