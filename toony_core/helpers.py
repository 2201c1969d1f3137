"""Small helpers shared by every layer of toony_core: environment switches and integer utilities."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable


@functools.cache
def getenv(key: str, default: int | str = 0) -> int | str:
    """Read an environment switch once; ints stay ints so `if getenv("X"):` works."""
    value = os.environ.get(key)
    if value is None:
        return default
    return int(value) if isinstance(default, int) else value


def debug_level() -> int:
    """TOONY_DEBUG=1..5: 1 realize summary, 2 kernel timings, 3 schedule, 4 source, 5 linearized UOps."""
    return int(os.environ.get("TOONY_DEBUG", "0") or 0)


def prod(xs: Iterable[int]) -> int:
    return math.prod(xs)


def strides_for(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Contiguous (row-major) element strides of a shape."""
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return tuple(reversed(strides))


def normalize_axes(axis: int | Iterable[int] | None, ndim: int) -> tuple[int, ...]:
    """Turn an axis argument (None, int, negative ints, iterables) into a sorted tuple of positive axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = set()
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(f"axis {a} is out of range for a tensor of {ndim} dimensions")
        out.add(a % ndim if ndim else 0)
    return tuple(sorted(out)) if ndim else ()
