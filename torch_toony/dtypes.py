"""torch dtypes <-> toony_core dtypes."""

from __future__ import annotations

import torch

from toony_core import DType, dtypes

TO_TOONY: dict[torch.dtype, DType] = {
    torch.bool: dtypes.bool, torch.int8: dtypes.int8, torch.int16: dtypes.int16, torch.int32: dtypes.int32,
    torch.int64: dtypes.int64, torch.uint8: dtypes.uint8, torch.uint16: dtypes.uint16, torch.uint32: dtypes.uint32,
    torch.uint64: dtypes.uint64, torch.float16: dtypes.float16, torch.bfloat16: dtypes.bfloat16,
    torch.float32: dtypes.float32, torch.float64: dtypes.float64,
}
TO_TORCH: dict[DType, torch.dtype] = {v: k for k, v in TO_TOONY.items()}


class UnsupportedDtype(RuntimeError):  # not TypeError: Tensor.__add__ would turn it into NotImplemented
    """toony has no kernels for this dtype (complex, float8, quantized, ...)."""


def to_toony(dt: torch.dtype, op: str = "") -> DType:
    if dt not in TO_TOONY:
        where = f" in {op}" if op else ""
        raise UnsupportedDtype(f"toony has no kernels for dtype {dt}{where}")
    return TO_TOONY[dt]
