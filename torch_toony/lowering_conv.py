"""Lowerings for convolution and pooling (forward and backward), registered into lowering.LOWERINGS."""

from __future__ import annotations
