"""Order statistics, searches, flat-index ops and unique (torch_toony/lowering_select.py) on the toony device,
against CPU torch with the fallback off: a pass means no CPU fallback ran."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import torch_toony  # noqa: F401 - registers the device

DEV = "toony"
NAN = float("nan")


@pytest.fixture(autouse=True)
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TOONY_FALLBACK", "0")
    yield


def _dev(x: Any) -> Any:
    return x.to(DEV) if isinstance(x, torch.Tensor) else x


def both(fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    """fn on the CPU arguments and on their toony copies; the toony results brought back."""
    want = fn(*args)
    got = fn(*[_dev(a) for a in args])
    unpack = (lambda r: tuple(r)) if isinstance(want, tuple) else (lambda r: (r,))
    return tuple(g.cpu() for g in unpack(got)), unpack(want)


def same(fn: Callable[..., Any], *args: Any) -> None:
    """Results equal exactly (NaN equal to NaN), with the same shapes and dtypes."""
    got, want = both(fn, *args)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g, w)
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)


def _ints(shape: tuple[int, ...], dtype: torch.dtype, lo: int = -3, hi: int = 4, seed: int = 0) -> torch.Tensor:
    """Small integers (many ties) in dtype."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(lo, hi, shape, generator=g)
    if dtype == torch.bool:
        return x > 0
    if not dtype.is_floating_point and not dtype.is_signed:
        x = x - lo
    return x.to(dtype)


def _with_nans(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    x = _ints(shape, dtype)
    x.view(-1)[::5] = NAN
    return x


NUMERIC = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
           torch.int8, torch.uint8]

# ---------------------------------------------------------------- kthvalue, median, nanmedian, mode


@pytest.mark.parametrize("dtype", NUMERIC)
def test_median_picks_the_stable_middle_element(dtype: torch.dtype) -> None:
    # the CPU's median breaks ties by index: the result is the middle of a stable sort, indices included
    x = _ints((4, 9), dtype)
    for dim in (0, 1, -1):
        same(lambda t, d=dim: torch.median(t, d), x)
        same(lambda t, d=dim: torch.median(t, d, keepdim=True), x)
    same(torch.median, x)


def test_median_and_nanmedian_with_nans() -> None:
    x = _with_nans((5, 7))
    for dim in (0, 1):
        same(lambda t, d=dim: torch.median(t, d), x)
        same(lambda t, d=dim: torch.nanmedian(t, d), x)
    x[2] = NAN  # a row of NaNs only: the CPU's nth_element picks some NaN, which one depends on the length
    same(lambda t: torch.median(t, 1), x)
    _check_selection(lambda t: torch.nanmedian(t, 1), x, 1, False)
    same(torch.median, x)
    same(torch.nanmedian, x)
    same(torch.nanmedian, torch.full((3,), NAN))


def test_median_forms_and_shapes() -> None:
    x = _ints((3, 4, 5), torch.float32)
    same(lambda t: torch.median(t.transpose(0, 2)[:, ::2], 1), x)  # non-contiguous
    same(lambda t: torch.median(t, 0), torch.tensor(2.5))  # 0-d
    same(torch.median, torch.tensor(2.5))
    same(torch.median, torch.empty(0))
    same(torch.nanmedian, torch.empty(0))
    same(lambda t: torch.median(t, 1), torch.empty(0, 3))
    values, indices = torch.empty(0, device=DEV), torch.empty(0, dtype=torch.long, device=DEV)
    torch.median(x.to(DEV), 2, out=(values, indices))
    want = torch.median(x, 2)
    assert torch.equal(values.cpu(), want.values) and torch.equal(indices.cpu(), want.indices)
    out = torch.empty((), device=DEV)
    torch.ops.aten.nanmedian.out(x.to(DEV), out=out)
    assert torch.equal(out.cpu(), torch.nanmedian(x))


