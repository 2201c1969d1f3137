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


SPECIAL_VALUES = torch.tensor([0.0, -0.0, 1.5, -2.0, 3e38, -3e38, 1e-40, float("inf"), float("-inf"), float("nan")])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64])
@pytest.mark.parametrize("name", ["fmax", "fmin", "hypot"])
def test_nan_aware_binary(name: str, dtype: torch.dtype) -> None:
    if name == "hypot" and not dtype.is_floating_point:
        pytest.skip("the CPU has no integer hypot")
    a = SPECIAL_VALUES.to(dtype) if dtype.is_floating_point else torch.arange(-5, 5)
    a, b = a.repeat_interleave(len(a)), a.repeat(len(a))  # every pair
    got = getattr(torch, name)(a.to(DEV), b.to(DEV)).cpu()
    torch.testing.assert_close(got, getattr(torch, name)(a, b), equal_nan=True)


def test_sign_of_nan_is_zero() -> None:
    for fn in (torch.sign, torch.sgn):
        torch.testing.assert_close(fn(SPECIAL_VALUES.to(DEV)).cpu(), fn(SPECIAL_VALUES))


def test_div_with_a_scalar_self_and_a_rounding_mode() -> None:
    x = torch.tensor([0.7, -1.5, 4.0])
    for mode in ("trunc", "floor"):
        got = torch.div(torch.tensor(5.0), x.to(DEV), rounding_mode=mode).cpu()
        torch.testing.assert_close(got, torch.div(torch.tensor(5.0), x, rounding_mode=mode))


def test_pow_in_place_with_a_scalar_exponent() -> None:
    x = torch.tensor([[1.5, -2.0], [3.0, 0.5]])
    for fn in (lambda t: t.pow_(3), lambda t: t.square_(), lambda t: t.pow_(0.5)):
        torch.testing.assert_close(fn(x.to(DEV)).cpu(), fn(x.clone()), equal_nan=True)


@pytest.mark.parametrize("name", ["logit", "hardshrink", "softshrink"])
def test_pointwise_backward(name: str) -> None:
    x = torch.tensor([-0.6, -0.5, -0.1, 0.0, 0.2, 0.5, 0.9, 1.0, 1.3])
    fn = {"logit": lambda t: torch.logit(t, eps=0.15), "hardshrink": torch.nn.functional.hardshrink,
          "softshrink": torch.nn.functional.softshrink}[name]
    grads = []
    for dev in ("cpu", DEV):
        t = x.to(dev).detach().requires_grad_()
        fn(t).backward(torch.linspace(1, 2, len(x)).to(dev))
        grads.append(t.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.bool])
@pytest.mark.parametrize("name", ["cummax", "cummin"])
def test_cumulative_extremes_keep_the_last_tie_and_stick_to_nan(name: str, dtype: torch.dtype) -> None:
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0, float("nan"), 5.0, 0.0], [2.0, 2.0, -1.0, 4.0, 4.0, 1.0, 4.0]])
    x = x.nan_to_num(7.0).to(dtype) if dtype != torch.float32 else x
    for dim in (0, 1, -1):
        want, got = getattr(torch, name)(x, dim), getattr(torch, name)(x.to(DEV), dim)
        torch.testing.assert_close(got.values.cpu(), want.values, equal_nan=True)
        torch.testing.assert_close(got.indices.cpu(), want.indices)


def test_logcumsumexp() -> None:
    x = torch.tensor([[-float("inf"), -float("inf"), 0.0, 80.0, -80.0, float("inf"), 1.0],
                      [1e-3, 2e-3, -1e4, 3.0, 3.0, 3.0, float("nan")]])
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        torch.testing.assert_close(torch.logcumsumexp(x.to(dtype).to(DEV), 1).cpu(),
                                   torch.logcumsumexp(x.to(dtype), 1), equal_nan=True)


@pytest.mark.parametrize(("shape", "pad"), [((2, 3, 5), (2, 3)), ((2, 3, 5), (-1, 2)), ((1, 2, 4, 5), (1, 2, 3, 0)),
                                            ((1, 1, 3, 4, 2), (1, 1, 2, 0, 0, 3)), ((2, 3, 1), (3, 2))])
def test_replication_pad_backward(shape: tuple[int, ...], pad: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    g = torch.randn(torch.nn.functional.pad(x, pad, mode="replicate").shape)
    grads = []
    for dev in ("cpu", DEV):
        t = x.to(dev).detach().requires_grad_()
        torch.nn.functional.pad(t, pad, mode="replicate").backward(g.to(dev))
        grads.append(t.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0])


def test_out_overload_computed_by_its_functional_twin() -> None:
    # reflection_pad1d_backward's out= overload: its packet-wide decomposition takes no `grad_input`, so the
    # result is computed out of place and copied into out (resized, as torch's out= rule says)
    g, x = torch.randn(2, 3, 9), torch.randn(2, 3, 6)
    want = torch.ops.aten.reflection_pad1d_backward(g, x, [2, 1])
    out = torch.empty(0).to(DEV)
    got = torch.ops.aten.reflection_pad1d_backward.grad_input(g.to(DEV), x.to(DEV), [2, 1], grad_input=out)
    assert got is out
    torch.testing.assert_close(out.cpu(), want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_scatter_add_of_16_bit_floats_accumulates_in_float32(dtype: torch.dtype) -> None:
    src, idx = torch.full((10000,), 0.1, dtype=dtype), torch.zeros(10000, dtype=torch.long)
    want = torch.zeros(3, dtype=dtype).scatter_add(0, idx, src)  # 1000, not the 256 half-precision steps reach
    got = torch.zeros(3, dtype=dtype).to(DEV).scatter_add(0, idx.to(DEV), src.to(DEV)).cpu()
    torch.testing.assert_close(got, want)
