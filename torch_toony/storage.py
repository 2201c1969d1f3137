"""Maps the C++ allocator's fake addresses to toony buffers.

A toony storage is named by the base address the allocator gave it. The first
time Python needs the storage, it gets a `StorageEntry` holding a runtime
`Buffer` (itself allocated on the device only when first touched). The entry
can instead hold a *pending* lazy value (a 1-D toony_core Tensor over the whole
storage) that the op layer set; `realize_storage` turns it into bytes in the
buffer through the realizer the op layer installs.

The allocator's deleter cannot run Python, so it queues freed addresses;
`drain_freed` releases their entries. Addresses are never reused, so a stale
entry can never be mistaken for a new allocation.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toony_core.runtime import Buffer

_ext: ModuleType | None = None  # the C++ extension, bound at registration
_entries: dict[int, StorageEntry] = {}
_realizer: Callable[[StorageEntry], None] | None = None
_write_hooks: list[Callable[[int], None]] = []
_free_hooks: list[Callable[[int], None]] = []
# buffer -> the storage it backs: storages never share a buffer (a write into one must not show in another)
_owners: weakref.WeakKeyDictionary[Buffer, int] = weakref.WeakKeyDictionary()


@dataclass(eq=False, slots=True)
class StorageEntry:
    addr: int
    nbytes: int
    buffer: Buffer | None = None
    pending: Any = None  # a toony_core lazy value over the whole storage, or None when `buffer` holds the data
    # lazy views of this storage handed out (by lazy.as_lazy), valid while the value they read is the same
    views: dict = field(default_factory=dict)
    views_of: Any = None  # the pending value or (buffer, version) the cached views read


def bind(ext: ModuleType) -> None:
    global _ext
    _ext = ext


def set_realizer(fn: Callable[[StorageEntry], None] | None) -> None:
    """Install the op layer's realizer: given an entry with `pending` set, it must write the value into
    `entry.buffer` (creating it if None) and clear `entry.pending`."""
    global _realizer
    _realizer = fn


def add_write_hook(fn: Callable[[int], None]) -> None:
    """Run `fn(addr)` before anything writes into the storage at addr, so the op layer can first realize
    every pending value that reads it."""
    _write_hooks.append(fn)


def add_free_hook(fn: Callable[[int], None]) -> None:
    """Run `fn(addr)` when the storage at addr has been freed by PyTorch and its entry is released."""
    _free_hooks.append(fn)


def drain_freed() -> int:
    """Release the entries of storages PyTorch has freed; return how many."""
    if _ext is None:
        return 0
    freed = _ext.drain_freed()
    for addr in freed:
        _entries.pop(addr, None)
        for hook in _free_hooks:
            hook(addr)
    return len(freed)


def entry(addr: int) -> StorageEntry:
    """The entry for the live storage at addr, created on first use."""
    e = _entries.get(addr)
    if e is not None:
        return e
    if _ext is None:
        raise RuntimeError("toony: the device is not registered (import torch_toony)")
    drain_freed()  # a new storage is a good moment to let go of the dead ones
    nbytes = _ext.allocation_nbytes(addr)
    if nbytes < 0:
        raise RuntimeError(f"toony: {addr:#x} is not the base address of a live toony storage")
    e = _entries[addr] = StorageEntry(addr, nbytes)
    return e


def give_buffer(e: StorageEntry, buf: Buffer) -> None:
    """Make buf the storage's buffer (its bytes are the storage's current value)."""
    e.buffer = buf
    _owners[buf] = e.addr


def owner(buf: Buffer) -> int | None:
    """The address of the storage buf backs, if any."""
    return _owners.get(buf)


def _new_buffer(e: StorageEntry) -> None:
    from toony_core.runtime import Buffer

    give_buffer(e, Buffer(e.nbytes))


def realize_storage(addr: int) -> StorageEntry:
    """Make sure the storage's bytes are in its buffer (running any pending lazy value)."""
    e = entry(addr)
    if e.pending is not None:
        if _realizer is None:
            raise RuntimeError(f"toony: storage {addr:#x} holds a pending value but no realizer is installed")
        _realizer(e)
        if e.pending is not None:
            raise RuntimeError(f"toony: the realizer left storage {addr:#x} pending")
    if e.buffer is None:
        _new_buffer(e)
    return e


def realize_all() -> None:
    """Realize every pending value (torch.toony.synchronize)."""
    for addr in [a for a, e in _entries.items() if e.pending is not None]:
        realize_storage(addr)


def read_buffer(addr: int) -> Buffer:
    """The buffer holding the storage's current bytes, for reading."""
    buf = realize_storage(addr).buffer
    assert buf is not None
    return buf


def write_buffer(addr: int, whole: bool) -> Buffer:
    """The buffer to write into. Readers of the storage are realized first; when `whole` (every byte is
    about to be overwritten) a pending value is dropped instead of realized."""
    for hook in _write_hooks:
        hook(addr)
    e = entry(addr)
    if whole:
        e.pending = None
        if e.buffer is None:
            _new_buffer(e)
    else:
        realize_storage(addr)
    assert e.buffer is not None
    e.buffer.version += 1
    return e.buffer


def is_live(addr: int) -> bool:
    """Whether addr names a storage PyTorch has not freed (as far as the drained queue says)."""
    return addr in _entries


def live_entries() -> int:
    return len(_entries)
