"""Dense linear algebra on the device: LU with partial pivoting, Cholesky and triangular solves, and what torch
builds on them (lu_unpack, lu_solve, solve, inv, det, slogdet, cholesky_solve, cholesky_inverse).

Every algorithm is LAPACK's unblocked right-looking loop written with lazy toony ops: an n x n factorization
or an n-step triangular solve is n steps, and each step is a few fused kernels over the whole batch of
matrices (gathers of the pivot row and column, one elementwise update), made contiguous once per step so the
graph stays a chain. The step number j is read from a small device buffer rather than baked into the
kernel, so all n steps of a shape share one compiled kernel. Pivoting picks the first row of largest |value|
(LAPACK's idamax), multipliers are scaled by the reciprocal of the pivot (getrf2's dscal), so LU, pivots and
info are LAPACK's up to rounding. Cost: O(n^3) work per matrix as in LAPACK, but in ~3n dependent launches
each touching the whole matrix and without blocking, so it suits the small matrices of tests and models
(n of a few hundred); n = 4096 would be ~12k launches over 16M elements each.

Only ops with their own derivative formulas are registered (the CompositeImplicitAutograd ones, such as
linalg_inv or linalg_solve, reach these). Real dtypes only: toony has no complex types.
"""

from __future__ import annotations

import numpy as np
import torch

from toony_core import Tensor, dtypes
from toony_core.helpers import strides_for
from toony_core.tensor import _broadcast_shape
from toony_core.uop import Ops

from .lowering import lowers

_steps: dict[int, Tensor] = {}
# the smallest normal number: getrf2 divides by a pivot smaller than this instead of scaling by its reciprocal
_SFMIN = {dtypes.float32: float(np.finfo(np.float32).tiny), dtypes.float64: float(np.finfo(np.float64).tiny)}


def _step(j: int) -> Tensor:
    """j as a 0-d int64 value read from a device buffer (made once, kept): every step shares one kernel."""
    t = _steps.get(j)
    if t is None:
        t = _steps[j] = Tensor(np.array([j], dtype=np.int64)).reshape(())
    return t


def _axis(n: int, dim: int) -> Tensor:
    """arange(n) along dim of a 3-d (batch, rows, cols) shape."""
    return Tensor.arange(n).reshape([n if d == dim else 1 for d in range(3)])


def _pick(x: Tensor, r: Tensor | int, c: Tensor | int) -> Tensor:
    """x[b, r, c] of a contiguous (B, m, n) batch for index tensors broadcasting to (B or 1, R, C)."""
    b, m, n = x.shape
    return x.reshape(b * m * n).take(_axis(b, 0) * (m * n) + r * n + c)


def _eye(n: int, dtype: dtypes.DType) -> Tensor:
    return (Tensor.arange(n).reshape(n, 1) == Tensor.arange(n).reshape(1, n)).cast(dtype)


def _wide(x: Tensor) -> Tensor:
    """float32 substitution runs in float64 where the device has it, rounding once at the end: a triangular
    solve's error grows with the condition number (exponentially in n for random triangles), and LAPACK's
    blocked, FMA-ordered float32 sums round differently from any loop, so the only way to stay close to it is
    to add no error of our own."""
    from toony_core import device
    return x.cast(dtypes.float64) if x.dtype == dtypes.float32 and device().supports_fp64 else x


def _mT(x: Tensor) -> Tensor:  # noqa: N802 - torch's name
    return x.transpose(-2, -1)


def _flat(x: Tensor) -> Tensor:
    """The leading batch dims of x as one, materialized so each step gathers from a buffer."""
    return x.reshape(-1, *x.shape[-2:]).contiguous()


def _broadcast_batch(*xs: Tensor) -> tuple[Tensor, ...]:
    batch = _broadcast_shape(*[x.shape[:-2] for x in xs])
    return tuple(x.expand(*batch, *x.shape[-2:]) for x in xs)


def _is_contiguous(x: Tensor) -> bool:
    """Whether the torch tensor behind a lowering argument is contiguous. torch's det and slogdet factor A^T
    when A is contiguous and their backward formulas redo that test on A, so the LU they return must follow
    the same rule (torch 2.13's solve factors A itself). An eager argument is a reshape of its storage when
    contiguous and a strided view otherwise; in a compiled graph a transposed or sliced value is a movement op."""
    u = x.uop
    if u.op is Ops.STRIDED:
        shape, strides, _ = u.arg
        return all(s == c for n, s, c in zip(shape, strides, strides_for(shape)) if n != 1)
    return u.op not in (Ops.PERMUTE, Ops.EXPAND, Ops.SHRINK, Ops.PAD, Ops.FLIP)


