"""The toony device plumbing: registration, memory, copies, metadata ops, the CPU fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import torch_toony
from torch_toony import storage
from torch_toony._build import load_extension
from torch_toony.fallback import cpu_fallback

DEV = "toony"
ALL_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
]


@pytest.fixture
def fallback_on(monkeypatch: pytest.MonkeyPatch):
    """Tests that lean on ops without toony kernels yet run them on the CPU fallback, quietly."""
    monkeypatch.setenv("TOONY_FALLBACK", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def sample(dtype: torch.dtype, shape: tuple[int, ...] = (5, 7), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=dtype)
    lo, hi = (0, 255) if dtype == torch.uint8 else (-100, 100)
    return torch.randint(lo, hi, shape, generator=g, dtype=dtype)


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit-exact equality of values, dtype and shape (copies must not round)."""
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert torch.equal(a.cpu(), b.cpu())


# --- registration ----------------------------------------------------------------


def test_registered():
    assert torch_toony.is_registered()
    assert torch._C._get_privateuse1_backend_name() == "toony"
    assert torch.toony.is_available()
    assert torch.toony.device_count() == 1
    assert torch.toony.current_device() == 0
    assert torch.device("toony").type == "toony"
    t = torch.ones(2).toony()
    assert t.is_toony and t.device == torch.device("toony", 0)
    assert not torch.ones(2).is_toony
    assert torch.nn.Linear(2, 2).toony().weight.is_toony
    assert torch.accelerator.current_accelerator() == torch.device("toony")
    torch.toony.synchronize()
    torch.accelerator.synchronize()


def test_only_device_zero_exists():
    with pytest.raises(RuntimeError, match="invalid device index 1"):
        torch.empty(2, device="toony:1")


def test_metrics_shape():
    m = torch_toony.metrics()
    assert isinstance(m["kernels"], int)
    assert isinstance(m["fallbacks"], dict)


def test_import_torch_alone_autoloads():
    """`import torch` makes the device usable through the torch.backends entry point."""
    from importlib.metadata import entry_points

    if not any(ep.name == "toony" for ep in entry_points(group="torch.backends")):
        pytest.skip("package not installed (pip install -e .), so no torch.backends entry point")
    code = "import torch; t = torch.ones(3).to('toony'); assert t.cpu().sum().item() == 3; print(t.device)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "toony:0"


@pytest.mark.parametrize(
    "code",
    [
        "import torch_toony, torch",
        "import torch, torch_toony",
    ],
)
@pytest.mark.parametrize("autoload", ["0", "1"])
def test_any_import_order_registers(code, autoload):
    """Importing torch_toony first runs torch's autoload inside our own import; neither order may warn."""
    code += "\nassert torch.empty(2, device='toony').device.type == 'toony'"
    env = dict(os.environ, TORCH_DEVICE_BACKEND_AUTOLOAD=autoload)
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "not registered" not in out.stderr


