"""The OpenCL runtime: device choice, buffers, copies, a compile cache on disk, and kernel launches."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyopencl as cl

from .helpers import getenv

BUILD_OPTIONS = "-cl-fp32-correctly-rounded-divide-sqrt"


class ToonyError(RuntimeError):
    """Errors that toony raises on purpose: each says what went wrong and what to do."""


class Device:
    """One OpenCL device with its context and in-order queue."""

    def __init__(self, cl_device: cl.Device):
        self.cl_device = cl_device
        self.context = cl.Context([cl_device])
        self.queue = cl.CommandQueue(self.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
        self.name = f"{cl_device.platform.name.strip()}: {cl_device.name.strip()}"
        self.supports_fp64 = "cl_khr_fp64" in cl_device.extensions or cl_device.double_fp_config != 0
        self.supports_fp16 = "cl_khr_fp16" in cl_device.extensions
        self.supports_int64_atomics = "cl_khr_int64_base_atomics" in cl_device.extensions
        self.host_unified_memory = bool(cl_device.host_unified_memory)
        self.max_work_group_size = int(cl_device.max_work_group_size)
        self.local_mem_size = int(cl_device.local_mem_size)
        self.is_gpu = bool(cl_device.type & cl.device_type.GPU)

    def __repr__(self) -> str:
        return f"<toony Device {self.name}>"


def _all_devices() -> list[cl.Device]:
    return [d for p in cl.get_platforms() for d in p.get_devices()]


@functools.cache
def device() -> Device:
    """The device toony runs on: TOONY_DEVICE (an index or part of a name), else the first GPU, else the
    first OpenCL device (PoCL on the CPU where no GPU exists)."""
    try:
        devices = _all_devices()
    except cl.Error as e:
        raise ToonyError(f"no OpenCL platform found ({e}); install pocl-binary-distribution for a CPU device") from e
    if not devices:
        raise ToonyError("no OpenCL device found; install pocl-binary-distribution for a CPU device")
    want = str(getenv("TOONY_DEVICE", ""))
    if want:
        if want.isdigit() and int(want) < len(devices):
            return Device(devices[int(want)])
        named = [d for d in devices if want.lower() in f"{d.platform.name} {d.name}".lower()]
        if not named:
            raise ToonyError(f"TOONY_DEVICE={want!r} matches none of: {[d.name for d in devices]}")
        return Device(named[0])
    gpus = [d for d in devices if d.type & cl.device_type.GPU]
    return Device((gpus or devices)[0])


def synchronize() -> None:
    device().queue.finish()


# ---------------------------------------------------------------- buffers

class _Allocator:
    """Reuses freed cl.Buffers of the same size: allocation is slow on every OpenCL driver."""

    def __init__(self) -> None:
        self.free: dict[int, list[cl.Buffer]] = defaultdict(list)
        self.live_bytes = 0
        self.peak_bytes = 0
        self.cached_bytes = 0

    def alloc(self, nbytes: int) -> cl.Buffer:
        size = max(-(-nbytes // 4) * 4, 4)  # whole 32-bit words (no zero-byte buffers; narrow atomics use words)
        if self.free[size]:
            self.cached_bytes -= size
            buf = self.free[size].pop()
        else:
            buf = self._new(size)
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return buf

    def _new(self, size: int) -> cl.Buffer:
        dev = device()
        try:
            buf = cl.Buffer(dev.context, cl.mem_flags.READ_WRITE, size)
            # OpenCL allocates lazily: touch the buffer so out-of-memory shows up here, not in a later kernel
            cl.enqueue_fill_buffer(dev.queue, buf, np.zeros(1, np.uint8), 0, 1)
            return buf
        except cl.Error as e:
            self.release_cache()
            try:
                return cl.Buffer(dev.context, cl.mem_flags.READ_WRITE, size)
            except cl.Error:
                raise ToonyError(f"out of device memory: asked for {size} bytes with {self.live_bytes} bytes live "
                                 f"on {dev.name} ({dev.cl_device.global_mem_size} bytes in all)") from e

    def release(self, buf: cl.Buffer, nbytes: int) -> None:
        self.live_bytes -= nbytes
        size = max(-(-nbytes // 4) * 4, 4)
        self.free[size].append(buf)
        self.cached_bytes += size
        if self.cached_bytes > int(getenv("TOONY_CACHE_BYTES", 1 << 30)):
            self.release_cache()

    def release_cache(self) -> None:
        for bufs in self.free.values():
            for b in bufs:
                b.release()
        self.free.clear()
        self.cached_bytes = 0


allocator = _Allocator()


def memory_allocated() -> int:
    return allocator.live_bytes


def max_memory_allocated() -> int:
    return allocator.peak_bytes


class Buffer:
    """A device allocation of nbytes. Created lazily on first use; returned to the allocator on delete."""

    __slots__ = ("nbytes", "_cl", "version", "__weakref__")

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self._cl: cl.Buffer | None = None
        self.version = 0  # bumped by every write toony schedules, so stale lazy reads can be caught

    @property
    def cl(self) -> cl.Buffer:
        if self._cl is None:
            self._cl = allocator.alloc(self.nbytes)
        return self._cl

    @property
    def allocated(self) -> bool:
        return self._cl is not None

    def __del__(self) -> None:
        # (getattr: an object whose __init__ never ran, e.g. one a failed copy made, has no _cl slot set)
        if getattr(self, "_cl", None) is not None:
            try:
                allocator.release(self._cl, self.nbytes)
            except Exception:  # interpreter shutdown: module globals may be gone
                pass

    def __repr__(self) -> str:
        return f"<Buffer {self.nbytes} bytes>"

    def copyin(self, host: np.ndarray | memoryview, offset: int = 0) -> Buffer:
        mv = memoryview(host).cast("B")
        if offset < 0 or offset + mv.nbytes > self.nbytes:
            raise ToonyError(f"copyin of {mv.nbytes} bytes at offset {offset} overruns a buffer of {self.nbytes}")
        if mv.nbytes:
            cl.enqueue_copy(device().queue, self.cl, mv, dst_offset=offset, is_blocking=True)
        return self

    def copyout(self, host: np.ndarray | memoryview, offset: int = 0) -> None:
        mv = memoryview(host).cast("B")
        if offset < 0 or offset + mv.nbytes > self.nbytes:
            raise ToonyError(f"copyout of {mv.nbytes} bytes at offset {offset} overruns a buffer of {self.nbytes}")
        if mv.nbytes:
            cl.enqueue_copy(device().queue, mv, self.cl, src_offset=offset, is_blocking=True)

    def copy_to(self, dst: Buffer, nbytes: int, src_offset: int = 0, dst_offset: int = 0) -> None:
        if src_offset + nbytes > self.nbytes or dst_offset + nbytes > dst.nbytes:
            raise ToonyError(f"device copy of {nbytes} bytes overruns a buffer")
        if nbytes:
            cl.enqueue_copy(device().queue, dst.cl, self.cl, byte_count=nbytes, src_offset=src_offset,
                            dst_offset=dst_offset)


# ---------------------------------------------------------------- programs

def _cache_dir() -> Path:
    root = os.environ.get("TOONY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "toony")
    path = Path(root) / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


class ConstantBuffer(Buffer):
    """A small read-only table of values kernels read (their float constants, see scheduler): a cache of the
    compiler's like its compiled kernels, so it is not counted in memory_allocated."""

    __slots__ = ()

    def __init__(self, values: np.ndarray):
        super().__init__(values.nbytes)
        flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
        self._cl = cl.Buffer(device().context, flags, hostbuf=np.ascontiguousarray(values))

    def __del__(self) -> None:
        pass  # the cl.Buffer goes with this object; it never came from the allocator


