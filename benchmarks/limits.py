"""The machine's limits, measured in the same run as the workloads: copy bandwidth and matmul throughput.

- torch CPU copy: `dst.copy_(src)` of 64M floats (what a CPU backend can stream).
- toony copy kernel: toony_core's elementwise copy kernel of 64M floats, device time from OpenCL events.
- OpenCL enqueue_copy: pyopencl device-to-device copy of the same bytes (the driver's own copy).
- torch.mm: float32 GFLOP/s on the CPU (2048^3).
Bandwidth counts bytes read plus bytes written.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import pyopencl as cl
import torch

from toony_core import Tensor
from toony_core.realize import get_kernel
from toony_core.runtime import device
from toony_core.scheduler import create_schedule


@dataclass
class Limits:
    copy_floats: int
    torch_copy_gbs: float
    toony_copy_gbs: float  # device time of toony_core's copy kernel
    toony_copy_wall_gbs: float  # the same, wall clock of launch + wait
    cl_copy_gbs: float
    mm_n: int
    torch_mm_gflops: float

    @property
    def device_copy_gbs(self) -> float:
        """The best copy bandwidth seen through the OpenCL device: the reference for toony's kernels."""
        return max(self.toony_copy_gbs, self.cl_copy_gbs)


def _median_time(fn: object, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _torch_copy_time(n: int, reps: int) -> float:
    src, dst = torch.randn(n), torch.empty(n)
    dst.copy_(src)  # first touch of dst's pages outside the timing
    return _median_time(lambda: dst.copy_(src), reps)


def measure(quick: bool) -> Limits:
    n = 1 << (22 if quick else 26)
    reps = 3 if quick else 7
    nbytes = 2 * 4 * n  # read + write

    torch_copy = nbytes / _torch_copy_time(n, reps) / 1e9

    x = Tensor(np.random.default_rng(0).standard_normal(n, dtype=np.float32))
    x.realize()
    items, _ = create_schedule([x.contiguous().uop])
    if len(items) != 1:
        raise RuntimeError(f"toony_core scheduled {len(items)} kernels for one copy")
    kernel, buffers = get_kernel(items[0].ast), items[0].buffers
    kernel(buffers, timed=True)  # first touch of the output pages
    dev_times, wall_times = [], []
    for _ in range(reps):
        start = time.perf_counter()
        dev_times.append(kernel(buffers, timed=True))
        wall_times.append(time.perf_counter() - start)
    toony_copy = nbytes / statistics.median(dev_times) / 1e9
    toony_copy_wall = nbytes / statistics.median(wall_times) / 1e9
    del x, items, buffers

    dev = device()
    a = cl.Buffer(dev.context, cl.mem_flags.READ_WRITE, 4 * n)
    b = cl.Buffer(dev.context, cl.mem_flags.READ_WRITE, 4 * n)
    for buf in (a, b):
        cl.enqueue_fill_buffer(dev.queue, buf, np.zeros(1, np.float32), 0, 4 * n).wait()
    cl_times = []
    for _ in range(reps):
        ev = cl.enqueue_copy(dev.queue, b, a, byte_count=4 * n)
        ev.wait()
        cl_times.append((ev.profile.end - ev.profile.start) * 1e-9)
    cl_copy = nbytes / statistics.median(cl_times) / 1e9
    a.release()
    b.release()

    mm_n = 512 if quick else 2048
    m1, m2 = torch.randn(mm_n, mm_n), torch.randn(mm_n, mm_n)
    torch.mm(m1, m2)
    mm = 2.0 * mm_n ** 3 / _median_time(lambda: torch.mm(m1, m2), reps) / 1e9
    return Limits(n, torch_copy, toony_copy, toony_copy_wall, cl_copy, mm_n, mm)
