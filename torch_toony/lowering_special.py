"""Special functions on the device (torch.special and friends), written as toony arithmetic."""

from __future__ import annotations
