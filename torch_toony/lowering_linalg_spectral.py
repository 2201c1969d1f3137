"""Householder QR, symmetric eigendecomposition and SVD on the device, real dtypes.

QR is LAPACK's unblocked geqr2: step j builds the reflector H_j = I - tau v v^T that maps column j below the
diagonal onto beta e_j (dlarfg's sign choice beta = -sign(alpha) ||x||, v_j = 1, tau = 0 when the column
below the diagonal is already zero) and applies it to the columns after j, so geqrf's compact form, tau, Q
and R are LAPACK's up to rounding (torch compares Q and R directly). householder_product and ormqr replay
the reflectors one step each. As in lowering_linalg, the step number is a device buffer, so every step of a
shape shares its kernels.

eigh and SVD are Jacobi methods, chosen over tridiagonalisation + QR iteration because they are a short,
fixed chain of whole-batch matrix products (good for a GPU), converge quadratically, and find small
eigen/singular values to high relative accuracy. Rotations run in parallel: each round pairs every column
with another (the round-robin "circle" schedule, n-1 rounds a sweep for even n, a dummy partner when n is
odd) and applies all n/2 disjoint rotations as one matrix J (S <- J^T S J for eigh; for SVD the one-sided
Hestenes method W <- W J on the columns of A, the rotation taken from the Gram matrix W^T W). Convergence is
read back once per sweep (the only host readback): the sweep loop stops when the largest off-diagonal entry
is negligible. float32 runs in float64 where the device has it (as lowering_linalg._wide), rounding once.
Eigenvector and singular vector signs are not unique; torch's OpInfo samples compare |U|, |V| or U Vh.
"""

from __future__ import annotations

import numpy as np
import torch

from toony_core import Tensor, dtypes

from .lowering import META_LIB, lowers
from .lowering_linalg import _axis, _eye, _flat, _mT, _pick, _step, _wide

_MAX_SWEEPS = 40
# torch's errors for a non-finite input (CPU LAPACK fails to converge; torch raises for NaN, and for an inf in
# most positions; toony raises for both)
_NOT_FINITE = {
    False: "linalg.svd: The algorithm failed to converge because the input matrix contained non-finite values.",
    True: "linalg.eigh: The algorithm failed to converge because the input matrix is ill-conditioned or has too "
          "many repeated eigenvalues.",
}
_rounds: dict[int, list[Tensor]] = {}


