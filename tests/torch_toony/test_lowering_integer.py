"""gcd and lcm on the toony device against the CPU, bit for bit (C's wrapping at each type's minimum included)."""

import pytest
import torch

import torch_toony  # noqa: F401 - registers the device

DEV = "toony"
INTS = [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64]


@pytest.mark.parametrize("dt", INTS)
def test_gcd_lcm(dt: torch.dtype) -> None:
    info = torch.iinfo(dt)
    g = torch.Generator().manual_seed(0)
    a = torch.randint(info.min, info.max, (4000,), dtype=dt, generator=g)
    b = torch.randint(info.min, info.max, (4000,), dtype=dt, generator=g)
    small = torch.randint(max(info.min, -50), 50, (4000,), dtype=dt, generator=g)  # common factors
    edges = torch.tensor([0, 0, info.min, info.min, info.max, 1], dtype=dt)
    a = torch.cat([a, small * 6, edges])
    b = torch.cat([b, small.flip(0) * 4, edges.flip(0)])
    for op in (torch.gcd, torch.lcm):
        assert torch.equal(op(a.to(DEV), b.to(DEV)).cpu(), op(a, b))
    x, y = a[:40].reshape(8, 5), b[:40].reshape(5, 8).t()  # non-contiguous
    assert torch.equal(torch.gcd(x.to(DEV), y.to(DEV)).cpu(), torch.gcd(x, y))
    d = x.to(DEV)
    d.lcm_(y.to(DEV))
    assert torch.equal(d.cpu(), x.clone().lcm_(y))