def _check(info: Tensor, api: str, is_matrix: bool) -> None:
    """torch's error for a failed factorization (check_errors=True): the only place that reads info back."""
    torch._linalg_check_errors(torch.from_numpy(info.cast(dtypes.int32).numpy()), api, is_matrix=is_matrix)


# ---------------------------------------------------------------- triangular solves

def _solve_lower(a: Tensor, y: Tensor, unit: bool) -> Tensor:
    """X with A X = Y for (B, n, n) A read only on and below its diagonal and (B, n, k) Y: forward
    substitution one row of X per step, each step subtracting that row from the rows below (dtrsm's order)."""
    b, n, k = y.shape
    if y.numel() == 0:
        return y
    rows, cols = _axis(n, 1), _axis(k, 2)
    for j in range(n):
        jt = _step(j)
        xj = _pick(y, jt, cols)
        if not unit:
            xj = xj / _pick(a, jt, jt)
        y = (rows == jt).where(xj, (rows > jt).where(y - _pick(a, rows, jt) * xj, y)).contiguous()
    return y


def solve_triangular(a: Tensor, y: Tensor, upper: bool, unit: bool) -> Tensor:
    """X with A X = Y for (..., n, n) A (only its upper or lower triangle read) and (..., n, k) Y, batch dims
    broadcast. An upper system is the lower one with rows and columns reversed."""
    a, y = _broadcast_batch(a, y)
    shape = y.shape
    if y.numel() == 0:
        return y
    fa, fy = _flat(_wide(a.flip((-2, -1)) if upper else a)), _flat(_wide(y.flip(-2) if upper else y))
    x = _solve_lower(fa, fy, unit).reshape(shape).cast(y.dtype)
    return x.flip(-2) if upper else x


def solve_triangular_side(a: Tensor, y: Tensor, upper: bool, left: bool, unit: bool) -> Tensor:
    """A X = Y (left) or X A = Y (right, solved as A^T X^T = Y^T)."""
    if left:
        return solve_triangular(a, y, upper, unit)
    return _mT(solve_triangular(_mT(a), _mT(y), not upper, unit))


@lowers("linalg_solve_triangular.default")
def linalg_solve_triangular(a: Tensor, y: Tensor, *, upper: bool, left: bool = True, unitriangular: bool = False) \
        -> Tensor:
    return solve_triangular_side(a, y, upper, left, unitriangular)


@lowers("triangular_solve.default")
def triangular_solve(y: Tensor, a: Tensor, upper: bool = True, transpose: bool = False,
                     unitriangular: bool = False) -> tuple[Tensor, Tensor]:
    x = solve_triangular(_mT(a) if transpose else a, y, upper != transpose, unitriangular)
    return x, a  # the second output is a copy of A (broadcast to the batch shape by the output's meta)


# ---------------------------------------------------------------- LU

def _pivot_row(x: Tensor, jt: Tensor) -> Tensor:
    """Per matrix, the first row r >= j of largest |x[r, j]| (LAPACK's idamax; NaN never wins unless the whole
    column is NaN, then row j): a (B, 1, 1) int64."""
    m = x.shape[1]
    rows = _axis(m, 1)
    col = _pick(x, rows, jt)
    mag = (rows >= jt).where((col != col).where(-1.0, col.abs()), -2.0)
    return (mag == mag.max(1, keepdim=True)).where(rows, m).min(1, keepdim=True)


def _lu_steps(x: Tensor, pivot: bool) -> tuple[Tensor, Tensor]:
    """LU of a contiguous (B, m, n) batch in place of x (unit L below the diagonal, U on and above it), and
    the 0-based pivot rows (B, min(m, n)) int64."""
    b, m, n = x.shape
    k = min(m, n)
    rows, cols, slots = _axis(m, 1), _axis(n, 2), Tensor.arange(k).reshape(1, k)
    sfmin = _SFMIN[x.dtype]
    pivs = Tensor.zeros((b, k), dtypes.int64)
    for j in range(k):
        jt = _step(j)
        p = _pivot_row(x, jt).contiguous() if pivot else jt.reshape(1, 1, 1).expand(b, 1, 1)
        row_j, row_p = _pick(x, jt, cols), _pick(x, p, cols)
        swapped = (rows == jt).where(row_p, (rows == p).where(row_j, x))
        pv = _pick(x, p, jt)  # the pivot, now at (j, j)
        col = (rows == jt).where(pv, (rows == p).where(_pick(x, jt, jt), _pick(x, rows, jt)))
        scaled = (pv.abs() >= sfmin).where(col * (1 / pv), col / pv)
        lower = (rows > jt) & (pv != 0)  # a zero pivot (singular column) leaves its zeros alone, as LAPACK
        mult = lower.where(scaled, col)
        below = rows > jt
        x = (below & (cols > jt)).where(swapped - mult * row_p, (cols == jt).where(mult, swapped)).contiguous()
        pivs = (slots == jt).where(p.reshape(b, 1), pivs).contiguous()
    return x, pivs