def _schedule(n: int) -> list[Tensor]:
    """partner[i] for each round of a sweep (circle method over n rounded up to even; a column paired with
    the dummy is its own partner, so it is left alone that round): device int64 buffers of shape (1, 1, n)."""
    got = _rounds.get(n)
    if got is None:
        e = n + n % 2
        others = list(range(1, e))
        got = []
        for r in range(e - 1):
            ring = [0] + others[r:] + others[:r]
            partner = np.arange(n, dtype=np.int64)
            for k in range(e // 2):
                a, b = ring[k], ring[e - 1 - k]
                if a < n and b < n:
                    partner[a], partner[b] = b, a
            got.append(Tensor(partner.reshape(1, 1, n)))
        _rounds[n] = got
    return got


def _rotation(s: Tensor, partner: Tensor) -> Tensor:
    """J (B, n, n) of the rotations that zero s[i, partner[i]] for each pair of a symmetric (B, n, n) s:
    Rutishauser's stable formulas (the smaller angle, t = tan with |t| <= 1)."""
    b, n, _ = s.shape
    cols = _axis(n, 2)
    rows = _axis(n, 1)
    p = partner.reshape(1, n)
    idx = Tensor.arange(n).reshape(1, n)
    # (B, n), per column i. Both columns of a pair must compute bit-identical c and s or J is not orthogonal:
    # s is symmetric only up to rounding, so its two off-diagonal entries are averaged (a + b == b + a)
    sii, spp, sip = _pick(s, idx, idx), _pick(s, p, p), (_pick(s, idx, p) + _pick(s, p, idx)) * 0.5
    lo = idx < p
    diff = lo.where(spp - sii, sii - spp)  # s[hi, hi] - s[lo, lo] seen from either column of the pair
    zero = sip == 0
    zeta = diff / (2 * zero.where(1.0, sip))
    t = zeta.sign() / (zeta.abs() + (1 + zeta * zeta).sqrt())
    t = (zeta == 0).where(1.0, t)
    t = (zero | (p == idx)).where(0.0, t)
    c = 1 / (1 + t * t).sqrt()
    sn = c * t
    c, sn = c.reshape(b, 1, n), sn.reshape(b, 1, n)
    pc = p.reshape(1, 1, n)
    # column i of J: c at row i, -s (i the lower of its pair) or +s at row partner[i]
    return (rows == cols).where(c, ((rows == pc) & (pc != cols)).where(lo.reshape(1, 1, n).where(-sn, sn), 0.0))


def _off(s: Tensor, relative: bool) -> float:
    """The largest |s[i, j]|, i != j, over the batch: relative to sqrt(s_ii s_jj) (one-sided Jacobi: the
    cosine between columns) or to the largest |entry| of its matrix (eigh)."""
    n = s.shape[-1]
    off_diag = _axis(n, 1) != _axis(n, 2)
    if relative:
        d = _pick(s, _axis(n, 1), _axis(n, 1)).abs().sqrt()
        scale = d * _mT(d)
    else:
        scale = s.abs().max((1, 2), keepdim=True)
    ratio = off_diag.where(s.abs() / (scale == 0).where(1.0, scale), 0.0)
    return float(ratio.max().numpy())


def _jacobi(s: Tensor, w: Tensor | None, v: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
    """Sweeps until converged. eigh: w is None and s is updated as J^T s J. SVD: w (B, m, n) is rotated and
    s is its Gram matrix, recomputed each round. v accumulates J."""
    n = s.shape[-1]
    tol = float(np.finfo(np.float64 if s.dtype == dtypes.float64 else np.float32).eps) * max(n, 1)
    for _ in range(_MAX_SWEEPS):
        off = _off(s, w is not None)
        if off != off:  # a NaN or inf entry: LAPACK reports failure to converge, so does torch
            raise torch._C._LinAlgError(_NOT_FINITE[w is None])
        if off <= tol:
            break
        for partner in _schedule(n):
            j = _rotation(s, partner)
            v = (v @ j).contiguous()
            if w is None:
                s = (_mT(j) @ s @ j).contiguous()
            else:
                w = (w @ j).contiguous()
                s = (_mT(w) @ w).contiguous()
    return s, w, v


def _order(key: Tensor, descending: bool) -> Tensor:
    """perm (B, n) int64 that sorts each row of key (B, n) (stable): rank by counting, then invert."""
    b, n = key.shape
    ki, kj = key.reshape(b, n, 1), key.reshape(b, 1, n)
    i, j = _axis(n, 1), _axis(n, 2)
    before = (kj > ki) if descending else (kj < ki)
    rank = (before | ((kj == ki) & (j < i))).cast(dtypes.int64).sum(2)  # (B, n): where row i goes
    hit = rank.reshape(b, 1, n) == Tensor.arange(n).reshape(1, n, 1)
    return hit.where(Tensor.arange(n).reshape(1, 1, n), 0).sum(2)


def _take_cols(x: Tensor, perm: Tensor) -> Tensor:
    """x[b, :, perm[b, c]] of a (B, m, n) batch."""
    b, m, n = x.shape
    return _pick(x.contiguous(), _axis(m, 1), perm.reshape(b, 1, n))


def _take(x: Tensor, perm: Tensor) -> Tensor:
    b, n = x.shape
    return x.contiguous().reshape(b * n).take(Tensor.arange(b).reshape(b, 1) * n + perm)


# ---------------------------------------------------------------- QR

def _geqr2(x: Tensor) -> tuple[Tensor, Tensor]:
    """geqrf of a contiguous (B, m, n) batch: R on and above the diagonal, the reflectors' v below it, and
    tau (B, k)."""
    b, m, n = x.shape
    k = min(m, n)
    rows, cols, slots = _axis(m, 1), _axis(n, 2), Tensor.arange(k).reshape(1, k)
    tau = Tensor.zeros((b, k), x.dtype)
    for j in range(k):
        jt = _step(j)
        col = _pick(x, rows, jt)  # (B, m, 1)
        alpha = _pick(x, jt, jt)
        xnorm2 = (rows > jt).where(col * col, 0.0).sum(1, keepdim=True)
        norm = (alpha * alpha + xnorm2).sqrt()
        beta = (alpha >= 0).where(-norm, norm)
        skip = xnorm2 == 0
        t = skip.where(0.0, (beta - alpha) / beta)
        v = (rows == jt).where(1.0, (rows > jt).where(skip.where(col, col / (alpha - beta)), 0.0))  # (B, m, 1)
        w = (v * x).sum(1, keepdim=True)  # v^T x, (B, 1, n)
        upd = x - t * v * w
        x = (cols > jt).where(upd, (cols == jt).where((rows == jt).where(skip.where(alpha, beta),
                                                                       (rows > jt).where(v, x)), x)).contiguous()
        tau = (slots == jt).where(t.reshape(b, 1), tau).contiguous()
    return x, tau


def _reflector(h: Tensor, jt: Tensor) -> Tensor:
    """v_j (B, m, 1) of a compact (B, m, n) factor: 1 at row j, h below it, 0 above."""
    rows = _axis(h.shape[1], 1)
    return (rows == jt).where(1.0, (rows > jt).where(_pick(h, rows, jt), 0.0)).cast(h.dtype)


def _apply(h: Tensor, tau: Tensor, c: Tensor, left: bool, transpose: bool) -> Tensor:
    """Q C, Q^T C, C Q or C Q^T for Q = H_0 ... H_{k-1} (k = tau's length), contiguous (B, ., .) inputs."""
    k = tau.shape[-1]
    order = range(k) if left == transpose else range(k - 1, -1, -1)
    for j in order:
        jt = _step(j)
        v = _reflector(h, jt)
        t = _pick(tau.reshape(tau.shape[0], 1, k), 0, jt)
        if left:
            c = (c - t * v * (v * c).sum(1, keepdim=True)).contiguous()
        else:
            vr = v.reshape(v.shape[0], 1, v.shape[1])
            c = (c - t * (c * vr).sum(2, keepdim=True) * vr).contiguous()
    return c


def householder_product(h: Tensor, tau: Tensor, width: int) -> Tensor:
    """The first `width` columns of H_0 ... H_{k-1} for a (..., m, n) compact factor and tau (..., k)."""
    *batch, m, _ = h.shape
    if m == 0 or width == 0 or int(np.prod(batch)) == 0:
        return Tensor.zeros((*batch, m, width), h.dtype)
    fh = _flat(_wide(h))
    ft = _wide(tau).reshape(fh.shape[0], tau.shape[-1]).contiguous()
    eye = _eye(m, fh.dtype).shrink([(0, m), (0, width)]).reshape(1, m, width).expand(fh.shape[0], m, width)
    return _apply(fh, ft, eye.contiguous(), True, False).reshape(*batch, m, width).cast(h.dtype)


def geqrf(a: Tensor) -> tuple[Tensor, Tensor]:
    *batch, m, n = a.shape
    k = min(m, n)
    if a.numel() == 0:
        return a, Tensor.zeros((*batch, k), a.dtype)
    x, tau = _geqr2(_flat(_wide(a)))
    return x.reshape(a.shape).cast(a.dtype), tau.reshape(*batch, k).cast(a.dtype)


def _geqrf_meta(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch has no meta kernel for geqrf: LAPACK's column-major batch of a, contiguous tau."""
    torch._check(a.dim() >= 2, lambda: f"torch.geqrf: input must have at least 2 dimensions. Got {a.dim()}")
    *batch, m, n = a.shape
    return (torch.empty((*batch, n, m), dtype=a.dtype, device=a.device).mT,
            torch.empty((*batch, min(m, n)), dtype=a.dtype, device=a.device))


META_LIB.impl("geqrf", _geqrf_meta, "Meta")


@lowers("geqrf.default")
def geqrf_op(a: Tensor) -> tuple[Tensor, Tensor]:
    return geqrf(a)


@lowers("linalg_householder_product.default")
def linalg_householder_product(h: Tensor, tau: Tensor) -> Tensor:
    return householder_product(h, tau, h.shape[-1])


@lowers("ormqr.default")
def ormqr(h: Tensor, tau: Tensor, c: Tensor, left: bool = True, transpose: bool = False) -> Tensor:
    if c.numel() == 0 or tau.shape[-1] == 0:
        return c
    fh, fc = _flat(_wide(h)), _flat(_wide(c))
    ft = _wide(tau).reshape(fh.shape[0], tau.shape[-1]).contiguous()
    return _apply(fh, ft, fc, left, transpose).reshape(c.shape).cast(c.dtype)


def _triu(x: Tensor) -> Tensor:
    m, n = x.shape[-2:]
    return (Tensor.arange(m).reshape(m, 1) <= Tensor.arange(n).reshape(1, n)).where(x, Tensor.full((), 0, x.dtype))


@lowers("linalg_qr.default")
def linalg_qr(a: Tensor, mode: str = "reduced") -> tuple[Tensor, Tensor]:
    *batch, m, n = a.shape
    k = min(m, n)
    full = [(0, s) for s in batch]
    h, tau = geqrf(a)
    if mode == "r":
        return Tensor.zeros((0,), a.dtype), _triu(h.shrink([*full, (0, k), (0, n)]))
    if mode == "complete":
        return householder_product(h, tau, m), _triu(h)
    return householder_product(h, tau, k), _triu(h.shrink([*full, (0, k), (0, n)]))


# ---------------------------------------------------------------- eigh

def _symmetric(a: Tensor, lower: bool) -> Tensor:
    n = a.shape[-1]
    rows, cols = Tensor.arange(n).reshape(n, 1), Tensor.arange(n).reshape(1, n)
    keep = (rows >= cols) if lower else (rows <= cols)
    return keep.where(a, _mT(a))


@lowers("_linalg_eigh.default")
def linalg_eigh(a: Tensor, UPLO: str = "L", compute_v: bool = True) -> tuple[Tensor, Tensor]:  # noqa: N803
    *batch, n, _ = a.shape
    empty = Tensor.zeros((0,), a.dtype)
    if a.numel() == 0:
        return Tensor.zeros((*batch, n), a.dtype), (a if compute_v else empty)
    s = _flat(_wide(_symmetric(a, UPLO.upper() == "L")))
    b = s.shape[0]
    s, _, v = _jacobi(s, None, _eye(n, s.dtype).reshape(1, n, n).expand(b, n, n).contiguous())
    idx = Tensor.arange(n).reshape(1, n)
    w = _pick(s, idx, idx).reshape(b, n)
    perm = _order(w, descending=False)
    vals = _take(w, perm).reshape(*batch, n).cast(a.dtype)
    if not compute_v:
        return vals, empty
    return vals, _take_cols(v, perm).reshape(*batch, n, n).cast(a.dtype)


# ---------------------------------------------------------------- SVD

def _svd_tall(x: Tensor, full: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(U, S, V) of a contiguous (B, m, n) batch with m >= n: U (B, m, m or n), S (B, n) descending, V (B, n, n).
    One-sided Jacobi gives W = A V with orthogonal columns, S = their norms; U is W / S completed to an
    orthonormal basis by a Householder QR of it (columns with S negligible are zeroed first, so a
    rank-deficient A still gets an orthogonal U: the reflectors of a zero column are whatever QR makes)."""
    b, m, n = x.shape
    v0 = _eye(n, x.dtype).reshape(1, n, n).expand(b, n, n).contiguous()
    _, w, v = _jacobi((_mT(x) @ x).contiguous(), x, v0)
    sv = (w * w).sum(1).sqrt()  # (B, n)
    perm = _order(sv, descending=True)
    sv, w, v = _take(sv, perm), _take_cols(w, perm), _take_cols(v, perm)
    eps = float(np.finfo(np.float64 if x.dtype == dtypes.float64 else np.float32).eps)
    good = sv.reshape(b, 1, n) > sv.max(1, keepdim=True).reshape(b, 1, 1) * (eps * max(m, n))
    u0 = good.where(w / good.where(sv.reshape(b, 1, n), 1.0), 0.0).contiguous()
    h, tau = _geqr2(u0)
    q = _apply(h, tau, _eye(m, x.dtype).shrink([(0, m), (0, m if full else n)]).reshape(1, m, -1)
               .expand(b, m, m if full else n).contiguous(), True, False)
    # Q's column j is +-u0's column j for the well-defined ones: take R's diagonal signs back out
    idx = Tensor.arange(n).reshape(1, n)
    sgn = (_pick(h, idx, idx).reshape(b, n) < 0).where(-1.0, 1.0).cast(x.dtype)
    cols = q.shape[2]
    return q * sgn.pad([(0, 0), (0, cols - n)], 1.0).reshape(b, 1, cols), sv, v


@lowers("_linalg_svd.default")
def linalg_svd(a: Tensor, full_matrices: bool = False, compute_uv: bool = True, *, driver: str | None = None) \
        -> tuple[Tensor, Tensor, Tensor]:
    *batch, m, n = a.shape
    k = min(m, n)
    empty = Tensor.zeros((0,), a.dtype)
    ucols, vrows = (m, n) if full_matrices else (k, k)
    if a.numel() == 0:
        sv = Tensor.zeros((*batch, k), a.dtype)
        if not compute_uv:
            return empty, sv, empty
        u = _eye(m, a.dtype).shrink([(0, m), (0, ucols)]).reshape(*[1] * len(batch), m, ucols)
        vh = _eye(n, a.dtype).shrink([(0, vrows), (0, n)]).reshape(*[1] * len(batch), vrows, n)
        return u.expand(*batch, m, ucols).contiguous(), sv, vh.expand(*batch, vrows, n).contiguous()
    wide = m < n
    x = _flat(_wide(_mT(a) if wide else a))  # SVD of A^T = V S U^T for a wide A
    u, sv, v = _svd_tall(x, full_matrices)
    sv = sv.reshape(*batch, k).cast(a.dtype)
    if not compute_uv:
        return empty, sv, empty
    if wide:
        u, v = v, u  # A = (V) S (U^T)^T... from A^T = U S V^T: A = V S U^T
    u = u.reshape(*batch, m, u.shape[-1]).cast(a.dtype)
    vh = _mT(v).reshape(*batch, v.shape[-1], n).cast(a.dtype)
    return u, sv, vh
