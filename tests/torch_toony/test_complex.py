"""Complex tensors on the toony device, compared with CPU torch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import torch_toony  # noqa: F401 - registers the device

DTYPES = [torch.complex64, torch.complex128]
ATOL = {torch.complex32: 2e-2, torch.complex64: 1e-5, torch.complex128: 1e-12}


def _pair(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.complex128, generator=g).to(dtype)
    return x, x.to("toony")


def _check(f: Callable, *cpu: torch.Tensor, dtype: torch.dtype) -> None:
    expected = f(*cpu)
    got = f(*(t.to("toony") for t in cpu)).cpu()
    assert got.dtype == expected.dtype and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL[dtype], rtol=ATOL[dtype], equal_nan=True)


UNARY = {
    "neg": torch.neg, "conj_physical": torch.conj_physical, "abs": torch.abs, "angle": torch.angle,
    "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "reciprocal": torch.reciprocal, "sgn": torch.sgn,
    "isnan": torch.isnan, "clone": torch.clone, "flip": lambda x: x.flip(0), "sum": lambda x: x.sum(1),
    "mean": torch.mean, "cumsum": lambda x: x.cumsum(1), "tril": torch.tril, "real": lambda x: x.real + 0,
    "resolve_conj": lambda x: x.conj().resolve_conj(), "to_real": lambda x: x.real.to(x.dtype),
    "to_c128": lambda x: x.to(torch.complex128), "t_contig": lambda x: x.t().contiguous(),
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "sinh": torch.sinh, "cosh": torch.cosh,
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "isinf": torch.isinf, "isfinite": torch.isfinite,
    "rsqrt": torch.rsqrt, "log2": torch.log2, "log10": torch.log10, "pow2": lambda x: x ** 2,
    "pow_frac": lambda x: x ** 2.5, "square": torch.square, "var": lambda x: x.var(1), "std": torch.std,
    "any": lambda x: (x * (x.real > 0)).any(1), "logical_not": lambda x: torch.logical_not(x * (x.real > 0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name: str, dtype: torch.dtype) -> None:
    x, _ = _pair((3, 5), dtype)
    _check(UNARY[name], x, dtype=dtype)
    _check(UNARY[name], x.t(), dtype=dtype)  # non-contiguous


BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "eq": torch.eq, "ne": torch.ne,
    "add_alpha": lambda a, b: torch.add(a, b, alpha=2), "rsub_scalar": lambda a, b: 1 - a,
    "mul_scalar": lambda a, b: a * (1 - 2j), "cat": lambda a, b: torch.cat([a, b]),
    "stack": lambda a, b: torch.stack([a, b]), "where": lambda a, b: torch.where(a.real > 0, a, b),
    "mm": lambda a, b: a @ b.t(), "mv": lambda a, b: a @ b[0], "complex": lambda a, b: torch.complex(a.real, b.imag),
    "pow": torch.pow, "lerp": lambda a, b: torch.lerp(a, b, 0.3),
    "addcmul": lambda a, b: torch.addcmul(a, a, b, value=2),
    "polar": lambda a, b: torch.polar(a.abs(), b.angle()), "conj_mul": lambda a, b: a.conj() * b,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary(name: str, dtype: torch.dtype) -> None:
    a, _ = _pair((4, 3), dtype, 1)
    b, _ = _pair((4, 3), dtype, 2)
    _check(BINARY[name], a, b, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_real_and_scalars(dtype: torch.dtype) -> None:
    a, _ = _pair((4, 3), dtype)
    r = torch.randn(3, dtype=torch.float32)
    _check(lambda x, y: x + y, a, r, dtype=dtype)
    _check(lambda x, y: x * y, a, r, dtype=dtype)
    _check(lambda x, y: y / x, a, r, dtype=dtype)
    _check(lambda x: x[0, 0] * x, a, dtype=dtype)  # 0-d


@pytest.mark.parametrize("dtype", DTYPES)
def test_inplace_and_out(dtype: torch.dtype) -> None:
    a, ta = _pair((4, 3), dtype, 1)
    b, tb = _pair((4, 3), dtype, 2)
    a.mul_(b)
    ta.mul_(tb)
    torch.testing.assert_close(ta.cpu(), a)
    out = torch.empty((4, 3), dtype=dtype, device="toony")
    torch.add(ta, tb, out=out)
    torch.testing.assert_close(out.cpu(), a + b)
    col = torch.zeros((3, 4), dtype=dtype, device="toony").t()  # a non-contiguous target
    col.copy_(ta)
    torch.testing.assert_close(col.cpu(), a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_fill_item(dtype: torch.dtype) -> None:
    e = torch.empty((0, 3), dtype=dtype, device="toony")
    assert (e + e).cpu().shape == (0, 3)
    f = torch.zeros(3, dtype=dtype, device="toony").fill_(1 + 2j)
    assert f.cpu().tolist() == [1 + 2j] * 3
    assert f.sum().item() == 3 + 6j


def test_complex32_rounds_once() -> None:
    a = torch.randn(6, dtype=torch.complex64).to(torch.complex32)
    b = torch.randn(6, dtype=torch.complex64).to(torch.complex32)
    got = (a.to("toony") * b.to("toony")).cpu()
    torch.testing.assert_close(got.to(torch.complex64), (a * b).to(torch.complex64), atol=2e-3, rtol=2e-3)


def test_special_values() -> None:
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([complex(inf, 0), complex(-inf, 0), complex(0, -0.0), complex(-0.0, 0), complex(nan, 1),
                      complex(1e30, 1e30), complex(-4, 0), complex(-4, -0.0)], dtype=torch.complex64)
    x = torch.cat([x, torch.tensor([complex(inf, inf), complex(nan, -inf)], dtype=torch.complex64)])
    for f in (torch.abs, torch.sqrt, torch.isnan, lambda v: v / complex(1e30, 1e30)):
        _check(f, x, dtype=torch.complex64)


def test_unsupported_op_names_op_and_dtype() -> None:
    x = torch.randn(3, dtype=torch.complex64).to("toony")
    with pytest.raises(RuntimeError, match="complex64"):
        torch.special.bessel_j0(x).cpu()


def test_randn_complex_parts_have_variance_half() -> None:
    r = torch.randn(200_000, dtype=torch.complex64, device="toony").cpu()
    for part in (r.real, r.imag):
        assert abs(part.var().item() - 0.5) < 0.01 and abs(part.mean().item()) < 0.01
    assert abs(torch.corrcoef(torch.stack([r.real, r.imag]))[0, 1].item()) < 0.01


def test_scatter_reduce_add() -> None:
    x = torch.randn(3, 4, dtype=torch.complex64)
    idx = torch.tensor([[0, 1], [2, 0]])
    src = torch.randn(2, 2, dtype=torch.complex64)
    _check(lambda a, i, s: a.scatter(0, i, s, reduce="add"), x, idx, src, dtype=torch.complex64)
    _check(lambda a, i: a.scatter(0, i, 2 + 1j, reduce="add"), x, idx, dtype=torch.complex64)


@pytest.mark.parametrize("name", ["sinh_", "cosh_", "mul_", "exp_"])
def test_inplace_on_a_view_reads_both_parts_first(name: str) -> None:
    x = torch.randn(4, 6, dtype=torch.complex64)
    t = x.to("toony")
    args = (x[:, ::2],) if name == "mul_" else ()
    getattr(t[:, ::2], name)(*(a.to("toony") for a in args))
    getattr(x[:, ::2], name)(*args)
    torch.testing.assert_close(t.cpu(), x)


def test_tanh_of_infinite_real_part_and_zero_to_a_power() -> None:
    inf = float("inf")
    x = torch.tensor([complex(inf, inf), complex(-inf, 2.0), complex(inf, 0.5)], dtype=torch.complex64)
    _check(torch.tanh, x, dtype=torch.complex64)
    z = torch.zeros(3, dtype=torch.complex64)
    w = torch.tensor([2 + 1j, 0.5 - 3j, 1.5 + 0j], dtype=torch.complex64)
    _check(torch.pow, z, w, dtype=torch.complex64)