def _check_selection(fn: Callable[..., Any], x: torch.Tensor, dim: int, keepdim: bool) -> None:
    """Values equal the CPU's; indices point at elements holding those values (the CPU's choice among ties
    comes from an unstable selection, so the index itself may differ where values repeat)."""
    (v, i), (wv, _) = both(fn, x)
    torch.testing.assert_close(v, wv, rtol=0, atol=0, equal_nan=True)
    assert i.dtype == torch.long and i.shape == wv.shape
    if x.dim() == 0:
        assert int(i) == 0
        return
    picked = x.gather(dim, i if keepdim else i.unsqueeze(dim))
    torch.testing.assert_close(picked, v if keepdim else v.unsqueeze(dim), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_kthvalue(dtype: torch.dtype) -> None:
    x = _ints((5, 6), dtype)
    for k in (1, 3, 5):
        _check_selection(lambda t, k=k: torch.kthvalue(t, k, 0), x, 0, False)
    _check_selection(lambda t: torch.kthvalue(t, 6, 1, keepdim=True), x, 1, True)
    distinct = torch.randperm(30, generator=torch.Generator().manual_seed(1)).reshape(5, 6).to(dtype)
    same(lambda t: torch.kthvalue(t, 4, 1), distinct)  # no ties: indices equal too


def test_kthvalue_nan_is_largest_and_forms() -> None:
    x = _with_nans((4, 6))
    for k in (1, 4, 6):
        _check_selection(lambda t, k=k: torch.kthvalue(t, k, 1), x, 1, False)
    _check_selection(lambda t: torch.kthvalue(t, 2, 0), x.T, 0, False)  # non-contiguous (a transposed copy)
    same(lambda t: torch.kthvalue(t, 1), torch.tensor(3.0))
    with pytest.raises(RuntimeError):
        torch.kthvalue(x.to(DEV), 7, 1)
    values, indices = torch.empty(0, device=DEV), torch.empty(0, dtype=torch.long, device=DEV)
    torch.kthvalue(x.to(DEV), 2, 0, out=(values, indices))
    assert torch.equal(values.cpu(), torch.kthvalue(x, 2, 0).values)


@pytest.mark.parametrize("dtype", [*NUMERIC, torch.bool])
def test_mode(dtype: torch.dtype) -> None:
    # rows shorter than 16: the CPU's std::sort is an insertion sort there, stable, so its index (the last
    # occurrence of the mode) is deterministic and toony must match it exactly
    x = _ints((6, 11), dtype)
    same(lambda t: torch.mode(t, 1), x)
    same(lambda t: torch.mode(t, 0, keepdim=True), x)
    _check_selection(lambda t: torch.mode(t, 1), _ints((3, 40), dtype), 1, False)  # long rows: values only


def test_mode_forms() -> None:
    x = _ints((4, 5, 6), torch.float32)
    same(lambda t: torch.mode(t.transpose(0, 2), 1), x)
    same(lambda t: torch.mode(t, 0), torch.tensor(1.5))
    same(lambda t: torch.mode(t, 1), torch.empty(0, 4))
    same(lambda t: torch.mode(t, 0), torch.tensor([2.0, 1.0, 2.0, 1.0]))  # equal counts: the smallest value


# ---------------------------------------------------------------- searchsorted, bucketize


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                   torch.int32, torch.int8, torch.uint8])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 64, 1000])
def test_searchsorted_1d(dtype: torch.dtype, n: int) -> None:
    bd = torch.sort(_ints((n,), dtype, -20, 20, seed=n)).values
    v = _ints((3, 17), dtype, -22, 22, seed=2)
    for right in (False, True):
        same(lambda b, t, r=right: torch.searchsorted(b, t, right=r), bd, v)
    same(lambda b, t: torch.searchsorted(b, t, side="right", out_int32=True), bd, v)
    same(lambda b, t: torch.bucketize(t, b), bd, v)
    same(lambda b, t: torch.bucketize(t, b, right=True, out_int32=True), bd, v)


