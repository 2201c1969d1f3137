"""The OpenCL runtime on its own: buffers and copies, memory accounting, program builds, the compile cache on
disk, launches, and the errors that must say what went wrong."""

import gc
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from toony_core import Buffer, Tensor, ToonyError, device, synchronize
from toony_core.runtime import CompileStats, _program, compile_kernel, launch, max_memory_allocated, memory_allocated

REPO = Path(__file__).resolve().parents[2]


def unique_kernel(name: str = "add_one") -> str:
    """A kernel source no cache has seen (a fresh comment changes the cache key)."""
    return (f"// {uuid.uuid4().hex}\n"
            f"__kernel void {name}(__global float* out, __global const float* a) {{\n"
            f"  int i = get_global_id(0); out[i] = a[i] + 1.0f; }}\n")


# ---------------------------------------------------------------- buffers and copies

def test_copyin_copyout_roundtrip():
    x = np.arange(64, dtype=np.float32)
    buf = Buffer(x.nbytes).copyin(x)
    out = np.empty_like(x)
    buf.copyout(out)
    np.testing.assert_array_equal(out, x)


def test_copy_with_offsets():
    buf = Buffer(16).copyin(np.zeros(16, np.uint8))
    buf.copyin(np.array([1, 2, 3], np.uint8), offset=5)
    out = np.empty(16, np.uint8)
    buf.copyout(out)
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0])
    part = np.empty(4, np.uint8)
    buf.copyout(part, offset=4)
    np.testing.assert_array_equal(part, [0, 1, 2, 3])


def test_copy_to_device_to_device():
    x = np.arange(10, dtype=np.int32)
    src = Buffer(x.nbytes).copyin(x)
    dst = Buffer(x.nbytes).copyin(np.full(10, -1, np.int32))
    src.copy_to(dst, 4 * 4, src_offset=2 * 4, dst_offset=5 * 4)
    out = np.empty(10, np.int32)
    dst.copyout(out)
    np.testing.assert_array_equal(out, [-1, -1, -1, -1, -1, 2, 3, 4, 5, -1])
    src.copy_to(dst, x.nbytes)
    dst.copyout(out)
    np.testing.assert_array_equal(out, x)


def test_copies_out_of_range_raise():
    buf = Buffer(8)
    with pytest.raises(ToonyError, match="overruns"):
        buf.copyin(np.zeros(9, np.uint8))
    with pytest.raises(ToonyError, match="overruns"):
        buf.copyin(np.zeros(4, np.uint8), offset=5)
    with pytest.raises(ToonyError, match="overruns"):
        buf.copyout(np.zeros(4, np.uint8), offset=6)
    with pytest.raises(ToonyError):
        buf.copyin(np.zeros(1, np.uint8), offset=-1)
    with pytest.raises(ToonyError, match="overruns"):
        buf.copy_to(Buffer(4), 8)


def test_zero_size_buffer():
    buf = Buffer(0)
    buf.copyin(np.zeros(0, np.uint8))
    buf.copyout(np.zeros(0, np.uint8))
    buf.copy_to(Buffer(0), 0)
    before = memory_allocated()
    assert buf.cl is not None  # OpenCL has no zero-byte buffers; toony hands out a 1-byte one
    assert memory_allocated() == before  # and counts it as 0
    t = Tensor(np.zeros((0, 4), np.float32))
    assert t.numpy().shape == (0, 4)


# ---------------------------------------------------------------- memory accounting

