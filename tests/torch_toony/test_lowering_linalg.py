"""LU, Cholesky and triangular solves (torch_toony/lowering_linalg.py) on the toony device, against CPU torch
(LAPACK) with the fallback off: a pass means no CPU fallback ran."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import torch_toony  # noqa: F401 - registers the device

DEV = "toony"
FLOATS = [torch.float32, torch.float64]


pytestmark = pytest.mark.usefixtures("no_fallback")  # (conftest.py): native kernels only


def _dev(x: Any) -> Any:
    return x.to(DEV) if isinstance(x, torch.Tensor) else x


def close(fn: Callable[..., Any], *args: Any, exact: tuple[int, ...] = ()) -> None:
    """fn on the CPU and on toony copies of the arguments: same structure, shapes and dtypes; outputs whose
    positions are in `exact` (pivots, info, signs) equal exactly, the others within assert_close's defaults."""
    want = fn(*args)
    got = fn(*[_dev(a) for a in args])
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.device.type == DEV
        g = g.cpu()
        assert g.dtype == w.dtype and g.shape == w.shape, (i, g, w)
        torch.testing.assert_close(g, w, equal_nan=True, **({"rtol": 0, "atol": 0} if i in exact else {}))


def well_conditioned(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    return (torch.randn(*shape, generator=g, dtype=torch.float64) + n * torch.eye(n, dtype=torch.float64)).to(dtype)


def positive_definite(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    a = well_conditioned(*shape, dtype=torch.float64, seed=seed)
    return (a @ a.mT).to(dtype)


def random(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------- LU

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(4, 4), (3, 5, 5), (2, 2, 6, 4), (2, 4, 6), (1, 1)])
def test_lu_factor_matches_lapack(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    close(torch.linalg.lu_factor_ex, random(*shape, dtype=dtype), exact=(1, 2))
    close(torch.linalg.lu, random(*shape, dtype=dtype))


def test_lu_pivot_is_the_first_row_of_largest_magnitude() -> None:
    # |1| ties in the first column: no swap; then the larger remainder (7 against -2) wins row 1
    ties = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 5.0, 1.0], [1.0, 0.0, 4.0]])
    # -3 and 3 tie: the first of them (row 1) is the pivot
    swap = torch.tensor([[1.0, 2.0, 0.0], [-3.0, 1.0, 1.0], [3.0, 4.0, 2.0]])
    for a in (ties, swap, torch.stack([ties, swap])):
        close(torch.linalg.lu_factor_ex, a, exact=(1, 2))
        close(torch.linalg.lu, a)


@pytest.mark.parametrize("dtype", FLOATS)
def test_singular_matrices_report_the_first_zero_pivot(dtype: torch.dtype) -> None:
    # rows in power-of-two ratios: the elimination is exact, so the zero pivot is exactly zero on every LAPACK
    rank1 = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [4.0, 8.0, 12.0]], dtype=dtype)  # info 2
    zero_col = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 1.0], [0.0, 5.0, 7.0]], dtype=dtype)  # info 1
    a = torch.stack([rank1, zero_col, torch.eye(3, dtype=dtype), torch.zeros(3, 3, dtype=dtype)])
    close(torch.linalg.lu_factor_ex, a, exact=(1, 2))
    close(torch.linalg.det, a)
    close(torch.linalg.slogdet, a, exact=(0, 1))
    _, info = torch.linalg.inv_ex(a.to(DEV))
    torch.testing.assert_close(info.cpu(), torch.linalg.inv_ex(a)[1], rtol=0, atol=0)
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.inv(rank1.to(DEV))
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.solve(rank1.to(DEV), torch.ones(3, dtype=dtype, device=DEV))


@pytest.mark.parametrize("dtype", FLOATS)
def test_lu_unpack_and_lu_solve(dtype: torch.dtype) -> None:
    lu, piv = torch.linalg.lu_factor(well_conditioned(3, 5, 5, dtype=dtype))
    close(torch.lu_unpack, lu, piv)
    close(lambda x, p: torch.lu_unpack(x, p, unpack_data=False)[0], lu, piv)
    close(lambda x, p: torch.lu_unpack(x, p, unpack_pivots=False)[1:], lu, piv)
    b = random(3, 5, 2, dtype=dtype, seed=1)
    for left in (True, False):
        for adjoint in (False, True):
            rhs = b if left else b.mT
            close(lambda x, p, y, lf=left, ad=adjoint: torch.linalg.lu_solve(x, p, y, left=lf, adjoint=ad),
                  lu, piv, rhs)
    close(lambda x, p, y: torch.linalg.lu_solve(x, p, y), lu[0], piv[0], b)  # broadcast the factorization


@pytest.mark.parametrize("dtype", FLOATS)
def test_solve_inv_det(dtype: torch.dtype) -> None:
    a = well_conditioned(2, 3, 4, 4, dtype=dtype)
    b = random(2, 3, 4, 3, dtype=dtype, seed=1)
    close(torch.linalg.solve, a, b)
    close(lambda x, y: torch.linalg.solve(x, y, left=False), a, b.mT)
    close(torch.linalg.solve, a, random(2, 3, 4, dtype=dtype, seed=2))  # a batch of vectors
    close(torch.linalg.solve, a, random(4, dtype=dtype, seed=3))  # one vector, broadcast
    close(torch.linalg.solve_ex, a, b, exact=(1,))
    close(torch.linalg.inv, a)
    close(torch.linalg.inv_ex, a, exact=(1,))
    close(torch.linalg.det, a)
    close(torch.logdet, positive_definite(3, 3, dtype=dtype))
    close(torch.linalg.slogdet, a, exact=(0,))


