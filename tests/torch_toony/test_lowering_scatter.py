"""scatter_reduce, scatter(..., reduce=) and index_reduce on the toony device, against CPU torch.

Every test runs with the CPU fallback off (TOONY_FALLBACK=0), so an op that is not native fails loudly.
Indices repeat on purpose (few distinct targets, many sources each). Values are small integers where a test
wants the combined result exact whatever order the device's atomics land in; random floats otherwise, with
assert_close's default tolerances.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import torch_toony  # noqa: F401 - registers the device

DEV = "toony"
REDUCES = ["sum", "prod", "mean", "amax", "amin"]
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
INTS = [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64]

pytestmark = [pytest.mark.filterwarnings("ignore:index_reduce.. is in beta"),
              pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")]


@pytest.fixture(autouse=True)
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOONY_FALLBACK", "0")


def dev(x: Any) -> Any:
    return x.to(DEV) if isinstance(x, torch.Tensor) else x


def small(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Small integer values (nonzero for floats, so products keep their sign information): exact sums and
    products in every dtype, whatever the order."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    lo = 0 if dtype == torch.uint8 else -3
    v = torch.randint(lo, 4, shape, generator=g)
    if dtype.is_floating_point:
        v = torch.where(v == 0, 2, v)
    return v.to(dtype)


def crowded_index(shape: tuple[int, ...], dim: int, size: int, seed: int) -> torch.Tensor:
    """Indices into a dim of `size`, most of them landing on the first two positions (many duplicates)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, size, shape, generator=g)
    return torch.where(torch.rand(shape, generator=g) < 0.6, idx % 2, idx)


def supported(reduce: str, dtype: torch.dtype) -> bool:
    return not (dtype == torch.bool and reduce == "mean")  # torch has no bool mean


# ---------------------------------------------------------------- scatter_reduce


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("dtype", FLOATS + INTS + [torch.bool], ids=str)
def test_scatter_reduce_matches_cpu_exactly(dtype: torch.dtype, reduce: str, include_self: bool) -> None:
    if not supported(reduce, dtype):
        pytest.skip("torch has no mean for bool")
    x = small((5, 6), dtype, 1)
    for dim, idx_shape in ((0, (7, 4)), (1, (5, 9)), (-1, (3, 2))):
        idx = crowded_index(idx_shape, dim, x.shape[dim], 2)
        src = small((8, 9), dtype, 3)  # larger than index: only index's shape of it is read
        want = x.scatter_reduce(dim, idx, src, reduce, include_self=include_self)
        got = dev(x).scatter_reduce(dim, dev(idx), dev(src), reduce, include_self=include_self)
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_scatter_reduce_random_floats(dtype: torch.dtype, reduce: str, include_self: bool) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, generator=g).to(dtype)
    idx = crowded_index((9, 5), 0, 6, 5)
    src = torch.randn(9, 5, generator=g).to(dtype)
    want = x.scatter_reduce(0, idx, src, reduce, include_self=include_self)
    got = dev(x).scatter_reduce(0, dev(idx), dev(src), reduce, include_self=include_self)
    torch.testing.assert_close(got.cpu(), want)


@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_scatter_reduce_max_min_propagate_nan(reduce: str) -> None:
    x = torch.tensor([1.0, float("nan"), 2.0, 0.0])
    idx = torch.tensor([0, 0, 1, 2, 2])
    src = torch.tensor([float("nan"), 3.0, 5.0, -1.0, 7.0])
    for include_self in (True, False):
        want = x.scatter_reduce(0, idx, src, reduce, include_self=include_self)
        got = dev(x).scatter_reduce(0, dev(idx), dev(src), reduce, include_self=include_self)
        torch.testing.assert_close(got.cpu(), want, equal_nan=True)


