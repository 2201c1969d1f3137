"""Householder QR, Jacobi eigh and SVD on the toony device against CPU torch (LAPACK)."""

from __future__ import annotations

import pytest
import torch

import torch_toony  # noqa: F401
from tests.torch_toony.opinfo_driver import fallback_disabled

DEV = "toony"
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}
SHAPES = [(4, 4), (3, 5, 3), (2, 3, 5), (1, 1), (0, 3, 3), (2, 0, 3), (6, 6)]


@pytest.fixture(autouse=True)
def _no_fallback():
    with fallback_disabled():
        yield


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(actual.cpu(), expected, **TOL[dtype])


def _eye_close(q: torch.Tensor, dtype: torch.dtype) -> None:
    q = q.cpu()
    eye = torch.eye(q.shape[-1], dtype=dtype).expand(*q.shape[:-2], q.shape[-1], q.shape[-1])
    _close(q.mT @ q, eye, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_geqrf_and_qr_match_lapack(shape, dtype):
    a = torch.randn(shape, dtype=dtype)
    h, tau = torch.geqrf(a.to(DEV))
    eh, etau = torch.geqrf(a)
    _close(h, eh, dtype)
    _close(tau, etau, dtype)
    for mode in ("reduced", "complete", "r"):
        q, r = torch.linalg.qr(a.to(DEV), mode=mode)
        eq, er = torch.linalg.qr(a, mode=mode)
        _close(q, eq, dtype)  # Householder signs as LAPACK: Q and R are unique and compared directly
        _close(r, er, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("transpose", [True, False])
def test_ormqr_and_householder_product(dtype, left, transpose):
    h, tau = torch.geqrf(torch.randn(2, 5, 3, dtype=dtype))
    c = torch.randn((2, 5, 4) if left else (2, 4, 5), dtype=dtype)
    _close(torch.ormqr(h.to(DEV), tau.to(DEV), c.to(DEV), left, transpose), torch.ormqr(h, tau, c, left, transpose),
           dtype)
    _close(torch.linalg.householder_product(h.to(DEV), tau.to(DEV)), torch.linalg.householder_product(h, tau), dtype)


def test_qr_rank_deficient_and_noncontiguous():
    a = torch.randn(6, 4, dtype=torch.float64)
    a[:, 2] = a[:, 0] * 2  # a zero column below the diagonal after step 1: tau 0 path
    a[:, 3] = 0
    q, r = torch.linalg.qr(a.to(DEV))
    eq, er = torch.linalg.qr(a)
    _close(q @ r, a, torch.float64)
    _close(r.diagonal().abs()[:2], er.diagonal().abs()[:2], torch.float64)
    b = torch.randn(5, 7, dtype=torch.float64).mT  # non-contiguous
    q, r = torch.linalg.qr(b.to(DEV))
    eq, er = torch.linalg.qr(b)
    _close(q, eq, torch.float64)
    _close(r, er, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 4), (3, 5, 5), (1, 1), (0, 3, 3), (2, 7, 7)])
@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh(shape, dtype, uplo):
    a = torch.randn(shape, dtype=dtype)
    w, v = torch.linalg.eigh(a.to(DEV), UPLO=uplo)
    ew, ev = torch.linalg.eigh(a, UPLO=uplo)
    _close(w, ew, dtype)
    _close(v.abs(), ev.abs(), dtype)  # distinct eigenvalues: vectors unique up to sign
    sym = torch.linalg.eigh(a, UPLO=uplo)  # reconstruction from the triangle that was read
    recon = (v.cpu() * w.cpu().unsqueeze(-2)) @ v.cpu().mT
    _close(recon, (sym[1] * sym[0].unsqueeze(-2)) @ sym[1].mT, dtype)
    _close(torch.linalg.eigvalsh(a.to(DEV), UPLO=uplo), ew, dtype)


