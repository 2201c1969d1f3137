"""Copies between the host and the toony device, and toony to toony.

For now every copy that is not a plain byte move stages through the host: the
bytes a tensor spans are copied out, PyTorch's CPU copy_ does the layout and
dtype conversion on a CPU view with the same sizes, strides and offset, and the
bytes go back. A device-side copy kernel from the op layer can replace the
staging later without changing these entry points.
"""

from __future__ import annotations

import torch

from . import metrics, storage
from .dtypes import TO_TOONY

_U8 = torch.uint8


def is_toony(t: torch.Tensor) -> bool:
    return t.device.type == "toony"


def storage_addr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def byte_extent(t: torch.Tensor) -> tuple[int, int]:
    """[lo, hi): the bytes of its storage that `t` can touch."""
    isz = t.element_size()
    lo = t.storage_offset() * isz
    if t.numel() == 0:
        return lo, lo
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))
    return lo, lo + span * isz


def is_dense(t: torch.Tensor) -> bool:
    """True when `t` covers every byte of its extent exactly once (non-overlapping and dense)."""
    dims = sorted((s, n) for n, s in zip(t.shape, t.stride(), strict=True) if n != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _bytes_view(st: torch.UntypedStorage, lo: int, hi: int) -> torch.Tensor:
    """A CPU uint8 tensor aliasing bytes [lo, hi) of a CPU storage."""
    return torch.empty(0, dtype=_U8).set_(st, lo, (hi - lo,), (1,))


def _view_like(t: torch.Tensor, st: torch.UntypedStorage, offset: int = 0) -> torch.Tensor:
    """A CPU tensor over `st` with t's dtype, sizes and strides, starting at element `offset`."""
    return torch.empty(0, dtype=t.dtype).set_(st, offset, t.shape, t.stride())


def _plain(t: torch.Tensor) -> bool:
    """No lazy conj/neg bit: the bytes are the values."""
    return not (t.is_conj() or t.is_neg())


def to_host(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor with t's dtype, sizes and strides holding a copy of its values (only the bytes t spans
    are transferred)."""
    lo, hi = byte_extent(t)
    host = torch.empty(hi - lo, dtype=_U8)
    if hi > lo:
        storage.read_buffer(storage_addr(t)).copyout(host.numpy(), lo)
        metrics.count_transfer("d2h", hi - lo)
    return _view_like(t, host.untyped_storage())


def storage_to_host(st: torch.UntypedStorage) -> torch.UntypedStorage:
    """A CPU copy of a whole toony storage."""
    n = st.nbytes()
    host = torch.empty(n, dtype=_U8)
    if n:
        storage.read_buffer(st.data_ptr()).copyout(host.numpy(), 0)
        metrics.count_transfer("d2h", n)
    return host.untyped_storage()


def host_storage_to_device(src: torch.UntypedStorage, dst: torch.UntypedStorage) -> None:
    """Overwrite a whole toony storage with the bytes of a CPU storage of the same size."""
    n = dst.nbytes()
    assert src.nbytes() == n, (src.nbytes(), n)
    if n:
        storage.write_buffer(dst.data_ptr(), whole=True).copyin(_bytes_view(src, 0, n).numpy(), 0)
        metrics.count_transfer("h2d", n)


def from_host(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst (toony) <- src (CPU), with broadcasting and dtype conversion, as CPU copy_ would do it."""
    lo, hi = byte_extent(dst)
    if hi == lo:
        _view_like(dst, torch.UntypedStorage(0)).copy_(src)  # still raise copy_'s shape errors
        return
    addr = storage_addr(dst)
    dense = is_dense(dst)
    nbytes = dst.untyped_storage().nbytes()
    if (
        dense
        and src.dtype == dst.dtype
        and src.shape == dst.shape
        and src.stride() == dst.stride()
        and _plain(src)
        and src.device.type == "cpu"
    ):
        # src already has dst's byte layout: send its bytes as they are.
        s_lo, s_hi = byte_extent(src)
        data = _bytes_view(src.untyped_storage(), s_lo, s_hi).numpy()
        storage.write_buffer(addr, whole=(lo == 0 and hi == nbytes)).copyin(data, lo)
        metrics.count_transfer("h2d", hi - lo)
        return
    if dense and src.device.type == "cpu" and src.dtype in TO_TOONY and dst.dtype in TO_TOONY:
        # upload src as it is, then convert and broadcast on the device (a lazy kernel): only src's bytes move
        _meta_like(dst).copy_(_meta_like(src))  # copy_'s own shape and dtype errors
        staged = torch.empty(src.shape, dtype=src.dtype, device=dst.device)
        from_host(staged, src.resolve_conj().resolve_neg().contiguous())
        from . import eager, lazy

        eager.write_into(dst, lazy.as_lazy(staged, "copy_"), [staged])
        return
    host = torch.empty(hi - lo, dtype=_U8)
    buf = storage.write_buffer(addr, whole=dense and lo == 0 and hi == nbytes)
    if not dense:
        # dst has gaps (or overlaps): keep the bytes between its elements.
        buf.copyout(host.numpy(), lo)
        metrics.count_transfer("d2h", hi - lo)
    _view_like(dst, host.untyped_storage()).copy_(src)
    buf.copyin(host.numpy(), lo)
    metrics.count_transfer("h2d", hi - lo)


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _check_partial_overlap(src: torch.Tensor, dst: torch.Tensor) -> None:
    """Raise as PyTorch's copy_ does when two dense tensors share some, but not all, of their bytes."""
    if src.numel() == 0 or dst.numel() == 0 or not (is_dense(src) and is_dense(dst)):
        return
    s_lo, s_hi = byte_extent(src)
    d_lo, d_hi = byte_extent(dst)
    same = (s_lo, s_hi) == (d_lo, d_hi) and src.stride() == dst.stride()
    if not same and s_lo < d_hi and d_lo < s_hi:
        raise RuntimeError(
            "unsupported operation: some elements of the input tensor and the written-to tensor refer to a "
            "single memory location. Please clone() the tensor before performing the operation."
        )


def device_to_device(src: torch.Tensor, dst: torch.Tensor) -> None:
    """dst (toony) <- src (toony)."""
    s_addr, d_addr = storage_addr(src), storage_addr(dst)
    if s_addr == d_addr:
        _check_partial_overlap(src, dst)
    if (
        src.dtype == dst.dtype
        and src.shape == dst.shape
        and src.stride() == dst.stride()
        and is_dense(dst)
        and _plain(src)
        and s_addr != d_addr  # OpenCL refuses overlapping copies within one buffer
        and s_addr != 0
    ):
        s_lo, s_hi = byte_extent(src)
        d_lo, d_hi = byte_extent(dst)
        n = d_hi - d_lo
        if n:
            src_buf = storage.read_buffer(s_addr)
            whole = d_lo == 0 and d_hi == dst.untyped_storage().nbytes()
            src_buf.copy_to(storage.write_buffer(d_addr, whole=whole), n, s_lo, d_lo)
            metrics.count_transfer("d2d", n)
        return
    # any other layout or dtype: a (lazy, fusable) device kernel, never a trip through the host
    from . import eager, lazy

    if s_addr == d_addr and not (src.shape == dst.shape and src.stride() == dst.stride()
                                 and src.storage_offset() == dst.storage_offset()):
        src = src.clone()  # the write may overlap what it reads: read a copy
    from .complex import as_complex
    eager.write_into(dst, as_complex(src) if src.is_complex() else lazy.as_lazy(src, "copy_"), [src])


def copy_(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst <- src where at least one of them is a toony tensor."""
    if is_toony(dst):
        if is_toony(src):
            device_to_device(src, dst)
        else:
            from_host(dst, src)
    elif (
        dst.device.type == "cpu"
        and src.dtype == dst.dtype
        and src.shape == dst.shape
        and src.stride() == dst.stride()
        and is_dense(dst)
        and _plain(src)
        and _plain(dst)
    ):
        # dst already has src's byte layout (as .cpu() makes it): copy straight into it.
        lo, hi = byte_extent(src)
        if hi > lo:
            d_lo, d_hi = byte_extent(dst)
            storage.read_buffer(storage_addr(src)).copyout(_bytes_view(dst.untyped_storage(), d_lo, d_hi).numpy(), lo)
            metrics.count_transfer("d2h", hi - lo)
    else:
        dst.copy_(to_host(src))
    return dst


def storage_copy(dst_addr: int, src_addr: int, nbytes: int) -> None:
    """The allocator's copy_data: the first nbytes of one toony allocation into another (storage resize,
    storage copies)."""
    src_buf = storage.read_buffer(src_addr)
    whole = nbytes == storage.entry(dst_addr).nbytes
    src_buf.copy_to(storage.write_buffer(dst_addr, whole=whole), nbytes, 0, 0)
    metrics.count_transfer("d2d", nbytes)


# --- ATen kernels ------------------------------------------------------------


def _copy_from(self: torch.Tensor, dst: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
    return copy_(self, dst)


def _copy_from_and_resize(self: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    if dst.shape != self.shape:
        dst.resize_(self.shape)
    return copy_(self, dst)


def _local_scalar_dense(self: torch.Tensor) -> bool | int | float | complex:
    return to_host(self).item()


_lib: torch.library.Library | None = None


def register_kernels() -> None:
    global _lib
    if _lib is not None:
        return
    lib = torch.library.Library("aten", "IMPL")  # noqa: TOR901 - implementing existing aten ops
    lib.impl("_copy_from", _copy_from, "PrivateUse1")
    lib.impl("_copy_from_and_resize", _copy_from_and_resize, "PrivateUse1")
    lib.impl("_local_scalar_dense", _local_scalar_dense, "PrivateUse1")
    _lib = lib