def test_scatter_reduce_integer_mean_floors_and_products_wrap() -> None:
    x = torch.tensor([7, -7, 100, 5], dtype=torch.int8)
    idx = torch.tensor([0, 1, 1, 2, 2, 2])
    src = torch.tensor([-2, 2, -3, 100, 100, 3], dtype=torch.int8)
    for reduce in ("mean", "prod", "sum"):
        for include_self in (True, False):
            want = x.scatter_reduce(0, idx, src, reduce, include_self=include_self)
            got = dev(x).scatter_reduce(0, dev(idx), dev(src), reduce, include_self=include_self)
            assert torch.equal(got.cpu(), want), (reduce, include_self)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_16_bit_floats_round_where_the_cpu_does(dtype: torch.dtype) -> None:
    # the CPU's scatter kernels combine 16-bit floats in float32 and round once: 3000 * 0.1 is about 300, where
    # a sum rounded after every step stalls far below it; its index_reduce rounds after every step instead.
    # Equal terms make the results independent of the order the device combines them in.
    idx = torch.zeros(3000, dtype=torch.long)
    tenths = torch.full((3000,), 0.1, dtype=dtype)
    z = torch.zeros(2, dtype=dtype)
    for reduce in ("sum", "mean"):
        want = z.scatter_reduce(0, idx, tenths, reduce, include_self=False)
        got = dev(z).scatter_reduce(0, dev(idx), dev(tenths), reduce, include_self=False)
        assert torch.equal(got.cpu(), want), reduce
    x = torch.full((1, 2), -3.0, dtype=dtype)
    fives = torch.full((1, 5), 2.5, dtype=dtype)  # -3 * 2.5**5 rounds differently once and step by step
    i5 = torch.zeros(1, 5, dtype=torch.long)
    want = x.scatter_reduce(1, i5, fives, "prod")
    assert torch.equal(dev(x).scatter_reduce(1, dev(i5), dev(fives), "prod").cpu(), want)
    want = x.scatter(1, i5, 2.5, reduce="multiply")
    assert torch.equal(dev(x).scatter(1, dev(i5), 2.5, reduce="multiply").cpu(), want)
    want = x[0].index_reduce(0, i5[0], fives[0], "prod")
    assert torch.equal(dev(x[0]).index_reduce(0, dev(i5[0]), dev(fives[0]), "prod").cpu(), want)


def test_scatter_reduce_many_duplicates_at_size() -> None:
    # 200k sources into 300 targets: exact for integer max/min/sum, whatever the order
    g = torch.Generator().manual_seed(6)
    idx = torch.randint(0, 300, (200_000,), generator=g)
    src = torch.randint(-1000, 1000, (200_000,), generator=g)
    x = torch.zeros(300, dtype=torch.int64)
    for reduce in ("sum", "amax", "amin"):
        want = x.scatter_reduce(0, idx, src, reduce, include_self=False)
        got = dev(x).scatter_reduce(0, dev(idx), dev(src), reduce, include_self=False)
        assert torch.equal(got.cpu(), want), reduce


def test_scatter_reduce_zero_dim_and_empty() -> None:
    for reduce in REDUCES:
        for include_self in (True, False):
            x, src, idx = torch.tensor(2.0), torch.tensor(-3.0), torch.tensor(0)
            want = x.scatter_reduce(0, idx, src, reduce, include_self=include_self)
            got = dev(x).scatter_reduce(0, dev(idx), dev(src), reduce, include_self=include_self)
            torch.testing.assert_close(got.cpu(), want)
            x2 = torch.randn(3, 4)
            empty_idx = torch.zeros(0, 4, dtype=torch.long)
            want = x2.scatter_reduce(0, empty_idx, torch.randn(0, 4), reduce, include_self=include_self)
            got = dev(x2).scatter_reduce(0, dev(empty_idx), dev(torch.randn(0, 4)), reduce, include_self=include_self)
            torch.testing.assert_close(got.cpu(), want)
            e = torch.zeros(0, 3)
            got = dev(e).scatter_reduce(1, dev(torch.zeros(0, 2, dtype=torch.long)), dev(torch.zeros(0, 2)), reduce)
            assert got.shape == (0, 3)


