"""Concrete metadata of the values of a compiled graph: dtype, sizes, strides, offset and device, with the
symbolic sizes of dynamic shapes replaced by this call's integers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Meta:
    """Concrete metadata of one tensor value of the graph (sizes made concrete for dynamic shapes)."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    device: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Sizes:
    """Turns symbolic sizes (dynamic shapes) into this call's integers."""

    def __init__(self) -> None:
        self.subs: dict[Any, int] = {}

    def learn(self, sym: Any, value: int) -> None:
        if isinstance(sym, torch.SymInt):
            expr = sym.node.expr
            if getattr(expr, "is_Symbol", False):
                self.subs[expr] = int(value)

    def int(self, v: Any) -> Any:
        if isinstance(v, torch.SymInt):
            expr = v.node.expr
            return int(expr) if expr.is_number else int(expr.xreplace(self.subs))
        if isinstance(v, (torch.SymFloat, torch.SymBool)):
            expr = v.node.expr
            value = expr if expr.is_number else expr.xreplace(self.subs)
            return float(value) if isinstance(v, torch.SymFloat) else bool(value)
        return v

    def meta(self, val: Any) -> Any:
        if isinstance(val, torch.Tensor):
            return Meta(val.dtype, tuple(self.int(s) for s in val.shape), tuple(self.int(s) for s in val.stride()),
                        self.int(val.storage_offset()), val.device.type)
        if isinstance(val, (list, tuple)):
            return [self.meta(v) for v in val]
        return self.int(val)


def dense_order(m: Meta) -> list[int] | None:
    """The dim order (outermost first) in which a dense, non-overlapping layout stores m; None otherwise."""
    order = sorted(range(len(m.shape)), key=lambda d: (-m.stride[d], d))
    expected = 1
    for d in reversed(order):
        if m.shape[d] != 1 and m.stride[d] != expected:
            return None
        expected *= m.shape[d]
    return order


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


def meta_tensor(m: Any) -> Any:
    if isinstance(m, Meta):
        return torch.empty_strided(m.shape, m.stride, dtype=m.dtype, device="meta")
    return m
