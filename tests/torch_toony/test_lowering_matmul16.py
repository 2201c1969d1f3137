"""16-bit matmuls (mm, bmm, addmm, baddbmm) against the CPU, bit for bit: the CPU sums the products in float32
and rounds once at the end (addmm's beta * bias + alpha * product included)."""

from __future__ import annotations

import pytest
import torch

import torch_toony  # noqa: F401

HALF = [torch.float16, torch.bfloat16]


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.to("toony")


@pytest.mark.parametrize("dt", HALF)
def test_mm_bmm_round_once(dt: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 40, generator=g).to(dt), torch.randn(40, 6, generator=g).to(dt)
    assert torch.equal((_t(a) @ _t(b)).cpu(), a @ b)
    ab, bb = torch.randn(3, 4, 33, generator=g).to(dt), torch.randn(3, 33, 2, generator=g).to(dt)
    assert torch.equal(torch.bmm(_t(ab), _t(bb)).cpu(), torch.bmm(ab, bb))


@pytest.mark.parametrize("dt", HALF)
def test_addmm_baddbmm_round_once(dt: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 40, generator=g).to(dt), torch.randn(40, 6, generator=g).to(dt)
    m = torch.randn(6, generator=g).to(dt)  # broadcast bias
    for alpha, beta in [(1, 1), (0.7, 1.3), (2, 0)]:
        want = torch.addmm(m, a, b, alpha=alpha, beta=beta)
        assert torch.equal(torch.addmm(_t(m), _t(a), _t(b), alpha=alpha, beta=beta).cpu(), want)
    # a short inner dim: float32 sums of 16-bit products are then exact whatever order the kernel adds them in
    ab, bb = torch.randn(2, 5, 4, generator=g).to(dt), torch.randn(2, 4, 6, generator=g).to(dt)
    mb = torch.randn(2, 5, 6, generator=g).to(dt)
    want = torch.baddbmm(mb, ab, bb, alpha=0.5, beta=-1.5)
    assert torch.equal(torch.baddbmm(_t(mb), _t(ab), _t(bb), alpha=0.5, beta=-1.5).cpu(), want)


@pytest.mark.parametrize("dt", HALF)
def test_mv_dot_round_once(dt: torch.dtype) -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(5, 40, generator=g).to(dt)
    v, w = torch.randn(40, generator=g).to(dt), torch.randn(40, generator=g).to(dt)
    assert torch.equal(torch.mv(_t(a), _t(v)).cpu(), torch.mv(a, v))
    assert torch.equal(torch.dot(_t(v), _t(w)).cpu(), torch.dot(v, w))
    assert torch.equal((_t(a) @ _t(v)).cpu(), a @ v)  # matmul's matrix-vector path