def test_second_load_does_not_rebuild():
    """A cached build is imported directly: torch.utils.cpp_extension (ninja, the compiler) is never touched."""
    load_extension()  # make sure the build for these sources is cached
    code = (
        "import sys, torch\n"
        "from torch_toony._build import load_extension\n"
        "load_extension()\n"
        "print('torch.utils.cpp_extension' in sys.modules)\n"
    )
    env = dict(os.environ, TORCH_DEVICE_BACKEND_AUTOLOAD="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_inductor_still_works_on_cpu():
    f = torch.compile(lambda x: x.sin() + 1, backend="inductor")
    x = torch.randn(16)
    torch.testing.assert_close(f(x), x.sin() + 1)


# --- memory ------------------------------------------------------------------------


def test_addresses_are_fake_and_unique():
    base, limit = load_extension().address_range()
    ts = [torch.empty(n, device=DEV) for n in (1, 10, 1000)]
    ptrs = [t.data_ptr() for t in ts]
    assert len(set(ptrs)) == 3
    assert all(base <= p < limit for p in ptrs)
    assert torch.empty(0, device=DEV).data_ptr() == 0


def test_memory_allocated_goes_down():
    torch.toony.empty_cache()
    before = torch.toony.memory_allocated()
    t = torch.empty(1000, dtype=torch.float32, device=DEV)
    assert torch.toony.memory_allocated() == before + 4000
    assert torch.toony.max_memory_allocated() >= before + 4000
    assert torch.accelerator.memory_allocated() == before + 4000
    del t
    assert torch.toony.memory_allocated() == before
    torch.toony.reset_peak_memory_stats()
    assert torch.toony.max_memory_allocated() == before


def test_freed_storages_release_their_buffers(monkeypatch):
    freed = []
    monkeypatch.setattr(storage, "_free_hooks", [freed.append])
    t = torch.arange(100.0).to(DEV)
    addr = t.untyped_storage().data_ptr()
    assert addr in storage._entries
    del t
    storage.drain_freed()
    assert addr not in storage._entries
    assert addr in freed


def test_pending_values_are_realized_before_reads(monkeypatch):
    """The contract the op layer builds on: a storage may hold a pending lazy value instead of bytes."""
    realized, hooked = [], []

    def realizer(e: storage.StorageEntry) -> None:
        realized.append(e.addr)
        if e.buffer is None:
            storage._new_buffer(e)
        e.buffer.copyin(e.pending.numpy())
        e.pending = None

    monkeypatch.setattr(storage, "_realizer", realizer)
    monkeypatch.setattr(storage, "_write_hooks", [hooked.append])
    t = torch.empty(4, device=DEV)
    addr = t.untyped_storage().data_ptr()
    storage.entry(addr).pending = torch.tensor([1.0, 2.0, 3.0, 4.0])  # stands in for a lazy value
    assert_same(t[1:3].cpu(), torch.tensor([2.0, 3.0]))
    assert realized == [addr] and storage.entry(addr).pending is None
    storage.entry(addr).pending = torch.tensor([5.0, 6.0, 7.0, 8.0])
    t[0].copy_(torch.tensor(0.0))  # a partial write realizes first, then writes
    assert hooked == [addr]
    assert_same(t.cpu(), torch.tensor([0.0, 6.0, 7.0, 8.0]))
    storage.entry(addr).pending = torch.tensor([9.0, 9.0, 9.0, 9.0])
    t.copy_(torch.ones(4))  # a whole overwrite drops the pending value unrealized
    assert realized == [addr, addr]
    assert_same(t.cpu(), torch.ones(4))
    storage.entry(addr).pending = torch.tensor([2.0, 2.0, 2.0, 2.0])
    torch.toony.synchronize()  # realizes everything pending
    assert storage.entry(addr).pending is None
    assert_same(t.cpu(), torch.full((4,), 2.0))


def test_out_of_memory_names_sizes():
    ext = load_extension()
    ext.set_memory_limit(torch.toony.memory_allocated() + 1000)
    try:
        with pytest.raises(torch.OutOfMemoryError, match="tried to allocate 4000 bytes"):
            torch.empty(1000, device=DEV)
    finally:
        ext.set_memory_limit(0)
    torch.empty(1000, device=DEV)


def test_deterministic_mode_fills_new_memory():
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.empty(3, device=DEV).cpu().isnan().all()
        assert (torch.empty(2, dtype=torch.int32, device=DEV).cpu() == 2**31 - 1).all()
        t = torch.ones(2).to(DEV)
        t.resize_(4)
        assert_same(t.cpu()[:2], torch.ones(2))
        assert t.cpu()[2:].isnan().all()
    finally:
        torch.use_deterministic_algorithms(False)


def test_pin_memory():
    p = torch.arange(4.0).pin_memory()
    assert p.is_pinned()
    assert not torch.arange(4.0).is_pinned()
    assert_same(p.to(DEV), torch.arange(4.0))


# --- copies ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_round_trip(dtype):
    x = sample(dtype)
    t = x.to(DEV)
    assert t.device.type == DEV and t.dtype == dtype and t.shape == x.shape and t.stride() == x.stride()
    assert_same(t.cpu(), x)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize(
    "make",
    [
        lambda x: x.t(),
        lambda x: x[1:4, 2:6],
        lambda x: x[1:, ::3],
        lambda x: x[2],
        lambda x: x[:, 3:4].expand(5, 6),
        lambda x: x.unsqueeze(1).expand(5, 3, 7),
    ],
    ids=["transposed", "sliced", "strided", "row", "expanded", "expanded3d"],
)
def test_non_contiguous_round_trip(dtype, make):
    x = sample(dtype)
    # CPU source that is non-contiguous
    assert_same(make(x).to(DEV).cpu(), make(x))
    # toony source that is non-contiguous (a view of a device tensor)
    v = make(x.to(DEV))
    assert v.stride() == make(x).stride() and v.storage_offset() == make(x).storage_offset()
    assert_same(v.cpu(), make(x))
    assert_same(v.to("cpu", memory_format=torch.contiguous_format), make(x))


@pytest.mark.parametrize(
    "dtype",
    [torch.uint16, torch.uint32, torch.uint64, torch.complex128, torch.float8_e4m3fn, torch.float8_e5m2],
    ids=str,
)
def test_round_trip_other_dtypes(dtype):
    """Copies move bytes: even dtypes with little CPU math support round-trip exactly (compared as bytes)."""
    x = torch.randint(0, 255, (6, 32), dtype=torch.uint8).view(dtype)

    def raw(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous().reshape(-1).view(torch.uint8)

    assert torch.equal(raw(x.to(DEV).cpu()), raw(x))
    assert torch.equal(raw(x.to(DEV).t().cpu()), raw(x.t()))
    assert torch.equal(raw(x.t().to(DEV).cpu()), raw(x.t()))
    assert torch.equal(raw(x.to(DEV)[1:, ::2].cpu()), raw(x[1:, ::2]))


@pytest.mark.parametrize("src_dtype", [torch.float32, torch.int64, torch.bool, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dst_dtype", [torch.float64, torch.int32, torch.uint8, torch.bool, torch.bfloat16])
def test_dtype_conversion(src_dtype, dst_dtype):
    x = sample(src_dtype)
    ref = x.to(dst_dtype)
    assert_same(x.to(DEV, dst_dtype).cpu(), ref)  # CPU -> toony with conversion
    assert_same(x.to(DEV).to(dst_dtype).cpu(), ref)  # toony -> toony with conversion
    assert_same(x.to(DEV).to("cpu", dst_dtype), ref)  # toony -> CPU with conversion


def test_copy_into_views_writes_through():
    x = sample(torch.float32, (4, 6))
    t = x.to(DEV)
    row = torch.full((6,), 7.0)
    t[1].copy_(row)
    x[1].copy_(row)
    t.t()[2].copy_(torch.arange(4.0))  # a column: strided destination with gaps
    x.t()[2].copy_(torch.arange(4.0))
    t[:, ::2][3].copy_(torch.tensor([1.0, 2.0, 3.0]))
    x[:, ::2][3].copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert_same(t.cpu(), x)


def test_views_alias_exactly():
    t = torch.zeros(3, 4).to(DEV)
    v = t.view(12)
    v[5:7].copy_(torch.tensor([1.0, 2.0]))
    assert_same(t.cpu(), torch.zeros(12).index_put_((torch.tensor([5, 6]),), torch.tensor([1.0, 2.0])).view(3, 4))
    a = t.as_strided((2, 2), (4, 1), 1)
    assert a.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
    a.copy_(torch.full((2, 2), 9.0))
    expect = t.cpu().clone()
    assert expect[0, 1] == 9 and expect[1, 2] == 9
    r = t.reshape(4, 3)  # a view: contiguous
    assert r.data_ptr() == t.data_ptr()
    u = torch.arange(10.0).to(DEV).unfold(0, 4, 2)
    assert_same(u.cpu(), torch.arange(10.0).unfold(0, 4, 2))


def test_view_as_real_and_complex():
    z = sample(torch.complex64, (3, 4))
    tz = z.to(DEV)
    r = torch.view_as_real(tz)
    assert r.dtype == torch.float32 and r.shape == (3, 4, 2)
    assert r.untyped_storage().data_ptr() == tz.untyped_storage().data_ptr()
    assert_same(r.cpu(), torch.view_as_real(z))
    assert_same(torch.view_as_complex(r).cpu(), z)


def test_device_to_device_copy():
    x = sample(torch.float32, (8, 8))
    a = x.to(DEV)
    before = torch_toony.metrics()["d2d_bytes"]
    b = torch.empty(8, 8, device=DEV)
    b.copy_(a)
    assert torch_toony.metrics()["d2d_bytes"] == before + 256  # a plain device copy, no host staging
    assert_same(b.cpu(), x)
    c = torch.empty(8, 4, device=DEV)
    c.copy_(a[:, ::2])  # strided source: staged
    assert_same(c.cpu(), x[:, ::2])
    a[:4].copy_(a[4:])  # same storage, disjoint halves
    x[:4].copy_(x[4:])
    assert_same(a.cpu(), x)
    assert_same(a.clone().cpu(), x)


def test_partial_overlap_raises_like_cpu():
    t = torch.arange(6.0).to(DEV)
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        t[1:].copy_(t[:-1])
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        torch.empty(3, device=DEV).expand(2, 3).copy_(torch.ones(2, 3))


def test_copy_shape_errors_match_cpu():
    with pytest.raises(RuntimeError, match="must match"):
        torch.empty(3, device=DEV).copy_(torch.ones(4))


def test_empty_and_zero_size():
    e = torch.empty(0, device=DEV)
    assert e.shape == (0,) and e.cpu().shape == (0,)
    z = torch.ones(3, 0, 2).to(DEV)
    assert z.shape == (3, 0, 2)
    assert_same(z.cpu(), torch.ones(3, 0, 2))
    assert torch.empty(0, 4, device=DEV).t().cpu().shape == (4, 0)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_zero_dim_and_item(dtype):
    x = sample(dtype, ())
    t = x.to(DEV)
    assert t.dim() == 0
    assert_same(t.cpu(), x)
    assert t.item() == x.item()
    assert sample(dtype, (4,)).to(DEV)[2].item() == sample(dtype, (4,))[2].item()


# --- resize_ and set_ -----------------------------------------------------------------


def test_resize_grows_and_keeps_data():
    x = torch.arange(6, dtype=torch.int32)
    t = x.to(DEV)
    addr = t.untyped_storage().data_ptr()
    t.resize_(3, 4)
    assert t.shape == (3, 4) and t.untyped_storage().nbytes() == 48
    assert t.untyped_storage().data_ptr() != addr  # a new allocation, filled by a device copy
    assert_same(t.cpu().view(-1)[:6], x)
    t.resize_(2)  # shrink: same storage
    assert_same(t.cpu(), x[:2])
    t.resize_(2, 2).resize_(0)
    assert t.numel() == 0
    cl = torch.empty(2, 3, 4, 5, device=DEV).resize_(2, 3, 4, 5, memory_format=torch.channels_last)
    assert cl.is_contiguous(memory_format=torch.channels_last)


def test_storage_resize_uses_hooks():
    t = torch.arange(4.0).to(DEV)
    st = t.untyped_storage()
    st.resize_(32)
    assert st.nbytes() == 32
    assert_same(t.cpu(), torch.arange(4.0))
    st.resize_(8)
    assert_same(torch.empty(0, device=DEV).set_(st, 0, (2,), (1,)).cpu(), torch.arange(2.0))


def test_set_overloads():
    x = torch.arange(12.0)
    t = x.to(DEV)
    a = torch.empty(0, device=DEV).set_(t.untyped_storage(), 2, (2, 3), (3, 1))
    assert_same(a.cpu(), x.as_strided((2, 3), (3, 1), 2))
    b = torch.empty(0, device=DEV).set_(t)
    assert b.shape == t.shape and b.data_ptr() == t.data_ptr()
    c = torch.empty(0, device=DEV).set_(t.untyped_storage())
    assert_same(c.cpu(), x)
    d = torch.ones(3).to(DEV).set_()
    assert d.shape == (0,) and d.device.type == DEV
    d.resize_(2)
    assert d.untyped_storage().nbytes() == 8
    # As on CPU, set_ past the end of a storage grows it (keeping its bytes).
    g = torch.empty(0, device=DEV).set_(t.untyped_storage(), 0, (20,), (1,))
    assert t.untyped_storage().nbytes() == 80
    assert_same(g.cpu()[:12], x)
    assert_same(t.cpu(), x)


# --- storages, serialization ---------------------------------------------------------


def test_storages_and_serialization():
    import copy as pycopy
    import io

    x = torch.arange(6.0)
    t = x.to(DEV)
    st = torch.UntypedStorage(8, device=DEV)
    assert st.device.type == DEV and st.nbytes() == 8
    assert t.untyped_storage().cpu().nbytes() == 24
    c = t.untyped_storage().clone()
    assert c.device.type == DEV and c.data_ptr() != t.untyped_storage().data_ptr()
    assert_same(torch.empty(0, device=DEV).set_(c, 0, (6,), (1,)).cpu(), x)
    assert_same(pycopy.deepcopy(t).cpu(), x)
    f = io.BytesIO()
    torch.save({"a": t, "b": t[2:]}, f)
    f.seek(0)
    loaded = torch.load(f)
    assert loaded["a"].device.type == DEV
    assert loaded["b"].untyped_storage().data_ptr() == loaded["a"].untyped_storage().data_ptr()  # sharing kept
    assert_same(loaded["b"].cpu(), x[2:])
    f.seek(0)
    assert_same(torch.load(f, map_location="cpu")["a"], x)
    f = io.BytesIO()
    torch.save(x, f)
    f.seek(0)
    assert_same(torch.load(f, map_location=DEV).cpu(), x)
    assert_same(torch.tensor([1, 2], device=DEV).cpu(), torch.tensor([1, 2]))
    t.record_stream(torch.toony.current_stream())


# --- random numbers ---------------------------------------------------------------------


def test_generator_state_is_seed_and_offset():
    g = torch.Generator(device=DEV)
    assert g.device.type == DEV
    g.manual_seed(123)
    g.set_offset(7)
    state = g.get_state()
    assert state.dtype == torch.uint8 and state.numel() == 16
    h = torch.Generator(device=DEV)
    h.set_state(state)
    assert h.initial_seed() == 123 and h.get_offset() == 7


def test_manual_seed_reaches_the_device(fallback_on):
    torch.manual_seed(1234)
    assert torch.toony.initial_seed() == 1234
    a = torch.randn(16, device=DEV).cpu()
    b = torch.randn(16, device=DEV).cpu()
    torch.manual_seed(1234)
    assert_same(torch.randn(16, device=DEV).cpu(), a)
    assert not torch.equal(a, b)
    state = torch.toony.get_rng_state()
    c = torch.rand(4, device=DEV).cpu()
    torch.toony.set_rng_state(state)
    assert_same(torch.rand(4, device=DEV).cpu(), c)


# --- fallback -----------------------------------------------------------------------------


def test_repr(fallback_on):
    t = torch.tensor([[1.5, -2.0], [3.0, 4.25]]).to(DEV)
    s = repr(t)
    assert "device='toony:0'" in s and "1.5000" in s and "4.2500" in s
    assert "device='toony:0'" in repr(torch.tensor(True).to(DEV))
    assert "dtype=torch.int8" in repr(torch.arange(3, dtype=torch.int8).to(DEV))


# The fallback is called directly here: which ops reach it through the dispatcher shrinks as native
# kernels land, but the mechanism must stay exact for whatever is left.
aten = torch.ops.aten


def test_fallback_counts_and_writes_back(fallback_on):
    torch_toony.reset_metrics()
    x = sample(torch.float32, (4, 4))
    t = x.to(DEV)
    r = cpu_fallback(aten.mul_.Scalar, t[1:3], 2.0)  # in-place through a view
    x[1:3].mul_(2.0)
    assert_same(t.cpu(), x)
    assert r.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
    assert torch_toony.metrics()["fallbacks"]["aten::mul_.Scalar"] == 1
    out = torch.empty(0, device=DEV)
    r = cpu_fallback(aten.add.out, t, torch.ones(()), out=out)  # out= that must be resized
    assert r is out and out.shape == (4, 4)
    assert_same(out.cpu(), x + 1.0)
    cpu_fallback(aten.add.out, t, t, out=t)  # out= aliasing an input
    assert_same(t.cpu(), x + x)
    v = cpu_fallback(aten.diagonal.default, t)  # a view output aliases the device storage
    assert v.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
    assert_same(v.cpu(), (x + x).diagonal())
    vals, idx = cpu_fallback(aten.max.dim, t, 1)  # tuple of new outputs
    assert vals.is_toony and idx.is_toony
    assert_same(idx.cpu(), (x + x).max(1).indices)
    a = torch.ones(3).to(DEV)
    b = torch.zeros(2).to(DEV)
    cpu_fallback(aten._foreach_add_.Scalar, [a, b], 1.0)  # a list of written arguments
    assert_same(a.cpu(), torch.full((3,), 2.0))
    assert_same(b.cpu(), torch.ones(2))


def test_fallback_factories_and_generators(fallback_on):
    assert_same(cpu_fallback(aten.arange.default, 5, device=DEV).cpu(), torch.arange(5))
    assert_same(cpu_fallback(aten.eye.default, 3, device=DEV).cpu(), torch.eye(3))
    g = torch.Generator(device=DEV).manual_seed(7)
    a = cpu_fallback(aten.normal_.default, torch.empty(5, device=DEV), generator=g).cpu()
    assert g.get_offset() == 1  # the device generator advanced
    g.manual_seed(7)
    assert_same(cpu_fallback(aten.normal_.default, torch.empty(5, device=DEV), generator=g).cpu(), a)
    assert_same(torch.zeros(2, 3, device=DEV).cpu(), torch.zeros(2, 3))
    assert_same(torch.full((3,), 2, dtype=torch.int16, device=DEV).cpu(), torch.full((3,), 2, dtype=torch.int16))
    assert_same(torch.linspace(0, 1, 5, device=DEV).cpu(), torch.linspace(0, 1, 5))


def test_fallback_leaves_storage_untouched_on_error(fallback_on):
    t = torch.arange(4.0).to(DEV)
    with pytest.raises(RuntimeError):
        cpu_fallback(aten.add_.Tensor, t, torch.ones(5).to(DEV))
    assert_same(t.cpu(), torch.arange(4.0))


def test_fallback_off_is_an_error(monkeypatch):
    monkeypatch.setenv("TOONY_FALLBACK", "0")
    t = torch.arange(4.0).to(DEV)
    with pytest.raises(NotImplementedError, match=r"aten::exp.*TOONY_FALLBACK=0"):
        cpu_fallback(aten.exp.default, t)


def test_autograd_through_device(fallback_on):
    a = torch.arange(3.0).to(DEV).requires_grad_()
    (a * a).sum().backward()
    assert_same(a.grad.cpu(), 2 * torch.arange(3.0))
