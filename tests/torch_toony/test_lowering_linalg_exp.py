"""linalg.matrix_exp (torch_toony/lowering_linalg_exp.py) on the toony device against CPU torch, fallback off."""

from __future__ import annotations

import pytest
import torch

import torch_toony  # noqa: F401 - registers the device

DEV = "toony"
FLOATS = [torch.float32, torch.float64]


pytestmark = pytest.mark.usefixtures("no_fallback")  # (conftest.py): native kernels only


def random(*shape: int, dtype: torch.dtype, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def check(a: torch.Tensor, exact_reference: bool = False) -> None:
    """exact_reference: compare with the float64 answer rounded to a's dtype rather than CPU torch in a's dtype
    (for float32 with a large norm, CPU's float32 result is itself off by ~5e-6 relative; toony sums in
    float64 and is 40x closer to the true value)."""
    want = torch.linalg.matrix_exp(a.double()).to(a.dtype) if exact_reference else torch.linalg.matrix_exp(a)
    got = torch.linalg.matrix_exp(a.to(DEV))
    assert got.device.type == DEV
    torch.testing.assert_close(got.cpu(), want)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(5, 5), (3, 4, 4), (2, 1, 3, 3), (1, 1), (0, 3, 3), (2, 0, 0)])
def test_shapes(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    check(random(*shape, dtype=dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("scale", [1e-30, 1e-3, 20.0])
def test_norms(scale: float, dtype: torch.dtype) -> None:
    """Tiny norms need no squaring; large ones many, and matrices of one batch need different counts."""
    a = random(3, 4, 4, dtype=dtype, scale=scale)
    a[1] *= 0.01
    check(a, exact_reference=scale > 1)


def test_non_contiguous_and_special() -> None:
    check(random(4, 4, dtype=torch.float64).mT)
    check(random(3, 6, 6, dtype=torch.float64)[:, ::2, ::2])
    check(torch.zeros(3, 3, dtype=torch.float64))
    check(torch.diag(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)))
    check(torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64) * 3)  # a rotation


def test_nan_propagates() -> None:
    a = random(3, 3, dtype=torch.float64)
    a[0, 1] = float("nan")
    assert torch.linalg.matrix_exp(a.to(DEV)).cpu().isnan().any()


def test_legacy_name_and_grad() -> None:
    a = random(2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(torch.matrix_exp(a.to(DEV)).cpu(), torch.matrix_exp(a))
    a_cpu = a.clone().requires_grad_()
    a_dev = a.to(DEV).requires_grad_()
    torch.matrix_exp(a_cpu).sin().sum().backward()
    torch.matrix_exp(a_dev).sin().sum().backward()
    torch.testing.assert_close(a_dev.grad.cpu(), a_cpu.grad)
