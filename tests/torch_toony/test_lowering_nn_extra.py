"""cdist, pdist, embedding_bag, margin losses and rrelu on the toony device, against CPU torch.

Every test runs with the CPU fallback off (TOONY_FALLBACK=0), so an op that is not native fails loudly. Each
case compares the forward result and the gradients of every floating input (for a random upstream gradient)
with assert_close's default tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import torch_toony  # noqa: F401 - registers the device

DEV = "toony"


@pytest.fixture(autouse=True)
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOONY_FALLBACK", "0")


def rand(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def check(fn: Callable[..., torch.Tensor], *args: Any, grad: bool = True, **kwargs: Any) -> None:
    """fn(*args, **kwargs) on the CPU and on toony: same values, and same gradients for the floating tensors."""
    def leaves(device: str) -> list[Any]:
        return [a.detach().to(device).requires_grad_(grad and a.is_floating_point())
                if isinstance(a, torch.Tensor) else a for a in args]

    cpu_args, dev_args = leaves("cpu"), leaves(DEV)
    want, got = fn(*cpu_args, **kwargs), fn(*dev_args, **kwargs)
    torch.testing.assert_close(got.cpu(), want)
    inputs = [i for i, a in enumerate(cpu_args) if isinstance(a, torch.Tensor) and a.requires_grad]
    if not grad or not inputs or not want.requires_grad:
        return
    up = torch.randn(want.shape, dtype=want.dtype, generator=torch.Generator().manual_seed(1))
    want_g = torch.autograd.grad(want, [cpu_args[i] for i in inputs], up, allow_unused=True)
    got_g = torch.autograd.grad(got, [dev_args[i] for i in inputs], up.to(DEV), allow_unused=True)
    for w, g in zip(want_g, got_g):
        if w is None:
            assert g is None or not g.cpu().any()
        else:
            torch.testing.assert_close(g.cpu(), w)


# ---------------------------------------------------------------- cdist, pdist

PS = [0.0, 1.0, 2.0, 3.0, 0.5, 1.5, math.inf]


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("shapes", [((5, 3), (4, 3)), ((2, 5, 3), (1, 4, 3)), ((1, 3, 2), (2, 2, 4, 2)),
                                    ((30, 3), (4, 3)), ((0, 3), (4, 3)), ((2, 0, 3), (2, 4, 3)), ((3, 0), (2, 0))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cdist(p: float, shapes: tuple, dtype: torch.dtype) -> None:
    check(torch.cdist, rand(*shapes[0], dtype=dtype), rand(*shapes[1], dtype=dtype, seed=2), p=p)


@pytest.mark.parametrize("mode", ["use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist"])
def test_cdist_compute_mode(mode: str) -> None:
    check(torch.cdist, rand(2, 6, 4), rand(2, 7, 4, seed=2), p=2.0, compute_mode=mode)


def test_cdist_noncontiguous() -> None:
    check(torch.cdist, rand(4, 6).t(), rand(4, 5, seed=2).t(), p=1.5)


def test_cdist_equal_rows() -> None:
    """Zero distances: the gradient there is 0 (no 0/0) for every p."""
    x = rand(4, 3)
    for p in PS:
        check(torch.cdist, x, x.clone(), p=p)


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("shape", [(5, 3), (1, 3), (0, 3), (4, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pdist(p: float, shape: tuple, dtype: torch.dtype) -> None:
    if shape[0] == 0:
        # CPU torch's own _pdist_backward crashes (segfault) on zero rows: the gradient must just be empty
        check(F.pdist, rand(*shape, dtype=dtype), p=p, grad=False)
        x = rand(*shape, dtype=dtype).to(DEV).requires_grad_()
        (g,) = torch.autograd.grad(F.pdist(x, p=p), x, torch.zeros(0, dtype=dtype, device=DEV))
        assert g.shape == x.shape
        return
    check(F.pdist, rand(*shape, dtype=dtype), p=p)


def test_pdist_noncontiguous() -> None:
    check(F.pdist, rand(3, 6).t(), p=2.0)
