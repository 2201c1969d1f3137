"""Ops whose output shape depends on their arguments (torch_toony/masks.py), and decompositions run on the device
(torch_toony/fallback.py): all against the CPU with the fallback off, so a pass means no CPU fallback ran."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import torch_toony

DEV = "toony"


@pytest.fixture(autouse=True)
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TOONY_FALLBACK", "0")
    yield


def _sample(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-2, 3, shape, generator=g)
    return (x > 0) if dtype == torch.bool else x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.float16, torch.uint8])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 0, 3), (2, 3, 4)])
def test_nonzero(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = _sample(shape, dtype)
    assert torch.equal(torch.nonzero(x.to(DEV)).cpu(), torch.nonzero(x))
    assert torch.equal(torch.argwhere(x.to(DEV)).cpu(), torch.argwhere(x))


def test_nonzero_of_a_non_contiguous_view_and_out() -> None:
    x = _sample((4, 6), torch.float32)
    assert torch.equal(torch.nonzero(x.to(DEV).T[::2]).cpu(), torch.nonzero(x.T[::2]))
    out = torch.empty(0, dtype=torch.long, device=DEV)
    torch.nonzero(x.to(DEV), out=out)
    assert torch.equal(out.cpu(), torch.nonzero(x))


def test_masked_select_broadcasts() -> None:
    x, m = _sample((3, 4), torch.float32), _sample((4,), torch.bool)
    assert torch.equal(torch.masked_select(x.to(DEV), m.to(DEV)).cpu(), torch.masked_select(x, m))
    assert torch.equal(torch.masked_select(x[0].to(DEV), _sample((3, 4), torch.bool).to(DEV)).cpu(),
                       torch.masked_select(x[0], _sample((3, 4), torch.bool)))


def test_boolean_mask_indexing_reads_and_writes() -> None:
    x = _sample((3, 4, 5), torch.float32)
    m2, m1 = x.sum(2) > 0, x[0, :, 0] > -1
    d = x.to(DEV)
    assert torch.equal(d[m2.to(DEV)].cpu(), x[m2])
    assert torch.equal(d[:, m1.to(DEV)].cpu(), x[:, m1])
    assert torch.equal(d[m2.to(DEV), 1:3].cpu(), x[m2, 1:3])
    d[x.to(DEV) > 0] = -1.0
    x[x > 0] = -1.0
    assert torch.equal(d.cpu(), x)
    idx = x[:, :, 0] < 0
    d.index_put_((idx.to(DEV),), torch.tensor(2.0, device=DEV), accumulate=True)
    x.index_put_((idx,), torch.tensor(2.0), accumulate=True)
    assert torch.equal(d.cpu(), x)


def test_boolean_mask_gradient() -> None:
    x = _sample((4, 3), torch.float32).requires_grad_()
    xd = x.detach().to(DEV).requires_grad_()
    m = x.detach() > 0
    (x[m] * 3).sum().backward()
    (xd[m.to(DEV)] * 3).sum().backward()
    assert torch.equal(xd.grad.cpu(), x.grad)


@pytest.mark.parametrize("args", [(5,), (1.5, 7.2, 0.3), (10, 0, -3), (0, 1, 0.1), (3, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32])
def test_arange(args: tuple, dtype: torch.dtype) -> None:
    try:
        want = torch.arange(*args, dtype=dtype)
    except (RuntimeError, ValueError) as e:  # a fractional step for an integer type
        with pytest.raises(type(e), match=str(e)):
            torch.arange(*args, dtype=dtype, device=DEV)
        return
    torch.testing.assert_close(torch.arange(*args, dtype=dtype, device=DEV).cpu(), want)


def test_arange_resizes_out_and_rejects_a_zero_step() -> None:
    out = torch.empty(2, device=DEV)
    torch.arange(4, out=out)
    assert torch.equal(out.cpu(), torch.arange(4.0))
    with pytest.raises((RuntimeError, ValueError), match="step must be nonzero"):
        torch.arange(0, 3, 0, device=DEV)


def test_ops_with_a_decomposition_run_it_on_the_device() -> None:
    g, x = _sample((5,), torch.float32), _sample((5,), torch.float32)
    torch_toony.reset_metrics()
    got = torch.ops.aten.threshold_backward(g.to(DEV), x.to(DEV), 0.0)
    assert torch.equal(got.cpu(), torch.ops.aten.threshold_backward(g, x, 0.0))
    y = x.to(DEV)
    y.addcmul_(g.to(DEV), g.to(DEV), value=0.5)
    assert torch.equal(y.cpu(), x.addcmul(g, g, value=0.5))
    m = torch_toony.metrics()
    assert not m["fallbacks"]
    assert "aten::threshold_backward.grad_input" in m["decompositions"]
    assert any(name.startswith("aten::addcmul") for name in m["decompositions"])  # addcmul_ (or its out= form)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_histc(dtype: torch.dtype) -> None:
    x = torch.cat([torch.randn(200, generator=torch.Generator().manual_seed(0)) * 3,
                   torch.tensor([float("nan"), 2.0, -2.0, 100.0])]).to(dtype)
    for bins, lo, hi in [(10, -2, 2), (1, -1, 5), (30, -10, 10)]:
        torch.testing.assert_close(torch.histc(x.to("toony"), bins, lo, hi).cpu(), torch.histc(x, bins, lo, hi))
    finite = x[:-4]  # min == max: the range is the data's
    torch.testing.assert_close(torch.histc(finite.to("toony"), 7).cpu(), torch.histc(finite, 7))
    with pytest.raises(RuntimeError, match="is not finite"):  # a NaN makes the data's range NaN
        torch.histc(x.to("toony"), 7)
    torch.testing.assert_close(torch.histc(torch.full((5,), 3.0).to("toony"), 4).cpu(),
                               torch.histc(torch.full((5,), 3.0), 4))  # one value: range [2, 4]
    torch.testing.assert_close(torch.histc(torch.empty(0).to("toony"), 3).cpu(), torch.histc(torch.empty(0), 3))
    with pytest.raises(RuntimeError, match="max must be larger than min"):
        torch.histc(x.to("toony"), 5, 2, 1)


@pytest.mark.parametrize("dt", [torch.float32, torch.float64])
def test_histogram(dt: torch.dtype) -> None:
    x = torch.randn(50, dtype=dt)
    w = torch.rand(50, dtype=dt)
    cases = [((), {}), ((7,), {"weight": w}), ((5,), {"range": (-1.0, 0.5), "density": True}),
             ((torch.tensor([-3.0, -0.5, 0.0, 0.25, 2.0], dtype=dt),), {"weight": w, "density": True})]
    for args, kw in cases:
        dev_args = [a.to("toony") if isinstance(a, torch.Tensor) else a for a in args]
        dev_kw = {k: (v.to("toony") if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        for got, want in zip(torch.histogram(x.to("toony"), *dev_args, **dev_kw), torch.histogram(x, *args, **kw)):
            assert got.device.type == "toony"
            torch.testing.assert_close(got.cpu(), want)
    for v in (torch.tensor([2.0, 2.0], dtype=dt), torch.tensor([], dtype=dt), x[:1]):  # one point, no data
        for got, want in zip(torch.histogram(v.to("toony"), 3), torch.histogram(v, 3)):
            torch.testing.assert_close(got.cpu(), want)
    with pytest.raises(RuntimeError):
        torch.histogram(x.to("toony"), 3, range=(1.0, 0.0))
