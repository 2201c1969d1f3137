"""torch_toony: the `toony` PyTorch device, backed by the toony_core compiler.

Importing this package (or just `import torch`, through the `torch.backends`
entry point) registers the device. If registration fails, the package warns
and leaves PyTorch untouched; `torch_toony.register()` raises the error.
"""

from __future__ import annotations

import warnings

_importing = True  # this package's own import is under way; it registers the device at its end


def _autoload() -> None:
    """Entry point for torch's backend autoloading; runs at the end of `import torch`.

    Defined before anything imports torch: when `import torch_toony` comes first, its `import torch` runs
    the autoload, which finds this half-imported package and calls this function; the import under way
    registers the device itself once its modules exist. It must never raise, or `import torch` fails."""
    if _importing:
        return
    try:
        from .device import register

        register()
    except Exception as e:
        warnings.warn(f"toony: the toony device was not registered: {e}", RuntimeWarning, stacklevel=2)


from .device import is_registered, register  # noqa: E402
from .metrics import metrics, reset_metrics  # noqa: E402

__all__ = ["is_registered", "metrics", "register", "reset_metrics"]

_importing = False
if not is_registered():  # torch was imported first with autoloading off, or this package was imported first
    _autoload()
