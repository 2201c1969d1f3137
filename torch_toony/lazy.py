"""The bridge between torch tensors on the toony device and toony_core's lazy values.

A toony storage either holds its bytes in a device buffer or a *pending* lazy value (a 1-D toony_core
Tensor over the whole storage). Pure ops only set pending values, so a chain of eager ops fuses into one
kernel when something finally needs the bytes. Every pending value remembers which storages it reads; a
write into a storage first realizes the pending values that read it, so no reader sees a later write.
"""

from __future__ import annotations

import torch

from toony_core import Tensor as Lazy
from toony_core.realize import Stats
from toony_core.realize import realize as realize_many
from toony_core.runtime import Buffer
from toony_core.scheduler import realized
from toony_core.uop import Ops

from . import metrics, storage
from .dtypes import to_toony

# a pending value bigger than this many ops is realized right away, so the lazy graph never grows
# without bound (a training loop that never reads its values back)
MAX_PENDING_OPS = 400

_reads: dict[int, set[int]] = {}  # pending storage -> the storages its value reads
_readers: dict[int, set[int]] = {}  # storage -> pending storages whose values read it
_size: dict[int, int] = {}  # pending storage -> ops in its graph (an estimate)
_siblings: dict[int, tuple[int, ...]] = {}  # pending storage -> all outputs of the op call that made it
_pending_inputs: dict[int, set[int]] = {}  # pending storage -> the pending storages its value embeds


def addr_of(t: torch.Tensor) -> int:
    """The base address of t's storage (without building a Python storage object: this is a hot path)."""
    return t.data_ptr() - t.storage_offset() * t.element_size()


def as_lazy(t: torch.Tensor, op: str = "") -> Lazy:
    """t's values as a lazy toony_core Tensor (a strided view of its storage's current value)."""
    if t.device.type != "toony":
        if t.dim() == 0 and t.device.type == "cpu":  # torch lets 0-d CPU tensors mix with any device
            return Lazy(t.item(), to_toony(t.dtype, op))
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"toony:0 and {t.device}! (in {op})")
    dt = to_toony(t.dtype, op)
    if t.numel() == 0:
        return Lazy.zeros(tuple(t.shape), dt)
    addr = addr_of(t)
    e = storage.entry(addr)
    key = (t.shape, t.stride(), t.storage_offset(), dt)
    if _same_value(e.views_of, _value_token(e)):
        hit = e.views.get(key)
        if hit is not None:  # a hot path: eager ops read the same few views of a storage again and again
            return hit
    if e.pending is not None and e.pending.dtype == dt:
        base = e.pending
    else:
        base = Lazy.from_buffer(storage.read_buffer(addr), dt)
    if t.storage_offset() == 0 and t.is_contiguous() and t.numel() == base.numel():
        view = base.reshape(tuple(t.shape))
    else:
        view = base.as_strided(tuple(t.shape), tuple(t.stride()), t.storage_offset())
    token = _value_token(e)
    if not _same_value(e.views_of, token):
        e.views, e.views_of = {}, token
    e.views[key] = view
    return view


def _same_value(a: tuple | None, b: tuple) -> bool:
    return a is not None and a[0] is b[0] and a[1] == b[1]  # `is`: a lazy value's == is elementwise


def _value_token(e: storage.StorageEntry) -> tuple:
    """What a storage's lazy views read: its pending value, or its buffer at its current version."""
    if e.pending is not None:
        return (e.pending, None)
    return (e.buffer, e.buffer.version if e.buffer is not None else None)


def set_pending(out: torch.Tensor, value: Lazy, inputs: list[torch.Tensor]) -> None:
    """Give a fresh, dense toony tensor the lazy value `value` (same shape, dtype as stored)."""
    addr = addr_of(out)
    e = storage.entry(addr)
    e.pending = value.reshape(value.numel())
    e.buffer = None
    reads, embeds = set(), set()
    size = 1 + len(value.uop.src)
    for t in inputs:
        if not t.is_cpu and t.numel():  # toony tensors (0-d CPU scalars are constants in the graph)
            a = addr_of(t)
            if (r := _reads.get(a)) is not None:
                reads |= r
                embeds.add(a)
                size += _size.get(a, 0)
            else:
                reads.add(a)
    embeds.discard(addr)
    _pending_inputs[addr] = embeds
    reads.discard(addr)
    reads = {a for a in reads if storage.is_live(a)}  # a freed storage is never written again: no reader to track
    _reads[addr], _size[addr] = reads, size
    for a in reads:
        _readers.setdefault(a, set()).add(addr)
    if size > MAX_PENDING_OPS:
        realize_storages([addr])


