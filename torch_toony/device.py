"""Registers the toony device with PyTorch: completely, or not at all.

Renaming PrivateUse1 without also having the device module, guard and hooks
in place breaks torch.compile for every backend in the process, so the order
is: load the C++ half (allocator, guard, hooks and metadata ops register as it
loads; nothing is renamed yet), bind the Python side to it, then rename and
register everything in one go.
"""

from __future__ import annotations

import torch

from . import copy, device_module, eager, fallback, lazy, storage
from ._build import load_extension

_registered = False


def is_registered() -> bool:
    return _registered


def register() -> None:
    """Make `toony` a PyTorch device. Idempotent; raises (registering nothing visible) on failure."""
    global _registered
    if _registered:
        return
    current = torch._C._get_privateuse1_backend_name()
    if current not in ("privateuseone", "toony"):
        raise RuntimeError(f"toony: PrivateUse1 is already taken by the {current!r} backend")

    ext = load_extension()
    storage.bind(ext)
    device_module.bind(ext)
    ext.set_copy_callback(copy.storage_copy)
    ext.set_synchronize_callback(device_module.synchronize)

    if current != "toony":
        torch.utils.rename_privateuse1_backend("toony")
    torch._register_device_module("toony", device_module)
    torch.utils.generate_methods_for_privateuse1_backend(
        for_tensor=True, for_module=True, for_packed_sequence=True, for_storage=True
    )
    copy.register_kernels()
    fallback.register()
    # the op layer: native toony kernels (lazy, fused) override the fallback op by op
    lazy.install()
    eager.register()
    fallback.register_inplace_checks()
    _registered = True
