"""The matrix exponential on the device (linalg_matrix_exp; torch.matrix_exp reaches it too).

Scaling and squaring with a Taylor polynomial: each matrix is scaled by 2^-s so that its 1-norm is at most
1, exp of the scaled matrix is the degree-18 Taylor sum (truncation error < 1/19! ~ 8e-18, below float64's
rounding, so no Pade solve is needed), then squared s times. Taylor is summed by Horner's rule: 18 batched
matmuls. Per-matrix s stays on the device (a matrix with a smaller s skips the later squarings by a select),
and the number of squaring steps is the batch's largest s: the one host readback, as the loop length must
be known. Everything runs in float64 where the device has it (float32 rounded once at the end), like
lowering_linalg._wide. torch's CPU kernel picks a lower degree for small norms (Bader-Blanes-Casas); the
results agree to rounding.
"""

from __future__ import annotations

from toony_core import Tensor, dtypes

from .lowering import lowers
from .lowering_linalg import _eye, _flat, _step, _wide

_DEGREE = 18
_MAX_SQUARINGS = 1100  # 2^1100 exceeds float64's range: a finite matrix never needs more


def matrix_exp(a: Tensor) -> Tensor:
    """exp of each (n, n) matrix of a (..., n, n) batch."""
    n = a.shape[-1]
    if a.numel() == 0:
        return a
    x = _flat(_wide(a))
    norm1 = x.abs().sum(1, keepdim=True).max(2, keepdim=True)  # (B, 1, 1): the largest column sum
    finite = norm1 == norm1  # NaN norms: s = 0, and the NaNs flow through the polynomial
    s = finite.where((norm1.maximum(1.0).log2().ceil()).minimum(_MAX_SQUARINGS), 0.0)
    x = (x * (-s).exp2()).contiguous()
    eye = _eye(n, x.dtype).reshape(1, n, n)
    t = eye + x * (1.0 / _DEGREE)
    for k in range(_DEGREE - 1, 0, -1):  # Horner: I + X/k (I + X/(k+1) (...))
        t = (eye + (x @ t) * (1.0 / k)).contiguous()
    steps = int(s.max().numpy())
    si = s.cast(dtypes.int64).contiguous()
    for i in range(steps):
        t = (_step(i) < si).where(t @ t, t).contiguous()
    return t.reshape(a.shape).cast(a.dtype)


@lowers("linalg_matrix_exp.default")
def linalg_matrix_exp(a: Tensor) -> Tensor:
    return matrix_exp(a)

