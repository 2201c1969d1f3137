"""LDL^T with Bunch-Kaufman pivoting (torch_toony/lowering_linalg_ldl.py) against CPU torch (LAPACK sytrf and
sytrs), fallback off: LD, pivots and info equal LAPACK's, 2x2 pivot blocks included."""

from __future__ import annotations

import pytest
import torch

import torch_toony  # noqa: F401 - registers the device

DEV = "toony"
FLOATS = [torch.float32, torch.float64]


pytestmark = pytest.mark.usefixtures("no_fallback")  # (conftest.py): native kernels only


def symmetric(*shape: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    a = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (a + a.mT).to(dtype)


def check_factor(a: torch.Tensor) -> None:
    want = torch.linalg.ldl_factor_ex(a)
    got = torch.linalg.ldl_factor_ex(a.to(DEV))
    for g, w in zip(got, want):
        assert g.device.type == DEV
        torch.testing.assert_close(g.cpu(), w, equal_nan=True)


def check_solve(a: torch.Tensor, b: torch.Tensor) -> None:
    ld, piv = torch.linalg.ldl_factor(a)
    want = torch.linalg.ldl_solve(ld, piv, b)
    got = torch.linalg.ldl_solve(ld.to(DEV), piv.to(DEV), b.to(DEV))
    torch.testing.assert_close(got.cpu(), want)


CASES = [(5, 5), (3, 4, 4), (2, 6, 6), (2, 1, 7, 7), (1, 1), (0, 3, 3), (0, 0)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", CASES)
def test_factor_indefinite(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """Random symmetric indefinite matrices take 1x1 swaps and 2x2 blocks (seed 0's (2, 6, 6) has both)."""
    check_factor(symmetric(*shape, dtype=dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_factor_special(dtype: torch.dtype) -> None:
    check_factor(torch.tensor([[0.0, 1, 2], [1, 0, 3], [2, 3, 1]], dtype=dtype))  # zero diagonal: a 2x2 block
    spd = symmetric(5, 5, dtype=torch.float64)
    check_factor((spd @ spd.mT).to(dtype))
    z = torch.zeros(4, 4, dtype=dtype)
    z[2, 2] = 1
    check_factor(z)  # zero columns: info is the first one, as sytrf
    m = symmetric(6, 6, dtype=dtype)
    m[1:3] = 0
    m[:, 1:3] = 0
    check_factor(m)


def test_factor_reads_lower_triangle_and_non_contiguous() -> None:
    a = symmetric(5, 5, dtype=torch.float64)
    a.triu_(1).add_(torch.randn(5, 5, dtype=torch.float64).triu(1) * 0 + 7)  # garbage above the diagonal
    check_factor(a)
    check_factor(symmetric(2, 8, 8, dtype=torch.float64)[:, ::2, ::2])
    check_factor(symmetric(5, 5, dtype=torch.float64).mT)


def test_factor_check_errors() -> None:
    """A zero column: the same error as CPU torch (whose sytrf code is not mapped to a LinAlgError)."""
    z = torch.zeros(3, 3, dtype=torch.float64)
    for fn in (lambda a: torch.linalg.ldl_factor_ex(a, check_errors=True), torch.linalg.ldl_factor):
        with pytest.raises(RuntimeError) as cpu:
            fn(z)
        with pytest.raises(type(cpu.value), match="Unknown error code: 1"):
            fn(z.to(DEV))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(5, 5), (3, 4, 4), (2, 6, 6), (1, 1), (0, 3, 3)])
def test_solve(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    a = symmetric(*shape, dtype=torch.float64)
    a = (a + 3 * torch.eye(shape[-1], dtype=torch.float64) * (torch.arange(shape[-1]) % 2 * 2 - 1)).to(dtype)
    b = torch.randn(*shape[:-1], 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    check_solve(a, b)


def test_solve_broadcast_and_out() -> None:
    a = symmetric(2, 5, 5, dtype=torch.float64)
    ld, piv = torch.linalg.ldl_factor(a)
    # batch broadcasting: CPU torch 2.x segfaults on it, so the reference expands the factors itself
    b3 = torch.randn(3, 2, 5, 2, dtype=torch.float64)
    want = torch.linalg.ldl_solve(ld.expand(3, 2, 5, 5).contiguous(), piv.expand(3, 2, 5).contiguous(), b3)
    torch.testing.assert_close(torch.linalg.ldl_solve(ld.to(DEV), piv.to(DEV), b3.to(DEV)).cpu(), want)
    b = torch.randn(2, 5, 2, dtype=torch.float64)
    out = torch.empty(0, dtype=torch.float64, device=DEV)
    torch.linalg.ldl_solve(ld.to(DEV), piv.to(DEV), b.to(DEV), out=out)
    torch.testing.assert_close(out.cpu(), torch.linalg.ldl_solve(ld, piv, b))
