"""LDL^T with Bunch-Kaufman pivoting (linalg_ldl_factor_ex) and its solve (linalg_ldl_solve), real dtypes.

The factorization is LAPACK's unblocked lower sytf2: at step k the pivot is chosen from column k by the
Bunch-Kaufman test (alpha = (1 + sqrt 17) / 8): a 1x1 pivot on the diagonal, a 1x1 pivot swapped in from row
imax, or a 2x2 pivot block on rows k, k+1 with imax swapped into k+1. Swaps touch only the trailing matrix,
so L is LAPACK's interleaved product of permutations and unit lower factors and (LD, pivots) are sytrf's:
1-based pivots, a 2x2 block's two entries both -(row + 1). The block sizes differ per matrix of a batch, so
they are not Python control flow: each of the n steps runs on every matrix, and a matrix whose step k was
the second column of a 2x2 block (a per-matrix flag on the device) keeps its values through that step. The
trailing matrix is kept full and symmetric, which makes the row and column swaps one gather. The factor runs
in the input's dtype with dsyr's operation order (a + x_i * (-x_j / d)): float32 LD then agrees with LAPACK's
float32 LD to rounding even on ill-conditioned samples, where a float64 factor rounded once is more accurate
but lies further from what CPU torch returns (1e-5 vs 2e-6 on OpInfo's sample). The solve runs in float64
where the device has it, as lowering_linalg._wide.

The solve (sytrs) walks the blocks forward (swap, eliminate below, divide by D) and back (subtract, unswap),
one lazy step per column with the same per-matrix "second half of a 2x2 block" flag.
"""

from __future__ import annotations

import math

from toony_core import Tensor, dtypes

from .lowering import lowers
from .lowering_linalg import _axis, _broadcast_batch, _check, _flat, _mT, _pick, _step, _wide

_ALPHA = (1 + math.sqrt(17)) / 8


def _first_argmax(mag: Tensor, axis: int) -> Tensor:
    """Index of the first largest value along axis (LAPACK's idamax), keepdim; mag has no NaN."""
    n = mag.shape[axis]
    idx = _axis(n, axis)
    return (mag == mag.max(axis, keepdim=True)).where(idx, n).min(axis, keepdim=True)