def realize_if_it_reads_others(addr: int) -> None:
    """Before an in-place update of a storage: if its pending value reads other storages (optimizer state,
    whose last update read last step's gradient), realize it, so the updates do not chain step after step
    (each new kernel recomputing old steps' work, old gradients kept alive, a new kernel shape each step).
    A chain reading only its own storage (x.add_(1) repeated) keeps fusing, up to MAX_PENDING_OPS."""
    pending = storage.entry(addr).pending
    if pending is None:
        return
    # the buffers it reads, not _reads: a gradient freed since is no longer tracked there, yet its buffer is
    # still read (and kept alive) by this graph
    if any(u.op is Ops.BUFFER and storage.owner(u.arg[0]) != addr for u in pending.uop.toposort()):
        realize_storages([addr])


def set_siblings(outputs: list[torch.Tensor]) -> None:
    """Outputs of one op call share work (sort's values and indices share the whole network): when one is
    realized, the pending others are realized in the same schedule."""
    addrs = tuple(addr_of(t) for t in outputs if t is not None and t.numel())
    for a in addrs:
        if a in _reads:
            _siblings[a] = addrs


def realize_storages(addrs: list[int]) -> None:
    """Run the pending values of these storages together (one schedule: shared work fuses)."""
    # a sibling output or a reader may have been freed since (an op's discarded outputs, a temporary the
    # drain below releases): only live ones are realized.
    # Live pending values embedded in these graphs are realized with them (as outputs of the same kernels):
    # a tensor still alive is likely read again, and a training loop's graphs must not grow step by step
    storage.drain_freed()  # temporaries that died already (x * 2 in (x * 2 + 1).sum()) are not kept
    todo, seen = list(addrs), set()
    while todo:
        a = todo.pop()
        if a in seen or not storage.is_live(a):
            continue
        seen.add(a)
        todo.extend(_siblings.get(a, ()))
        todo.extend(_pending_inputs.get(a, ()))
    entries = [storage.entry(a) for a in seen if storage.entry(a).pending is not None]
    if not entries:
        return
    values = [e.pending for e in entries]
    roots = [v.uop for v in values]
    before = Stats.kernels_launched
    realize_many(*values)
    metrics.count_kernels(Stats.kernels_launched - before)
    for e, v, root in zip(entries, values, roots):
        # the storage owns its buffer and may write it in place: the buffer must not stand in for the pure
        # value elsewhere (an identical pending graph in another storage computes its own)
        realized.pop(root, None)
        _finish(e, v)


def _finish(e: storage.StorageEntry, value: Lazy) -> None:
    u = value.uop
    while u.op is not Ops.BUFFER:
        u = u.src[0]
    buf: Buffer = u.arg[0]
    if storage.owner(buf) not in (None, e.addr) or buf.nbytes != e.nbytes:
        # the realized value is a buffer another storage already owns (a clone's value is its source's
        # buffer; an identical graph was realized before): storages never share buffers, so copy it
        fresh = Buffer(e.nbytes)
        buf.copy_to(fresh, min(buf.nbytes, e.nbytes))
        buf = fresh
    storage.give_buffer(e, buf)
    e.pending = None
    _forget(e.addr)


def _forget(addr: int) -> None:
    _siblings.pop(addr, None)
    _pending_inputs.pop(addr, None)
    for a in _reads.pop(addr, ()):
        if a in _readers:
            _readers[a].discard(addr)
    _size.pop(addr, None)


def _realizer(e: storage.StorageEntry) -> None:
    realize_storages([e.addr])


def _before_write(addr: int) -> None:
    """A storage is about to be written: realize every pending value that reads it."""
    readers = [a for a in _readers.pop(addr, set()) if a in _reads]
    if readers:
        realize_storages(readers)


def forget_storage(addr: int) -> None:
    """The storage was freed: its pending value is dropped and it is no longer a reader."""
    _forget(addr)
    _readers.pop(addr, None)


def install() -> None:
    storage.set_realizer(_realizer)
    storage.add_write_hook(_before_write)
    storage.add_free_hook(forget_storage)


def run(value: Lazy) -> None:
    """Realize a value now (an in-place write into an existing buffer), counting its kernels."""
    before = Stats.kernels_launched
    value.realize()
    metrics.count_kernels(Stats.kernels_launched - before)
