"""toony_core: a small compiler from lazy tensor graphs to fused OpenCL kernels. No torch in here."""

from .dtype import DType, dtypes
from .runtime import Buffer, ToonyError, device, synchronize
from .tensor import Tensor
from .uop import Ops, UOp


def schedule(*tensors: Tensor) -> list:
    """The kernels realizing these tensors would run (nothing runs)."""
    from .scheduler import create_schedule
    return create_schedule(list(dict.fromkeys(t.uop for t in tensors)))[0]


__all__ = ["Buffer", "DType", "Ops", "Tensor", "ToonyError", "UOp", "device", "dtypes", "schedule", "synchronize"]