def test_searchsorted_rows_sorter_scalar_and_nan() -> None:
    g = torch.Generator().manual_seed(3)
    bd = torch.sort(torch.randn(2, 3, 9, generator=g)).values
    v = torch.randn(2, 3, 5, generator=g)
    same(lambda b, t: torch.searchsorted(b, t), bd, v)
    same(lambda b, t: torch.searchsorted(b.transpose(0, 1).contiguous().transpose(0, 1), t.flip(2)), bd, v)
    unsorted = torch.randn(2, 8, generator=g)
    order = unsorted.argsort(1)
    for right in (False, True):
        same(lambda b, t, s, r=right: torch.searchsorted(b, t, right=r, sorter=s), unsorted,
             torch.randn(2, 4, generator=g), order)
    one = torch.tensor([1.0, 2.0, 2.0, 4.0])
    for value in (2, 2.0, 0, 9.5):
        same(lambda b, s=value: torch.searchsorted(b, s), one)
        same(lambda b, s=value: torch.searchsorted(b, s, right=True), one)
        same(lambda b, s=value: torch.bucketize(s, b), one)
    # the CPU's binary search with NaN values and NaN boundaries (sorted last): replayed probe for probe
    withnan = torch.tensor([0.0, 1.0, 2.0, 3.0, NAN, NAN, NAN])
    vals = torch.tensor([NAN, -1.0, 0.5, 2.0, 3.0, 5.0])
    same(lambda b, t: torch.searchsorted(b, t), withnan, vals)
    same(lambda b, t: torch.searchsorted(b, t, right=True), withnan, vals)
    same(lambda b, t: torch.searchsorted(b, t), torch.tensor([1, 3, 5]), torch.tensor([2.5, 3.0]))  # promoted
    same(lambda b, t: torch.searchsorted(b, t), one, torch.empty(0))
    same(lambda b, t: torch.searchsorted(b, t), one, torch.tensor(3.0))
    out = torch.empty(0, dtype=torch.long, device=DEV)
    torch.searchsorted(one.to(DEV), vals.to(DEV), out=out)
    assert torch.equal(out.cpu(), torch.searchsorted(one, vals))


# ---------------------------------------------------------------- take, put, masked_scatter, nonzero_static


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64, torch.int8,
                                   torch.uint8, torch.bool])
def test_take_and_put(dtype: torch.dtype) -> None:
    x = _ints((4, 5), dtype)
    idx = torch.tensor([[0, -1, 7], [19, -20, 3]])
    same(torch.take, x, idx)
    same(torch.take, x.T, idx)  # flat order of a non-contiguous view
    same(torch.take, torch.tensor(5).to(dtype), torch.tensor([0, -1]))
    same(torch.take, x, torch.empty(0, dtype=torch.long))
    src = _ints((2, 3), dtype, seed=5)
    same(lambda t, i, s: t.clone().put_(i, s), x, idx, src)
    same(lambda t, i, s: t.put(i, s), x, idx, src)
    dup = torch.tensor([3, 3, -17, 0, 3, 5])  # 3 three times (-17 is 3 too): the last write wins
    dsrc = _ints((6,), dtype, seed=6)
    same(lambda t, i, s: t.clone().put_(i, s), x, dup, dsrc)
    same(lambda t, i, s: t.clone().put_(i, s, accumulate=True), x, dup, dsrc)
    same(lambda t, i, s: t.clone().put_(i, s, accumulate=True), x, torch.empty(0, dtype=torch.long),
         torch.empty(0, dtype=dtype))


def test_put_into_a_non_contiguous_view_and_0d() -> None:
    x = _ints((4, 6), torch.float32)
    same(lambda t, i, s: t.clone().T.put_(i, s), x, torch.tensor([1, 22, 5]), torch.tensor([7.0, 8.0, 9.0]))
    same(lambda t, i, s: t.clone().put_(i, s, accumulate=True), torch.tensor(2.0), torch.tensor([0, -1, 0]),
         torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64, torch.uint8, torch.bool])
