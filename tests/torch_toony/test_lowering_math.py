"""Lowering-table entries checked directly against the CPU with the fallback off: the C math library ops,
atan2, signbit, roll, remainder with a scalar self, addbmm, equal, and torch's broadcast error for in-place ops.
(The OpInfo sample and sweep cover them too; these run fast and name the op that broke.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

DEV = "toony"
LIBM = ["asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "lgamma", "expm1", "log1p"]


@pytest.fixture(autouse=True)
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TOONY_FALLBACK", "0")
    yield


def _inputs(name: str, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, generator=g) * 1.8 - 0.9  # inside asin/acos/atanh's domain
    if name == "acosh":
        x = x.abs() + 1
    if name in ("lgamma", "sinh", "cosh"):
        x = x * 5
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1e-3, -1e-6])])
    return x.to(dtype) if dtype.is_floating_point else (x * 3).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32])
@pytest.mark.parametrize("name", LIBM)
def test_libm_unary(name: str, dtype: torch.dtype) -> None:
    x = _inputs(name, dtype)
    torch.testing.assert_close(getattr(torch, name)(x.to(DEV)).cpu(), getattr(torch, name)(x), equal_nan=True)


def test_expm1_and_log1p_are_exact_near_zero() -> None:
    x = torch.tensor([1e-10, -3e-9, 2e-7])
    torch.testing.assert_close(torch.expm1(x.to(DEV)).cpu(), torch.expm1(x), rtol=1.3e-6, atol=0)
    torch.testing.assert_close(torch.log1p(x.to(DEV)).cpu(), torch.log1p(x), rtol=1.3e-6, atol=0)


def test_atan2_broadcasts_and_promotes() -> None:
    y, x = torch.randn(3, 4), torch.randint(-3, 4, (4,))
    torch.testing.assert_close(torch.atan2(y.to(DEV), x.to(DEV)).cpu(), torch.atan2(y, x))


def test_signbit() -> None:
    for x in (torch.tensor([-0.0, 0.0, -1.5, 2.0, float("-inf"), float("nan")]), torch.tensor([-3, 0, 4])):
        assert torch.equal(torch.signbit(x.to(DEV)).cpu(), torch.signbit(x))


@pytest.mark.parametrize(("shifts", "dims"), [(2, 0), ((1, -2), (0, 1)), (7, None), (-3, 1), (0, 0)])
def test_roll(shifts: int | tuple, dims: int | tuple | None) -> None:
    x = torch.arange(15).reshape(3, 5)
    want = torch.roll(x, shifts) if dims is None else torch.roll(x, shifts, dims)
    got = torch.roll(x.to(DEV), shifts) if dims is None else torch.roll(x.to(DEV), shifts, dims)
    assert torch.equal(got.cpu(), want)


def test_remainder_with_a_scalar_self() -> None:
    b = torch.tensor([3, -4, 5, 7])
    assert torch.equal(torch.remainder(-7, b.to(DEV)).cpu(), torch.remainder(-7, b))


def test_addbmm() -> None:
    m, b1, b2 = torch.randn(3, 2), torch.randn(4, 3, 5), torch.randn(4, 5, 2)
    got = torch.addbmm(m.to(DEV), b1.to(DEV), b2.to(DEV), beta=0.5, alpha=2)
    torch.testing.assert_close(got.cpu(), torch.addbmm(m, b1, b2, beta=0.5, alpha=2))


def test_equal() -> None:
    x = torch.randn(3, 4).to(DEV)
    assert torch.equal(x, x.clone())
    assert not torch.equal(x, x + 1)
    assert not torch.equal(x, x[:2])
    assert not torch.equal(torch.full((2,), float("nan"), device=DEV), torch.full((2,), float("nan"), device=DEV))


@pytest.mark.parametrize("op", ["ge_", "fmod_", "add_", "lerp_"])
def test_inplace_result_must_fit_self(op: str) -> None:
    for device in ("cpu", DEV):
        x, y = torch.zeros(3, 1, device=device), torch.ones(3, 4, device=device)
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
            getattr(x, op)(*((y, 0.5) if op == "lerp_" else (y,)))
        assert torch.equal(x.cpu(), torch.zeros(3, 1))
