"""Scatter and index reductions on the device: scatter_reduce, scatter with reduce=, index_reduce."""

from __future__ import annotations