@pytest.fixture
def no_gc():
    """Exact memory accounting: no collection of other tests' garbage in the middle of a measurement."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_memory_allocated_goes_down_after_del(no_gc):
    before = memory_allocated()
    buf = Buffer(1 << 16)
    assert memory_allocated() == before  # allocated lazily, on first use
    buf.copyin(np.zeros(1 << 16, np.uint8))
    assert memory_allocated() == before + (1 << 16)
    assert max_memory_allocated() >= before + (1 << 16)
    del buf  # reference counting frees it: no collection needed
    assert memory_allocated() == before


def test_tensor_memory_is_released(no_gc):
    before = memory_allocated()
    t = Tensor(np.ones((256, 256), np.float32))
    u = (t * 2).realize()
    assert memory_allocated() == before + 2 * 256 * 256 * 4
    del t, u
    gc.collect()
    assert memory_allocated() == before


def test_out_of_memory_names_the_size():
    huge = 1 << 50
    with pytest.raises(ToonyError, match=f"{huge} bytes"):
        Buffer(huge).cl  # noqa: B018 - the allocation is the point


# ---------------------------------------------------------------- programs

def test_failed_build_names_a_file_holding_the_source():
    src = "__kernel void bad( { }"
    with pytest.raises(ToonyError) as e:
        compile_kernel(src, "bad")
    msg = str(e.value)
    assert "bad" in msg
    m = re.search(r"(/\S+\.cl)\b", msg)
    assert m, f"no .cl path in: {msg}"
    path = Path(m.group(1))
    try:
        assert path.read_text() == src
    finally:
        path.unlink(missing_ok=True)


def test_second_compile_loads_from_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOONY_CACHE_DIR", str(tmp_path))
    src = unique_kernel()
    built, loaded = CompileStats.built, CompileStats.loaded
    compile_kernel(src, "add_one")
    assert (CompileStats.built, CompileStats.loaded) == (built + 1, loaded)
    assert len(list(tmp_path.rglob("*.bin"))) == 1
    compile_kernel(src, "add_one")  # in-process cache: neither built nor loaded
    assert (CompileStats.built, CompileStats.loaded) == (built + 1, loaded)
    _program.cache_clear()  # as a new process would: from disk
    compile_kernel.__wrapped__(src, "add_one")
    assert (CompileStats.built, CompileStats.loaded) == (built + 1, loaded + 1)


def test_the_same_code_under_another_name_reuses_the_program(tmp_path, monkeypatch):
    # a kernel's name carries its sizes; code that does not depend on them (a new batch size) is not rebuilt
    monkeypatch.setenv("TOONY_CACHE_DIR", str(tmp_path))
    src = unique_kernel()
    built = CompileStats.built
    k1 = compile_kernel(src, "add_one")
    k2 = compile_kernel(src.replace("add_one(", "add_one_for_another_size("), "add_one_for_another_size")
    assert CompileStats.built == built + 1
    out, a = Buffer(16), Buffer(16).copyin(np.arange(4, dtype=np.float32))
    launch(k2, 4, None, [out.cl, a.cl])
    assert k1.function_name == k2.function_name
    host = np.empty(4, np.float32)
    out.copyout(host)
    np.testing.assert_array_equal(host, [1, 2, 3, 4])


def test_a_second_process_compiles_nothing(tmp_path):
    script = textwrap.dedent("""
        import numpy as np
        from toony_core import Tensor
        from toony_core.runtime import CompileStats
        x = Tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
        assert (x.permute(1, 0) * 3 + 1).sum(1).numpy().tolist() == [39.0, 48.0, 57.0, 66.0]
        print(CompileStats.built, CompileStats.loaded)
    """)
    env = {**os.environ, "TOONY_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("TOONY_NOCACHE", None)
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=REPO)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (tuple(int(v) for v in r.stdout.split()[-2:]) for r in runs)
    assert first[0] >= 1
    assert second == (0, first[0])


def test_launch_runs_a_hand_written_kernel():
    kernel = compile_kernel(unique_kernel(), "add_one")
    x = np.arange(256, dtype=np.float32)
    a, out = Buffer(x.nbytes).copyin(x), Buffer(x.nbytes)
    seconds = launch(kernel, 256, None, [out.cl, a.cl], timed=True)
    assert seconds > 0
    synchronize()
    got = np.empty_like(x)
    out.copyout(got)
    np.testing.assert_array_equal(got, x + 1)


def test_device_describes_itself():
    d = device()
    assert d.name and d.max_work_group_size >= 1
    assert d is device()