def test_scatter_reduce_non_contiguous_operands() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 8, generator=g).t()  # (8, 6), transposed
    idx = crowded_index((12, 10), 0, 8, 8)[::2, ::2]  # (6, 5), strided
    src = torch.randn(5, 12, generator=g).t()[1:]  # (11, 5), transposed and offset
    for reduce in REDUCES:
        want = x.scatter_reduce(0, idx, src, reduce, include_self=False)
        got = dev(x).scatter_reduce(0, dev(idx), dev(src), reduce, include_self=False)
        torch.testing.assert_close(got.cpu(), want)


def test_scatter_reduce_in_place_on_a_view_and_out() -> None:
    g = torch.Generator().manual_seed(9)
    base = torch.randn(4, 6, generator=g)
    idx = crowded_index((3, 2), 1, 2, 10)
    src = torch.randn(3, 2, generator=g)
    for reduce in REDUCES:
        want_base = base.clone()
        want_base[1:, 2:4].scatter_reduce_(1, idx, src, reduce, include_self=False)
        got_base = dev(base)
        got_base[1:, 2:4].scatter_reduce_(1, dev(idx), dev(src), reduce, include_self=False)
        torch.testing.assert_close(got_base.cpu(), want_base)

        want = torch.empty(4, 6)
        torch.scatter_reduce(base, 0, idx, src, reduce, out=want)
        out = torch.full((4, 6), 123.0, device=DEV)
        res = torch.scatter_reduce(dev(base), 0, dev(idx), dev(src), reduce, out=out)
        assert res is out
        torch.testing.assert_close(out.cpu(), want)


def test_two_scatters_of_one_tensor_stay_apart() -> None:
    # both results are pending lazy values over the same input when the sum realizes them together
    x, idx = torch.zeros(5), torch.tensor([0, 1, 1])
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])
    want = x.scatter_reduce(0, idx, a, "sum") + x.scatter_reduce(0, idx, b, "amax") + x.scatter_add(0, idx, a)
    dx, di = dev(x), dev(idx)
    got = (dx.scatter_reduce(0, di, dev(a), "sum") + dx.scatter_reduce(0, di, dev(b), "amax")
           + dx.scatter_add(0, di, dev(a)))
    torch.testing.assert_close(got.cpu(), want)


@pytest.mark.parametrize("reduce", REDUCES)
def test_scatter_reduce_gradients(reduce: str) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 4, generator=g)
    src = torch.randn(6, 4, generator=g)
    idx = crowded_index((6, 4), 0, 5, 12)
    cot = torch.randn(5, 4, generator=g)
    grads = []
    for device in ("cpu", DEV):
        xi, si = x.to(device).requires_grad_(), src.to(device).requires_grad_()
        out = xi.scatter_reduce(0, idx.to(device), si, reduce, include_self=True)
        grads.append([t.cpu() for t in torch.autograd.grad(out, [xi, si], cot.to(device))])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- scatter(..., reduce=)


@pytest.mark.parametrize("reduce", ["add", "multiply"])
@pytest.mark.parametrize("dtype", FLOATS + INTS + [torch.bool], ids=str)
def test_scatter_with_reduce(dtype: torch.dtype, reduce: str) -> None:
    if dtype == torch.bool and reduce == "multiply":
        pytest.skip("CPU torch's scatter multiply has no bool kernel")
    x = small((4, 5), dtype, 13)
    idx = crowded_index((6, 5), 0, 4, 14)
    src = small((6, 5), dtype, 15)
    want = x.scatter(0, idx, src, reduce=reduce)
    got = dev(x).scatter(0, dev(idx), dev(src), reduce=reduce)
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)
    value = True if dtype == torch.bool else 2.5 if dtype.is_floating_point else 3
    want = x.scatter(1, idx[:, :4].t(), value, reduce=reduce)
    got = dev(x).scatter(1, dev(idx[:, :4].t()), value, reduce=reduce)
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)