def test_non_contiguous_inputs() -> None:
    a = well_conditioned(3, 10, 10)[:, ::2, ::2]  # strided
    t = well_conditioned(3, 5, 5).mT  # transposed (det factors A here, not A^T)
    b = random(3, 5, 4, seed=1)[..., ::2]
    for m in (a, t):
        close(torch.linalg.lu_factor_ex, m, exact=(1, 2))
        close(torch.linalg.solve, m, b)
        close(torch.linalg.inv, m)
        close(torch.linalg.det, m)
        close(torch.linalg.slogdet, m, exact=(0,))
        close(lambda x, y: torch.linalg.solve_triangular(x, y, upper=True), m, b)
    s = positive_definite(3, 5, 5).mT
    close(torch.linalg.cholesky_ex, s, exact=(1,))
    close(torch.cholesky_solve, b, torch.linalg.cholesky(s))


@pytest.mark.parametrize("shape", [(0, 3, 3), (2, 0, 0), (0, 0)])
def test_empty(shape: tuple[int, ...]) -> None:
    a = torch.zeros(shape, dtype=torch.float64)
    close(torch.linalg.lu_factor_ex, a, exact=(1, 2))
    close(torch.linalg.lu, a)
    close(torch.linalg.inv_ex, a, exact=(1,))
    close(torch.linalg.det, a)
    close(torch.linalg.slogdet, a)
    close(torch.linalg.cholesky_ex, a, exact=(1,))
    close(torch.linalg.solve, a, torch.zeros(*shape[:-1], 2, dtype=torch.float64))
    close(lambda x: torch.linalg.solve_triangular(x, x, upper=False), a)


# ---------------------------------------------------------------- Cholesky

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("upper", [False, True])
def test_cholesky(dtype: torch.dtype, upper: bool) -> None:
    a = positive_definite(2, 3, 5, 5, dtype=dtype)
    close(lambda x: torch.linalg.cholesky_ex(x, upper=upper), a, exact=(1,))
    close(lambda x: torch.cholesky(x, upper=upper), a)
    factor = torch.linalg.cholesky(a, upper=upper)
    close(lambda f: torch.cholesky_inverse(f, upper=upper), factor)
    b = random(2, 3, 5, 2, dtype=dtype, seed=1)
    close(lambda y, f: torch.cholesky_solve(y, f, upper=upper), b, factor)


@pytest.mark.parametrize("dtype", FLOATS)
def test_cholesky_info_is_the_order_of_the_first_failing_minor(dtype: torch.dtype) -> None:
    not_pd = torch.tensor([[4.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)  # minor 2 is singular
    negative = -torch.eye(3, dtype=dtype)  # minor 1
    a = torch.stack([positive_definite(3, 3, dtype=dtype), not_pd, negative])
    _, info = torch.linalg.cholesky_ex(a.to(DEV))
    torch.testing.assert_close(info.cpu(), torch.linalg.cholesky_ex(a)[1], rtol=0, atol=0)
    with pytest.raises(torch.linalg.LinAlgError, match="order 2"):
        torch.linalg.cholesky(not_pd.to(DEV))
    with pytest.raises(torch.linalg.LinAlgError):
        torch.cholesky(negative.to(DEV))


# ---------------------------------------------------------------- triangular solves

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("unit", [False, True])
def test_solve_triangular(dtype: torch.dtype, upper: bool, left: bool, unit: bool) -> None:
    a = well_conditioned(2, 4, 4, dtype=dtype)
    b = random(2, 4, 3, dtype=dtype, seed=1)
    close(lambda x, y: torch.linalg.solve_triangular(x, y, upper=upper, left=left, unitriangular=unit),
          a, b if left else b.mT)
    close(lambda x, y: torch.linalg.solve_triangular(x, y, upper=upper, left=left, unitriangular=unit),
          a[0], b if left else b.mT)  # the matrix broadcast over the batch


@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_triangular_solve(upper: bool, transpose: bool) -> None:
    a = well_conditioned(3, 4, 4)
    b = random(3, 4, 2, seed=1)
    close(lambda y, x: torch.triangular_solve(y, x, upper=upper, transpose=transpose), b, a)
    close(lambda y, x: torch.triangular_solve(y, x, upper=upper, unitriangular=True), b, a[0])


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("transposed", [False, True])
def test_gradients_follow_torchs_choice_of_factoring_a_or_its_transpose(transposed: bool) -> None:
    # torch's det and slogdet factor A^T when A is contiguous and their backward formulas test A again:
    # the returned LU must follow the same rule, or the gradients are those of A^T
    base = well_conditioned(2, 4, 4, seed=5)
    b = random(2, 4, 3, seed=6)

    def grads(dev: str) -> list[torch.Tensor]:
        a = base.to(dev).requires_grad_()
        m = a.mT if transposed else a
        y = b.to(dev).requires_grad_()
        loss = (torch.linalg.solve(m, y) * torch.arange(12.0, dtype=torch.float64, device=dev).reshape(4, 3)).sum()
        loss = loss + torch.linalg.det(m).sum() + torch.linalg.slogdet(m)[1].sum() + torch.linalg.inv(m)[..., 0].sum()
        return [g.cpu() for g in torch.autograd.grad(loss, (a, y))]

    for g, w in zip(grads(DEV), grads("cpu")):
        torch.testing.assert_close(g, w)