class CompileStats:
    built = 0  # programs compiled from source in this process
    loaded = 0  # programs loaded from the disk cache


# every kernel's function is built under this one name: a kernel's own name carries its sizes, which its code
# need not depend on (a compiled graph called with a new batch size often renders the same code under a new
# name), and the same code must find the program built before
KERNEL_FUNCTION = "toony_kernel"


@functools.lru_cache(maxsize=4096)
def compile_kernel(source: str, name: str) -> cl.Kernel:
    """Build an OpenCL kernel, reusing a program built (or cached on disk) for the same code under any name."""
    generic = source.replace(f"__kernel void {name}(", f"__kernel void {KERNEL_FUNCTION}(", 1)
    try:
        prg = _program(generic)
    except cl.RuntimeError as e:
        fd, src_path = tempfile.mkstemp(prefix=f"toony_{name}_", suffix=".cl")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        raise ToonyError(f"OpenCL build of kernel {name} failed; the source is in {src_path}\n{e}") from e
    return cl.Kernel(prg, KERNEL_FUNCTION if generic != source else name)


@functools.lru_cache(maxsize=4096)
def _program(source: str) -> cl.Program:
    """A built program, from the disk cache (keyed by source, device and driver) when it holds one."""
    dev = device()
    key = hashlib.sha256("\0".join([source, dev.name, dev.cl_device.driver_version, BUILD_OPTIONS]).encode())
    path = _cache_dir() / f"{key.hexdigest()}.bin"
    if path.exists() and not getenv("TOONY_NOCACHE"):
        try:
            prg = cl.Program(dev.context, [dev.cl_device], [path.read_bytes()]).build(options=BUILD_OPTIONS)
            CompileStats.loaded += 1
            return prg
        except cl.Error:
            path.unlink(missing_ok=True)  # a stale binary from another driver: rebuild below
    prg = cl.Program(dev.context, source).build(options=BUILD_OPTIONS)
    CompileStats.built += 1
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(prg.binaries[0])
    os.replace(tmp, path)  # atomic: parallel test workers never read half a file
    return prg


def launch(kernel: cl.Kernel, global_size: int, local_size: int | None, args: list, timed: bool = False) -> float:
    """Run a 1-D kernel; return its device time in seconds when timed, else 0."""
    ev = kernel(device().queue, (global_size,), None if local_size is None else (local_size,), *args)
    if not timed:
        return 0.0
    ev.wait()
    return (ev.profile.end - ev.profile.start) * 1e-9


def wall() -> float:
    return time.perf_counter()