def test_scatter_with_reduce_zero_dim_in_place_and_out() -> None:
    x, idx, src = torch.tensor(3.0), torch.tensor(0), torch.tensor(-2.0)
    for reduce in ("add", "multiply"):
        torch.testing.assert_close(dev(x).scatter(0, dev(idx), dev(src), reduce=reduce).cpu(),
                                   x.scatter(0, idx, src, reduce=reduce))
        torch.testing.assert_close(dev(x).scatter(0, dev(idx), 2.5, reduce=reduce).cpu(),
                                   x.scatter(0, idx, 2.5, reduce=reduce))
    base = torch.arange(12.0).reshape(3, 4)
    idx2, src2 = torch.tensor([[0, 0], [1, 0]]), torch.tensor([[2.0, 3.0], [4.0, 5.0]])
    want = base.clone()
    want[:, 1:3].scatter_(0, idx2, src2, reduce="multiply")
    got = dev(base)
    got[:, 1:3].scatter_(0, dev(idx2), dev(src2), reduce="multiply")
    torch.testing.assert_close(got.cpu(), want)
    out = torch.empty(3, 4, device=DEV)
    torch.scatter(dev(base), 1, dev(idx2), dev(src2), reduce="add", out=out)
    torch.testing.assert_close(out.cpu(), torch.scatter(base, 1, idx2, src2, reduce="add"))


# ---------------------------------------------------------------- index_reduce

INDEX_REDUCES = ["prod", "mean", "amax", "amin"]


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", INDEX_REDUCES)
@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=str)
def test_index_reduce_matches_cpu_exactly(dtype: torch.dtype, reduce: str, include_self: bool) -> None:
    x = small((4, 5, 3), dtype, 16)
    for dim in (0, 1, 2, -1):
        n = x.shape[dim]
        index = crowded_index((7,), 0, n, 17)
        src_shape = list(x.shape)
        src_shape[dim] = 7
        src = small(tuple(src_shape), dtype, 18)
        for index_dtype in (torch.int64, torch.int32):
            want = x.index_reduce(dim, index.to(index_dtype), src, reduce, include_self=include_self)
            got = dev(x).index_reduce(dim, dev(index.to(index_dtype)), dev(src), reduce, include_self=include_self)
            torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)


@pytest.mark.parametrize("reduce", INDEX_REDUCES)
def test_index_reduce_zero_dim_non_contiguous_in_place_and_out(reduce: str) -> None:
    for include_self in (True, False):
        x, src, index = torch.tensor(1.5), torch.tensor(-2.0), torch.tensor([0])
        torch.testing.assert_close(
            dev(x).index_reduce(0, dev(index), dev(src), reduce, include_self=include_self).cpu(),
            x.index_reduce(0, index, src, reduce, include_self=include_self))
    g = torch.Generator().manual_seed(19)
    base = torch.randn(5, 6, generator=g)
    index = torch.tensor([2, 0, 2, 2])
    src = torch.randn(8, 5, generator=g).t()[:, ::2]  # (5, 4), non-contiguous
    want = base.clone()
    want[:, 1:].index_reduce_(1, index, src, reduce, include_self=False)
    got = dev(base)
    got[:, 1:].index_reduce_(1, dev(index), dev(src), reduce, include_self=False)
    torch.testing.assert_close(got.cpu(), want)
    out = torch.empty(0, device=DEV)
    torch.index_reduce(dev(base), 1, dev(index), dev(src), reduce, out=out)  # resized from empty
    torch.testing.assert_close(out.cpu(), torch.index_reduce(base, 1, index, src, reduce))


@pytest.mark.parametrize("reduce", INDEX_REDUCES)
def test_index_reduce_gradients(reduce: str) -> None:
    g = torch.Generator().manual_seed(20)
    x = torch.randn(4, 3, generator=g)
    src = torch.randn(6, 3, generator=g)
    index = torch.tensor([0, 3, 0, 1, 3, 3])
    cot = torch.randn(4, 3, generator=g)
    grads = []
    for device in ("cpu", DEV):
        xi, si = x.to(device).requires_grad_(), src.to(device).requires_grad_()
        out = xi.index_reduce(0, index.to(device), si, reduce, include_self=True)
        grads.append([t.cpu() for t in torch.autograd.grad(out, [xi, si], cot.to(device))])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want)
