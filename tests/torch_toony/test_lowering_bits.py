"""nextafter and frexp on the toony device, bit for bit against the CPU (special values, subnormals, every
float dtype, non-contiguous inputs, out=)."""

import pytest
import torch

import torch_toony  # noqa: F401 - registers the device

DEV = "toony"
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _values(dt: torch.dtype) -> torch.Tensor:
    fi = torch.finfo(dt)
    return torch.tensor([0.0, -0.0, 1.0, -1.0, 3.5, -7.25, fi.tiny, fi.tiny / 4, -fi.tiny / 8, fi.max, -fi.max,
                         float("inf"), -float("inf"), float("nan"), 1e-3, fi.eps], dtype=dt)


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0, equal_nan=True)
    if a.is_floating_point():  # signed zeros too
        assert torch.equal(torch.signbit(a.cpu()), torch.signbit(b))


@pytest.mark.parametrize("dt", FLOATS)
def test_frexp(dt: torch.dtype) -> None:
    x = _values(dt)
    x = torch.cat([x, torch.randn(64).to(dt) * 1e3])
    for got, want in zip(torch.frexp(x.to(DEV)), torch.frexp(x)):
        same(got, want)
    xt = x.reshape(8, 10).t()  # non-contiguous
    for got, want in zip(torch.frexp(xt.to(DEV)), torch.frexp(xt)):
        same(got, want)
    m, e = torch.empty(0, dtype=dt, device=DEV), torch.empty(0, dtype=torch.int32, device=DEV)
    torch.frexp(x.to(DEV), out=(m, e))
    for got, want in zip((m, e), torch.frexp(x)):
        same(got, want)


@pytest.mark.parametrize("dt", FLOATS)
def test_nextafter(dt: torch.dtype) -> None:
    x = _values(dt)
    toward = [torch.full_like(x, v) for v in (0.0, 1.0, -1.0, float("inf"), -float("inf"), float("nan"))]
    for y in [*toward, x, x.flip(0)]:
        same(torch.nextafter(x.to(DEV), y.to(DEV)), torch.nextafter(x, y))
    a, b = torch.randn(3, 1).to(dt), torch.randn(1, 4).to(dt)  # broadcasting
    same(torch.nextafter(a.to(DEV), b.to(DEV)), torch.nextafter(a, b))
    d = a.to(DEV)
    d.nextafter_(torch.zeros(3, 1, dtype=dt, device=DEV))
    same(d, a.clone().nextafter_(torch.zeros(3, 1, dtype=dt)))


@pytest.mark.parametrize("dt", [torch.float32, torch.float16, torch.int8, torch.uint8, torch.int64, torch.bool])
def test_hash_tensor(dt: torch.dtype) -> None:
    x = (torch.randn(6, 7) * 50).to(dt)
    assert torch.equal(torch.hash_tensor(x.to(DEV)).cpu(), torch.hash_tensor(x))
    for dim, keepdim in ((1, False), ((0, 1), True), (0, True)):
        assert torch.equal(torch.hash_tensor(x.t().to(DEV), dim=dim, keepdim=keepdim).cpu(),
                           torch.hash_tensor(x.t(), dim=dim, keepdim=keepdim))


def test_hash_tensor_of_a_large_tensor_split_into_partial_reductions() -> None:
    x = torch.randn(3 << 20)
    assert torch.equal(torch.hash_tensor(x.to(DEV)).cpu(), torch.hash_tensor(x))
