"""What the benchmarks ran on: CPU, cores, OpenCL device, library versions, load, date."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass

import pyopencl as cl
import torch

from toony_core.runtime import device


@dataclass
class Machine:
    cpu: str
    cores: int
    torch_threads: int
    memory_gib: float
    opencl: str
    torch_version: str
    pyopencl_version: str
    python: str
    date: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError):
        return 0.0


def describe() -> Machine:
    dev = device()
    d = dev.cl_device
    opencl = (f"{dev.name} ({d.max_compute_units} compute units, {d.global_mem_size / 2 ** 30:.1f} GiB, "
              f"driver {d.driver_version}, {d.version.strip()})")
    return Machine(
        cpu=_cpu_model(), cores=os.cpu_count() or 0, torch_threads=torch.get_num_threads(),
        memory_gib=_memory_gib(), opencl=opencl, torch_version=torch.__version__,
        pyopencl_version=cl.VERSION_TEXT, python=platform.python_version(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), load_before=os.getloadavg())
