"""torch_toony: the `toony` PyTorch device, backed by the toony_core compiler.

Importing this package (or just `import torch`, through the `torch.backends`
entry point) registers the device. If registration fails, the package warns
and leaves PyTorch untouched; `torch_toony.register()` raises the error.
"""

from __future__ import annotations

import warnings

from .device import is_registered, register
from .metrics import metrics, reset_metrics

__all__ = ["is_registered", "metrics", "register", "reset_metrics"]

try:
    register()
except Exception as _e:  # never break `import torch`: autoload runs inside it
    warnings.warn(f"toony: the toony device was not registered: {_e}", RuntimeWarning, stacklevel=2)


def _autoload() -> None:
    """Entry point for torch's backend autoloading: importing the package already registered the device."""