def _diagonal(x: Tensor) -> Tensor:
    """The main diagonal of a (..., m, n) tensor as (..., min(m, n))."""
    *batch, m, n = x.shape
    k = min(m, n)
    if x.numel() == 0:
        return Tensor.zeros((*batch, k), x.dtype)
    idx = Tensor.arange(k).reshape(1, 1, k)
    return _pick(_flat(x), idx, idx).reshape(*batch, k)


def lu_factor(a: Tensor, pivot: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(LU, pivots int32 1-based, info int32) of a (..., m, n) batch, as LAPACK getrf: info is the 1-based
    index of the first zero pivot (U[i-1, i-1] == 0), else 0."""
    *batch, m, n = a.shape
    k = min(m, n)
    if a.numel() == 0:
        return a, Tensor.zeros((*batch, k), dtypes.int32), Tensor.zeros(tuple(batch), dtypes.int32)
    lu, pivs = _lu_steps(_flat(a), pivot)
    lu, pivs = lu.reshape(a.shape), pivs.reshape(*batch, k)
    return lu, (pivs + 1).cast(dtypes.int32), _first_zero(_diagonal(lu))


def _first_zero(diag: Tensor) -> Tensor:
    """1 + the index of the first zero along the last axis, 0 where there is none (int32)."""
    k = diag.shape[-1]
    first = (diag == 0).where(Tensor.arange(1, k + 1), k + 1).min(-1)
    return (first == k + 1).where(0, first).cast(dtypes.int32)


@lowers("linalg_lu_factor_ex.default")
def linalg_lu_factor_ex(a: Tensor, *, pivot: bool = True, check_errors: bool = False) \
        -> tuple[Tensor, Tensor, Tensor]:
    lu, pivs, info = lu_factor(a, pivot)
    if check_errors:
        _check(info, "torch.linalg.lu_factor_ex", a.ndim == 2)
    return lu, pivs, info


def permutation(pivots: Tensor, m: int) -> Tensor:
    """perm (..., m) int64 with (P^T A)[i] = A[perm[i]] for LAPACK's 1-based row swaps (..., k): the swaps
    replayed in order, one small kernel each."""
    *batch, k = pivots.shape
    b = pivots.numel() // k if k else int(np.prod(batch))
    perm = Tensor.arange(m).reshape(1, m, 1).expand(b, m, 1).contiguous()
    if k == 0 or b == 0:
        return perm.reshape(*batch, m)
    piv = (pivots.reshape(b, k, 1).cast(dtypes.int64) - 1).clip(0, m - 1).contiguous()  # never read out of range
    rows = _axis(m, 1)
    for j in range(k):
        jt = _step(j)
        p = _pick(piv, jt, 0)
        perm = (rows == jt).where(_pick(perm, p, 0), (rows == p).where(_pick(perm, jt, 0), perm)).contiguous()
    return perm.reshape(*batch, m)


def _permutation_matrix(perm: Tensor, dtype: dtypes.DType) -> Tensor:
    """P (..., m, m) with P[perm[i], i] = 1, so that A = P L U."""
    m = perm.shape[-1]
    rows = Tensor.arange(m).reshape(m, 1)
    return (perm.reshape(*perm.shape[:-1], 1, m) == rows).cast(dtype)


def _row_gather(y: Tensor, perm: Tensor) -> Tensor:
    """y[..., perm[i], :] for (..., m, k) y and (..., m) perm of the same batch."""
    *batch, m, k = y.shape
    if y.numel() == 0:
        return y
    fy = _flat(y)
    return _pick(fy, perm.reshape(fy.shape[0], m, 1), _axis(k, 2)).reshape(*batch, m, k)


def _inverse_permutation(perm: Tensor) -> Tensor:
    """inv with inv[perm[i]] = i (an exact integer reduction: perm is a permutation)."""
    m = perm.shape[-1]
    hit = perm.reshape(*perm.shape[:-1], 1, m) == Tensor.arange(m).reshape(m, 1)
    return hit.where(Tensor.arange(m).reshape(1, m), 0).sum(-1)


def unpack(lu: Tensor, pivots: Tensor | None, unpack_data: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(P, L, U) from getrf's packed LU; an output not asked for is empty, as torch returns it."""
    *batch, m, n = lu.shape
    k = min(m, n)
    empty = Tensor.zeros((0,), lu.dtype)
    p = empty if pivots is None else _permutation_matrix(permutation(pivots, m), lu.dtype)
    if not unpack_data:
        return p, empty, empty
    rows, cols = Tensor.arange(m).reshape(m, 1), Tensor.arange(n).reshape(1, n)
    zero = Tensor.full((), 0, lu.dtype)
    lower = (rows > cols).where(lu, (rows == cols).where(Tensor.full((), 1, lu.dtype), zero))
    upper = (rows <= cols).where(lu, zero)
    full = [(0, s) for s in batch]
    return p, lower.shrink([*full, (0, m), (0, k)]), upper.shrink([*full, (0, k), (0, n)])


@lowers("linalg_lu.default")
def linalg_lu(a: Tensor, *, pivot: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    lu, pivs, _ = lu_factor(a, pivot)
    return unpack(lu, pivs if pivot else None)


@lowers("lu_unpack.default")
def lu_unpack(lu: Tensor, pivots: Tensor, unpack_data: bool = True, unpack_pivots: bool = True) \
        -> tuple[Tensor, Tensor, Tensor]:
    return unpack(lu, pivots if unpack_pivots else None, unpack_data)


def lu_solve(lu: Tensor, pivots: Tensor, y: Tensor, left: bool = True, adjoint: bool = False) -> Tensor:
    """X with A X = Y (left) or X A = Y, A (or A^T with adjoint) = P L U given as getrf's (LU, pivots)."""
    if not left:  # X A = Y  <=>  A^T X^T = Y^T
        return _mT(lu_solve(lu, pivots, _mT(y), True, not adjoint))
    batch = _broadcast_shape(lu.shape[:-2], y.shape[:-2])
    n = lu.shape[-1]
    lu, y = lu.expand(*batch, n, n), y.expand(*batch, *y.shape[-2:])
    perm = permutation(pivots.expand(*batch, pivots.shape[-1]), n)
    if not adjoint:  # L U X = P^T Y
        return solve_triangular(lu, solve_triangular(lu, _row_gather(y, perm), False, True), True, False)
    # U^T L^T P^T X = Y: X = P L^-T U^-T Y
    w = solve_triangular(_mT(lu), solve_triangular(_mT(lu), y, False, False), True, True)
    return _row_gather(w, _inverse_permutation(perm))


@lowers("linalg_lu_solve.default")
def linalg_lu_solve(lu: Tensor, pivots: Tensor, y: Tensor, *, left: bool = True, adjoint: bool = False) -> Tensor:
    return lu_solve(lu, pivots, y, left, adjoint)


def _factor_like_torch(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """getrf of A^T when A is contiguous, else of A, as torch's det and slogdet do (see _is_contiguous)."""
    return lu_factor(_mT(a) if _is_contiguous(a) else a)


def solve(a: Tensor, y: Tensor, left: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(X, LU, pivots, info) of torch's _linalg_solve_ex: Y may be a (batch of) vector(s)."""
    vector = y.ndim == 1 or (y.ndim == a.ndim - 1 and y.shape == a.shape[:-1])
    lu, pivs, info = lu_factor(a)
    x = lu_solve(lu, pivs, y.reshape(*y.shape, 1) if vector else y, left)
    return (x.reshape(x.shape[:-1]) if vector else x), lu, pivs, info


@lowers("_linalg_solve_ex.default")
def linalg_solve_ex(a: Tensor, y: Tensor, *, left: bool = True, check_errors: bool = False) \
        -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out = solve(a, y, left)
    if check_errors:
        _check(out[3], "torch.linalg.solve_ex", a.ndim == 2)
    return out


@lowers("linalg_inv_ex.default")
def linalg_inv_ex(a: Tensor, *, check_errors: bool = False) -> tuple[Tensor, Tensor]:
    x, _, _, info = solve(a, _eye(a.shape[-1], a.dtype).expand(a.shape))
    if check_errors:
        _check(info, "linalg.inv_ex", a.ndim == 2)
    return x, info


def _det_p(pivots: Tensor, dtype: dtypes.DType) -> Tensor:
    """det(P): -1 to the number of actual row swaps."""
    k = pivots.shape[-1]
    swaps = (pivots.cast(dtypes.int64) != Tensor.arange(1, k + 1)).sum(-1) if k else Tensor.zeros(pivots.shape[:-1],
                                                                                                    dtypes.int64)
    return ((swaps % 2) == 0).where(Tensor.full((), 1, dtype), Tensor.full((), -1, dtype))


@lowers("_linalg_det.default")
def linalg_det(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    lu, pivs, _ = _factor_like_torch(a)  # det(A^T) = det(A)
    return _det_p(pivs, a.dtype) * _diagonal(lu).prod(-1), lu, pivs


@lowers("_linalg_slogdet.default")
def linalg_slogdet(a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    lu, pivs, _ = _factor_like_torch(a)
    diag = _diagonal(lu)
    return _det_p(pivs, a.dtype) * diag.sign().prod(-1), diag.abs().log().sum(-1), lu, pivs


# ---------------------------------------------------------------- Cholesky

def _cholesky_steps(x: Tensor) -> tuple[Tensor, Tensor]:
    """Lower Cholesky factor of a contiguous (B, n, n) batch (read on and below the diagonal; above it is
    left as it was) and info (B, 1, 1): the order of the first leading minor that is not positive definite
    (a pivot <= 0 or NaN), after which that matrix is left as it stood, as potrf stops."""
    b, n, _ = x.shape
    rows, cols = _axis(n, 1), _axis(n, 2)
    info = Tensor.zeros((b, 1, 1), dtypes.int64)
    for j in range(n):
        jt = _step(j)
        d = _pick(x, jt, jt)
        info = ((info == 0) & (d > 0).logical_not()).where(jt + 1, info).contiguous()
        s = d.sqrt()
        col = _pick(x, rows, jt) * (1 / s)  # column j below the diagonal, scaled by dscal's reciprocal
        row = _pick(x, cols, jt) * (1 / s)  # the same multipliers laid along the columns
        below, at_j = rows > jt, cols == jt
        new = (below & (cols > jt)).where(x - col * row, (below & at_j).where(col, ((rows == jt) & at_j).where(s, x)))
        x = (info == 0).where(new, x).contiguous()
    return x, info


def cholesky(a: Tensor, upper: bool) -> tuple[Tensor, Tensor]:
    """(L or U, info int32) of a (..., n, n) batch; upper factors A^T (reading A's upper triangle)."""
    *batch, n, _ = a.shape
    if a.numel() == 0:
        return a, Tensor.zeros(tuple(batch), dtypes.int32)
    x, info = _cholesky_steps(_flat(_mT(a) if upper else a))
    rows, cols = _axis(n, 1), _axis(n, 2)
    low = (rows >= cols).where(x, Tensor.full((), 0, x.dtype)).reshape(a.shape)
    return (_mT(low) if upper else low), info.reshape(tuple(batch)).cast(dtypes.int32)


@lowers("linalg_cholesky_ex.default")
def linalg_cholesky_ex(a: Tensor, *, upper: bool = False, check_errors: bool = False) -> tuple[Tensor, Tensor]:
    factor, info = cholesky(a, upper)
    if check_errors:
        _check(info, "linalg.cholesky_ex", a.ndim == 2)
    return factor, info


@lowers("cholesky.default")
def cholesky_legacy(a: Tensor, upper: bool = False) -> Tensor:
    factor, info = cholesky(a, upper)
    _check(info, "cholesky", a.ndim == 2)  # torch.cholesky always raises for a matrix that is not PD
    return factor


@lowers("cholesky_inverse.default")
def cholesky_inverse(factor: Tensor, upper: bool = False) -> Tensor:
    """(L L^T)^-1 = L^-T L^-1, or (U^T U)^-1 = U^-1 U^-T: one triangular solve against the identity."""
    inv = solve_triangular(factor, _eye(factor.shape[-1], factor.dtype).expand(factor.shape), upper, False)
    return inv @ _mT(inv) if upper else _mT(inv) @ inv


@lowers("_cholesky_solve_helper.default")
def cholesky_solve_helper(y: Tensor, factor: Tensor, upper: bool) -> Tensor:
    """X with (L L^T) X = Y (or U^T U X = Y): two triangular solves."""
    first = solve_triangular(_mT(factor) if upper else factor, y, False, False)
    return solve_triangular(factor if upper else _mT(factor), first, True, False)

from . import (  # noqa: E402 - register after the helpers above exist
    lowering_linalg_exp,  # noqa: F401 - matrix_exp
    lowering_linalg_ldl,  # noqa: F401 - ldl_factor, ldl_solve
    lowering_linalg_spectral,  # noqa: F401 - SVD, eigh and QR
)