def test_masked_scatter(dtype: torch.dtype) -> None:
    x = _ints((3, 5), dtype)
    mask = _ints((3, 5), torch.bool, seed=7)
    src = _ints((20,), dtype, seed=8)
    same(lambda t, m, s: t.masked_scatter(m, s), x, mask, src)
    same(lambda t, m, s: t.clone().masked_scatter_(m, s), x, mask, src)
    same(lambda t, m, s: t.masked_scatter(m, s), x, mask[1], src.reshape(4, 5))  # mask broadcast over rows
    same(lambda t, m, s: t.masked_scatter(m, s), x[0], mask, src)  # self broadcast (out of place)
    same(lambda t, m, s: t.clone().T.masked_scatter_(m, s), x, mask.T, src)  # non-contiguous self
    same(lambda t, m, s: t.masked_scatter(m, s), x, torch.zeros(3, 5, dtype=torch.bool), torch.empty(0, dtype=dtype))
    same(lambda t, m, s: t.masked_scatter(m, s), torch.tensor(1).to(dtype), torch.tensor(True), src)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.uint8, torch.float16])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 0, 3), (2, 3, 4)])
def test_nonzero_static(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = _ints(shape, dtype, -1, 2)
    for size in (0, 1, 4, 30):
        same(lambda t, s=size: torch.nonzero_static(t, size=s), x)
    same(lambda t: torch.nonzero_static(t, size=9, fill_value=7), x)


def test_nonzero_static_nan_non_contiguous_and_out() -> None:
    x = torch.tensor([[0.0, NAN, 1.0], [0.0, -0.0, 2.0]])
    same(lambda t: torch.nonzero_static(t, size=4), x)
    same(lambda t: torch.nonzero_static(t.T, size=4), x)
    out = torch.empty(0, dtype=torch.long, device=DEV)
    torch.nonzero_static(x.to(DEV), size=3, out=out)
    assert torch.equal(out.cpu(), torch.nonzero_static(x, size=3))


# ---------------------------------------------------------------- unique


@pytest.mark.parametrize("dtype", [*NUMERIC, torch.bool, torch.uint16, torch.uint32, torch.uint64])
def test_unique(dtype: torch.dtype) -> None:
    x = _ints((4, 7), dtype)
    for inverse in (False, True):
        for counts in (False, True):
            for srt in (False, True):
                same(lambda t, i=inverse, c=counts, s=srt: torch._unique2(t, s, i, c), x)
    same(lambda t: torch.unique(t.T, return_inverse=True, return_counts=True), x)


def test_unique_nan_empty_and_0d() -> None:
    x = torch.tensor([3.0, 1.0, NAN, 1.0, 2.0, NAN, 3.0, -0.0, 0.0])
    same(lambda t: torch.unique(t, return_inverse=True, return_counts=True), x)
    same(lambda t: torch.unique(t, return_inverse=True, return_counts=True), torch.empty(0, 3))
    same(lambda t: torch.unique(t, return_inverse=True, return_counts=True), torch.tensor(2.0))
    outs = tuple(torch.empty(0, dtype=dt, device=DEV) for dt in (torch.float32, torch.long, torch.long))
    torch.ops.aten._unique2.out(x.to(DEV), True, True, True, out0=outs[0], out1=outs[1], out2=outs[2])
    for got, want in zip(outs, torch._unique2(x, True, True, True)):
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.uint8, torch.bfloat16])
def test_unique_consecutive(dtype: torch.dtype) -> None:
    x = _ints((6, 5), dtype, -1, 2)
    x[1] = x[0]
    x[4] = x[3]
    for dim in (None, 0, 1, -1):
        for inverse in (False, True):
            for counts in (False, True):
                same(lambda t, d=dim, i=inverse, c=counts: torch.unique_consecutive(
                    t, return_inverse=i, return_counts=c, dim=d), x)
    same(lambda t: torch.unique_consecutive(t.T, return_inverse=True, return_counts=True, dim=1), x)
    same(lambda t: torch.unique_consecutive(t, return_inverse=True, return_counts=True), torch.empty(0, 3))
    same(lambda t: torch.unique_consecutive(t, return_inverse=True, return_counts=True, dim=0),
         torch.empty(0, 3))
    same(lambda t: torch.unique_consecutive(t, return_inverse=True), torch.tensor([NAN, NAN, 1.0, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.int8, torch.float16])
def test_unique_dim(dtype: torch.dtype) -> None:
    x = _ints((7, 3), dtype, -1, 2)
    x[5] = x[1]
    for dim in (0, 1, -2):
        for inverse in (False, True):
            for counts in (False, True):
                same(lambda t, d=dim, i=inverse, c=counts: torch.unique(
                    t, return_inverse=i, return_counts=c, dim=d), x)
    same(lambda t: torch.unique(t.T, return_inverse=True, return_counts=True, dim=1), x)
    y = _ints((3, 4, 2), dtype, -1, 2)
    same(lambda t: torch.unique(t, return_inverse=True, return_counts=True, dim=1), y)
    same(lambda t: torch.unique(t, return_inverse=True, return_counts=True, dim=0), torch.empty(0, 3))
    with pytest.raises(RuntimeError, match="0 sized dimensions"):
        torch.unique(torch.empty(3, 0, device=DEV), dim=0)


@pytest.mark.parametrize("dt", [torch.int32, torch.int64])
def test_repeat_interleave_counts(dt: torch.dtype) -> None:
    for reps in ([1, 0, 3, 2], [0, 0], [5], []):
        r = torch.tensor(reps, dtype=dt)
        got = torch.repeat_interleave(r.to("toony"))
        assert got.device.type == "toony" and torch.equal(got.cpu(), torch.repeat_interleave(r))
    r = torch.tensor([2, 1], dtype=dt)
    assert torch.equal(torch.repeat_interleave(r.to("toony"), output_size=3).cpu(), torch.tensor([0, 0, 1]).to(dt))
    x = torch.randn(4, 3)
    reps = torch.tensor([1, 2, 0, 3])
    torch.testing.assert_close(torch.repeat_interleave(x.to("toony"), reps.to("toony"), dim=0).cpu(),
                               torch.repeat_interleave(x, reps, dim=0))
    for bad in (torch.tensor([[1]]), torch.tensor([1, -1])):
        with pytest.raises(RuntimeError):
            torch.repeat_interleave(bad)
        with pytest.raises(RuntimeError):
            torch.repeat_interleave(bad.to("toony"))


def test_legacy_unique() -> None:
    x = torch.tensor([3, 1, 3, 2, 1])
    for got, want in zip(torch.ops.aten._unique(x.to("toony"), True, True), torch.ops.aten._unique(x, True, True)):
        assert torch.equal(got.cpu(), want)


def test_bincount() -> None:
    x = torch.tensor([1, 3, 3, 0, 7], dtype=torch.int32)
    w = torch.tensor([0.5, 1.0, 2.0, -1.0, 4.0])
    for kw in ({}, {"minlength": 10}, {"weights": w}, {"weights": w.to(torch.int64), "minlength": 2}):
        dev_kw = {k: (v.to("toony") if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        got, want = torch.bincount(x.to("toony"), **dev_kw), torch.bincount(x, **kw)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got.cpu(), want)
    assert torch.bincount(torch.tensor([], dtype=torch.int64).to("toony"), minlength=3).cpu().tolist() == [0, 0, 0]
    for bad in (torch.tensor([-1, 2]), torch.tensor([[1]])):
        with pytest.raises(RuntimeError):
            torch.bincount(bad.to("toony"))