def test_eigh_repeated_eigenvalues():
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([1.0, 1.0, 2.0, -3.0, 0.0], dtype=torch.float64)) @ q.mT
    w, v = torch.linalg.eigh(a.to(DEV))
    _close(w, torch.linalg.eigvalsh(a), torch.float64)
    _eye_close(v, torch.float64)
    _close((v.cpu() * w.cpu()) @ v.cpu().mT, a, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("full", [True, False])
def test_svd(shape, dtype, full):
    a = torch.randn(shape, dtype=dtype)
    u, s, vh = torch.linalg.svd(a.to(DEV), full_matrices=full)
    eu, es, evh = torch.linalg.svd(a, full_matrices=full)
    assert u.shape == eu.shape and s.shape == es.shape and vh.shape == evh.shape
    _close(s, es, dtype)
    k = s.shape[-1]
    _close(u[..., :k].abs(), eu[..., :k].abs(), dtype)
    _close(vh[..., :k, :].abs(), evh[..., :k, :].abs(), dtype)
    _close(u[..., :k] * s.unsqueeze(-2) @ vh[..., :k, :], a, dtype)
    _eye_close(u, dtype)
    _eye_close(vh.mT, dtype)
    _close(torch.linalg.svdvals(a.to(DEV)), es, dtype)


def test_svd_rank_deficient_and_noncontiguous():
    a = torch.randn(7, 3, dtype=torch.float64) @ torch.randn(3, 5, dtype=torch.float64)  # rank 3
    for x in (a, a.mT, torch.randn(6, 10, dtype=torch.float64)[:, ::2]):
        u, s, vh = torch.linalg.svd(x.to(DEV))
        _close(s, torch.linalg.svdvals(x), torch.float64)
        _eye_close(u, torch.float64)
        _eye_close(vh.mT, torch.float64)
        k = s.shape[-1]
        _close(u.cpu()[:, :k] * s.cpu() @ vh.cpu()[:k], x, torch.float64)


def test_svd_ill_conditioned_small_singular_values():
    q1, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    sv = torch.tensor([1.0, 1e-3, 1e-6, 1e-9, 1e-12, 1e-14], dtype=torch.float64)
    a = q1 * sv @ q2.mT
    s = torch.linalg.svdvals(a.to(DEV)).cpu()
    torch.testing.assert_close(s[:4], sv[:4], rtol=1e-6, atol=1e-15)  # one-sided Jacobi: relative accuracy


def test_built_on_svd_and_eigh():
    a = torch.randn(3, 4, 4, dtype=torch.float64)
    for fn in (torch.linalg.pinv, torch.linalg.matrix_rank, torch.linalg.cond,
               lambda x: torch.linalg.matrix_norm(x, ord="nuc"), lambda x: torch.linalg.matrix_norm(x, ord=2),
               lambda x: torch.linalg.pinv(x + x.mT, hermitian=True)):
        torch.testing.assert_close(fn(a.to(DEV)).cpu(), fn(a))


def test_svd_grad_float32():
    a = torch.randn(4, 3)
    ad = a.to(DEV).requires_grad_()
    ac = a.clone().requires_grad_()
    for x in (ad, ac):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        ((u @ vh).sum() + s.square().sum()).backward()
    torch.testing.assert_close(ad.grad.cpu(), ac.grad, atol=1e-4, rtol=1e-4)


def test_non_finite_input_raises_like_cpu():
    a = torch.randn(4, 4, dtype=torch.float64)
    a[2, 1] = float("nan")
    with pytest.raises(torch.linalg.LinAlgError, match="non-finite"):
        torch.linalg.svd(a)
    with pytest.raises(torch.linalg.LinAlgError, match="non-finite"):
        torch.linalg.svd(a.to(DEV))
    with pytest.raises(torch.linalg.LinAlgError, match="failed to converge"):
        torch.linalg.eigh(a)
    with pytest.raises(torch.linalg.LinAlgError, match="failed to converge"):
        torch.linalg.eigh(a.to(DEV))
