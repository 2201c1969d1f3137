"""Lowerings for normalization, losses, dropout, sorting and other nn ops, registered into lowering.LOWERINGS."""

from __future__ import annotations
