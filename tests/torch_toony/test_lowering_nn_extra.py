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
    """fn(*args, **kwargs) on the CPU and on toony: same values, and same gradients for the floating positional
    tensors (tensor keyword arguments are moved to the device too, without gradients)."""
    def leaves(device: str) -> list[Any]:
        return [a.detach().to(device).requires_grad_(grad and a.is_floating_point())
                if isinstance(a, torch.Tensor) else a for a in args]

    cpu_args, dev_args = leaves("cpu"), leaves(DEV)
    dev_kwargs = {k: v.to(DEV) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    want, got = fn(*cpu_args, **kwargs), fn(*dev_args, **dev_kwargs)
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


# ---------------------------------------------------------------- margin losses

REDUCTIONS = ["none", "mean", "sum"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multi_margin_loss(reduction: str, p: int, weighted: bool, dtype: torch.dtype) -> None:
    weight = rand(5, dtype=dtype, seed=3).abs() if weighted else None
    check(F.multi_margin_loss, rand(4, 5, dtype=dtype), torch.tensor([0, 4, 2, 2]), p=p, margin=0.7,
          weight=weight, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_loss_noncontiguous_and_empty(reduction: str) -> None:
    check(F.multi_margin_loss, rand(5, 4).t(), torch.tensor([0, 4, 2, 1]), reduction=reduction)
    if reduction != "mean":  # the CPU's mean over no samples is uninitialized memory (toony: nan)
        check(F.multi_margin_loss, rand(0, 4), torch.zeros(0, dtype=torch.long), reduction=reduction)


TARGETS = torch.tensor([[0, 1, -1, 0, 0], [3, -1, 0, 0, 1], [1, 2, 3, 0, 4], [-1, 2, 3, 0, 1]])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multilabel_margin_loss(reduction: str, dtype: torch.dtype) -> None:
    check(F.multilabel_margin_loss, rand(4, 5, dtype=dtype), TARGETS, reduction=reduction)
    check(F.multilabel_margin_loss, rand(5, 4, dtype=dtype).t(), TARGETS, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_losses_one_sample(reduction: str) -> None:
    check(F.multi_margin_loss, rand(5), torch.tensor(3), reduction=reduction)
    # the default reduction is dropped from the call: the meta kernel must not read the weight as reduction
    check(F.multi_margin_loss, rand(5), torch.tensor(3), weight=rand(5, seed=3).abs())
    check(F.multilabel_margin_loss, rand(5), TARGETS[2], reduction=reduction)


# ---------------------------------------------------------------- rrelu

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rrelu_eval(dtype: torch.dtype) -> None:
    check(F.rrelu, rand(4, 5, dtype=dtype), 0.1, 0.3, training=False)
    check(F.rrelu, rand(5, 4, dtype=dtype).t(), training=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rrelu_training(dtype: torch.dtype) -> None:
    """Random slopes in [lower, upper) for the negative elements only, and a gradient of exactly those slopes."""
    x = rand(40, 50, dtype=dtype)
    xt = x.to(DEV).requires_grad_()
    out = F.rrelu(xt, 0.1, 0.3, training=True)
    (g,) = torch.autograd.grad(out, xt, torch.ones_like(out))
    slope = (out.detach().cpu() / x)
    neg = x < 0
    assert (slope[~neg] == 1).all()
    assert ((slope[neg] >= 0.1) & (slope[neg] < 0.3)).all()
    assert slope[neg].std() > 0.03  # drawn per element, not one slope
    torch.testing.assert_close(g.cpu(), slope)
    y = x.to(DEV)
    noise = torch.empty_like(y)
    torch.ops.aten.rrelu_with_noise(y, noise, 0.1, 0.3, True)
    assert ((noise.cpu() == 1) == ~neg).all()


# ---------------------------------------------------------------- embedding_bag

BAG_INDICES = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9, 0, 0])
BAG_OFFSETS = [(torch.tensor([0, 2, 2, 7]), False), (torch.tensor([0, 2, 2, 7, 10]), True), (torch.tensor([0]), False),
               (torch.tensor([0, 10]), True)]


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("offsets", range(len(BAG_OFFSETS)))
@pytest.mark.parametrize("padding_idx", [None, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_embedding_bag(mode: str, offsets: int, padding_idx: int | None, dtype: torch.dtype) -> None:
    off, last = BAG_OFFSETS[offsets]
    check(F.embedding_bag, BAG_INDICES, rand(10, 3, dtype=dtype), off, mode=mode, include_last_offset=last,
          padding_idx=padding_idx)


@pytest.mark.parametrize("padding_idx", [None, 4])
def test_embedding_bag_per_sample_weights(padding_idx: int | None) -> None:
    # positional (max_norm, norm_type, scale_grad_by_freq, mode, sparse, per_sample_weights, include_last_offset,
    # padding_idx), so that check also compares the gradient of the per-sample weights
    check(F.embedding_bag, BAG_INDICES, rand(10, 3), BAG_OFFSETS[0][0], None, 2.0, False, "sum", False,
          rand(10, seed=4), False, padding_idx)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_2d_noncontiguous_int32(mode: str) -> None:
    check(F.embedding_bag, torch.tensor([[1, 2, 4], [5, 4, 3]], dtype=torch.int32), rand(3, 10).t(), mode=mode)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_empty(mode: str) -> None:
    check(F.embedding_bag, torch.zeros(0, dtype=torch.long), rand(10, 3), torch.tensor([0, 0]), mode=mode)


def test_embedding_bag_max_ties() -> None:
    """Equal maxima from different rows: the gradient goes to the first in the bag, as on the CPU."""
    w = torch.tensor([[1.0, 2.0], [1.0, 3.0], [0.0, 3.0]], dtype=torch.float64)
    check(F.embedding_bag, torch.tensor([1, 0, 2]), w, torch.tensor([0]), mode="max")


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_scale_grad_by_freq(mode: str) -> None:
    """Each row's gradient over the number of times its index occurs, as embedding does. (The CPU's own
    embedding_bag divides the k-th distinct index by the count of the k-th sorted index instead.)"""
    w = rand(10, 3)
    offsets = BAG_OFFSETS[0][0]
    wt = w.to(DEV).requires_grad_()
    out = F.embedding_bag(BAG_INDICES.to(DEV), wt, offsets.to(DEV), mode=mode, scale_grad_by_freq=True)
    (got,) = torch.autograd.grad(out, wt, torch.ones_like(out))
    wc = w.clone().requires_grad_()
    bag = torch.tensor([0, 0, 2, 2, 2, 2, 2, 3, 3, 3])
    rows = F.embedding(BAG_INDICES, wc, scale_grad_by_freq=True)
    if mode == "mean":
        rows = rows / torch.bincount(bag, minlength=4).clamp(min=1)[bag].unsqueeze(1)
    ref = torch.zeros(4, 3, dtype=w.dtype).index_add(0, bag, rows)
    (want,) = torch.autograd.grad(ref, wc, torch.ones_like(ref))
    torch.testing.assert_close(got.cpu(), want)


# ---------------------------------------------------------------- grid_sample

GRID_MODES = [(2, "bilinear"), (2, "nearest"), (2, "bicubic"), (3, "bilinear"), (3, "nearest")]


@pytest.mark.parametrize("dims_mode", GRID_MODES)
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_sample(dims_mode: tuple[int, str], padding_mode: str, align_corners: bool, dtype: torch.dtype) -> None:
    d, mode = dims_mode
    x = rand(2, 3, *(4, 5, 3)[:d], dtype=dtype)
    # points well outside [-1, 1] too, so that padding (and reflection's repeated bounces) matters
    grid = torch.rand(2, *(3, 4, 2)[:d], d, dtype=dtype, generator=torch.Generator().manual_seed(5)) * 5 - 2.5
    check(F.grid_sample, x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def test_grid_sample_noncontiguous_and_empty() -> None:
    grid = torch.rand(2, 2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    check(F.grid_sample, rand(2, 3, 6, 5).transpose(2, 3), grid.permute(0, 2, 1, 3)[..., :2], align_corners=False)
    check(F.grid_sample, rand(0, 3, 4, 5), torch.zeros(0, 3, 3, 2, dtype=torch.float64), align_corners=False)
    check(F.grid_sample, rand(2, 3, 4, 5), torch.zeros(2, 0, 3, 2, dtype=torch.float64), align_corners=False)


def test_grid_sample_pixel_values() -> None:
    """Integer-valued pixels with large steps and grid points a fraction of an ulp from pixel centers: the
    sample position must be rounded as the CPU rounds it, or the result moves by a step times that ulp."""
    x = (torch.arange(2 * 3 * 34 * 45, dtype=torch.float32) * 37 % 256).reshape(2, 3, 34, 45)
    grid = torch.rand(2, 34, 45, 2, generator=torch.Generator().manual_seed(6)) * 2 - 1
    for mode in ["bilinear", "bicubic"]:
        for padding_mode in ["zeros", "border", "reflection"]:
            check(F.grid_sample, x, grid, mode=mode, padding_mode=padding_mode, align_corners=False, grad=False)