def _ldl_steps(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(X, pivots (B, n) int64 in sytrf's 1-based form, info (B, 1, 1)) for a contiguous symmetric (B, n, n)."""
    b, n, _ = x.shape
    rows, cols, slots = _axis(n, 1), _axis(n, 2), Tensor.arange(n).reshape(1, n)
    skip = Tensor.zeros((b, 1, 1), dtypes.bool)
    info = Tensor.zeros((b, 1, 1), dtypes.int64)
    pivs = Tensor.zeros((b, n), dtypes.int64)
    zero = Tensor.full((), 0.0, x.dtype)
    for k in range(n):
        kt = _step(k)
        col = _pick(x, rows, kt)  # (B, n, 1)
        akk = _pick(x, kt, kt)
        absakk = akk.abs()
        below = (rows > kt).where(col.abs(), -1.0)
        colmax = below.max(1, keepdim=True).maximum(0.0)
        imax = _first_argmax(below, 1)  # (B, 1, 1)
        # the largest off-diagonal |entry| of row imax in the trailing matrix
        rowmag = ((cols >= kt) & (cols != imax)).where(_pick(x, imax, cols).abs(), 0.0)
        rowmax = rowmag.max(2, keepdim=True)
        aimax = _pick(x, imax, imax).abs()
        singular = (absakk.maximum(colmax) == 0) | (absakk != absakk)
        keep_k = singular | (absakk >= _ALPHA * colmax) | (absakk * rowmax >= _ALPHA * colmax * colmax)
        one_swap = keep_k.logical_not() & (aimax >= _ALPHA * rowmax)
        two = (keep_k | one_swap).logical_not() & (kt + 1 < n)
        kp = keep_k.where(kt, imax)
        kk = two.where(kt + 1, kt)
        # symmetric swap of kk and kp within the trailing matrix
        perm_r = (rows == kk).where(kp, (rows == kp).where(kk, rows))
        perm_c = (cols == kk).where(kp, (cols == kp).where(kk, cols))
        trailing = (rows >= kt) & (cols >= kt)
        y = trailing.where(_pick(x, perm_r, perm_c), x).contiguous()
        # 1x1 pivot: rank-1 update of the trailing matrix, column scaled by 1/d (dsyr, dscal)
        d = _pick(y, kt, kt)
        r1 = 1 / singular.where(1.0, d)
        ck, rk = _pick(y, rows, kt), _pick(y, kt, cols)
        t1 = (rows > kt) & (cols > kt)
        one = t1.where(y + ck * (-r1 * rk), ((rows > kt) & (cols == kt)).where(ck * r1, y))
        one = singular.where(y, one)
        # 2x2 pivot block on k, k+1
        k1 = kt + 1
        d21 = _pick(y, k1, kt)
        d21s = (d21 == 0).where(1.0, d21)
        d11, d22 = _pick(y, k1, k1) / d21s, _pick(y, kt, kt) / d21s
        tt = 1 / (d11 * d22 - 1)
        d21 = tt / d21s
        ck1, rk1 = _pick(y, rows, k1), _pick(y, k1, cols)
        wk_r, wk1_r = d21 * (d11 * rk - rk1), d21 * (d22 * rk1 - rk)  # wk[j], wkp1[j] along columns
        wk_c, wk1_c = d21 * (d11 * ck - ck1), d21 * (d22 * ck1 - ck)  # the same along rows
        t2 = (rows > k1) & (cols > k1)
        low2 = rows > k1
        blk = t2.where(y - (ck * wk_r + ck1 * wk1_r),
                       (low2 & (cols == kt)).where(wk_c, (low2 & (cols == k1)).where(wk1_c, y)))
        new = two.where(blk, one)
        x = skip.where(x, new).contiguous()
        info = (skip.logical_not() & singular & (info == 0)).where(kt + 1, info).contiguous()
        pk = two.where(-(kp + 1), kp + 1).reshape(b, 1)
        write = ((slots == kt) | (two.reshape(b, 1) & (slots == kt + 1))) & skip.reshape(b, 1).logical_not()
        pivs = write.where(pk, pivs).contiguous()
        skip = (skip.logical_not() & two).contiguous()
    lower = (rows >= cols).where(x, zero)
    return lower, pivs, info


def ldl_factor(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(LD, pivots int32, info int32) of a (..., n, n) batch read from its lower triangle."""
    *batch, n, _ = a.shape
    if a.numel() == 0:
        return a, Tensor.zeros((*batch, n), dtypes.int32), Tensor.zeros(tuple(batch), dtypes.int32)
    x = _flat(a)
    rows, cols = _axis(n, 1), _axis(n, 2)
    x = (rows >= cols).where(x, _mT(x)).contiguous()
    ld, pivs, info = _ldl_steps(x)
    return (ld.reshape(a.shape).cast(a.dtype), pivs.reshape(*batch, n).cast(dtypes.int32),
            info.reshape(tuple(batch)).cast(dtypes.int32))


@lowers("linalg_ldl_factor_ex.default")
def linalg_ldl_factor_ex(a: Tensor, *, hermitian: bool = False, check_errors: bool = False) \
        -> tuple[Tensor, Tensor, Tensor]:
    ld, pivs, info = ldl_factor(a)  # real dtypes: hermitian is the same factorization
    if check_errors:
        _check(info, "torch.linalg.ldl_factor_ex", a.ndim == 2)
    return ld, pivs, info


def _swap_rows(y: Tensor, i: Tensor, j: Tensor) -> Tensor:
    rows, cols = _axis(y.shape[1], 1), _axis(y.shape[2], 2)
    return _pick(y, (rows == i).where(j, (rows == j).where(i, rows)), cols)


def _ldl_solve_steps(ld: Tensor, piv: Tensor, y: Tensor) -> Tensor:
    """X with A X = Y for sytrf's (B, n, n) LD, (B, n, 1) 0-based |pivot| rows and 2x2 flags, (B, n, k) Y."""
    b, n, _ = ld.shape
    rows = _axis(n, 1)
    neg = piv < 0
    kp_all = neg.where(-piv, piv) - 1  # (B, n, 1) 0-based
    skip = Tensor.zeros((b, 1, 1), dtypes.bool)
    firsts = []
    for k in range(n):  # forward: L D part
        kt = _step(k)
        two = _pick(neg, kt, 0) & skip.logical_not() & (kt + 1 < n)
        two = two.contiguous()
        firsts.append(two)
        kp = _pick(kp_all, kt, 0)
        z = _swap_rows(y, two.where(kt + 1, kt), kp)
        k1 = kt + 1
        bk, bk1 = _pick(z, kt, _axis(y.shape[2], 2)), _pick(z, k1.minimum(n - 1), _axis(y.shape[2], 2))
        lk, lk1 = _pick(ld, rows, kt), _pick(ld, rows, k1.minimum(n - 1))
        dkk = _pick(ld, kt, kt)
        one = (rows > kt).where(z - lk * bk, (rows == kt).where(z / dkk, z))
        a21 = _pick(ld, k1.minimum(n - 1), kt)
        a21 = (a21 == 0).where(1.0, a21)
        akm1, ak = dkk / a21, _pick(ld, k1.minimum(n - 1), k1.minimum(n - 1)) / a21
        den = akm1 * ak - 1
        zk, zk1 = bk / a21, bk1 / a21
        solved = (rows == kt).where((ak * zk - zk1) / den, (rows == k1).where((akm1 * zk1 - zk) / den, z))
        blk = (rows > k1).where(z - lk * bk - lk1 * bk1, solved)
        y = skip.where(y, two.where(blk, one)).contiguous()
        skip = (skip.logical_not() & two).contiguous()
    for k in range(n - 1, -1, -1):  # backward: L^T part, blocks seen from their last column
        kt = _step(k)
        second = firsts[k - 1] if k > 0 else Tensor.zeros((b, 1, 1), dtypes.bool)
        first_of_two = firsts[k]
        kcol = _pick(ld, rows, kt)
        sub = ((rows > kt).where(kcol, 0.0) * y).sum(1, keepdim=True)  # L[k+1:, k] . Y[k+1:]
        if k > 0:
            km1 = _step(k - 1)
            pcol = _pick(ld, rows, km1)
            sub2 = ((rows > kt).where(pcol, 0.0) * y).sum(1, keepdim=True)
            z = (rows == kt).where(y - sub, second.where((rows == km1).where(y - sub2, y), y))
        else:
            z = (rows == kt).where(y - sub, y)
        kp = _pick(kp_all, kt, 0)
        z = _swap_rows(z.contiguous(), kt, kp)
        y = first_of_two.where(y, z).contiguous()  # the block's first column was handled with its second
    return y


def ldl_solve(ld: Tensor, pivots: Tensor, y: Tensor) -> Tensor:
    ld, y = _broadcast_batch(ld, y)
    batch, n = ld.shape[:-2], ld.shape[-1]
    pivots = pivots.expand(*batch, n)
    if y.numel() == 0:
        return y
    fl, fy = _flat(_wide(ld)), _flat(_wide(y))
    piv = pivots.cast(dtypes.int64).reshape(fl.shape[0], n, 1).contiguous()
    return _ldl_solve_steps(fl, piv, fy).reshape(y.shape).cast(y.dtype)


@lowers("linalg_ldl_solve.default")
def linalg_ldl_solve(ld: Tensor, pivots: Tensor, y: Tensor, *, hermitian: bool = False) -> Tensor:
    return ldl_solve(ld, pivots, y)
