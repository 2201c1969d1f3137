"""Counters for what the toony device did: the one place they live.

`kernels` counts kernel launches (the op layer and compile backend add to it),
`fallbacks` counts CPU fallbacks per ATen op, `decompositions` the ops run through their
torch._decomp decomposition on the device, and the transfer counters count
bytes moved between the host and the device.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

_kernels = 0
_fallbacks: Counter[str] = Counter()
_decompositions: Counter[str] = Counter()
_transfers: Counter[str] = Counter()  # "h2d", "d2h", "d2d" -> bytes


def count_kernels(n: int = 1) -> None:
    global _kernels
    _kernels += n


def count_fallback(op_name: str) -> None:
    _fallbacks[op_name] += 1


def count_decomposition(op_name: str) -> None:
    _decompositions[op_name] += 1


def count_transfer(kind: str, nbytes: int) -> None:
    _transfers[kind] += nbytes


def metrics() -> dict[str, Any]:
    """A snapshot: {'kernels': int, 'fallbacks': {op: count}, 'decompositions': {op: count}, 'h2d_bytes',
    'd2h_bytes', 'd2d_bytes'}."""
    return {
        "kernels": _kernels,
        "fallbacks": dict(_fallbacks),
        "decompositions": dict(_decompositions),
        "h2d_bytes": _transfers["h2d"],
        "d2h_bytes": _transfers["d2h"],
        "d2d_bytes": _transfers["d2d"],
    }


def reset_metrics() -> None:
    global _kernels
    _kernels = 0
    _fallbacks.clear()
    _decompositions.clear()
    _transfers.clear()
