"""Every front-end op of toony_core.Tensor against numpy, over dtypes and shapes (0-d, size-0, broadcasting)
and over non-contiguous inputs (permute / flip / pad / shrink / as_strided with offsets).

Tolerances (the rule, everywhere in this file):
  * integer and bool results: exact.
  * float32 elementwise: within 1e-6 relative of numpy float32 (the project's bar; ops that are correctly
    rounded in OpenCL with -cl-fp32-correctly-rounded-divide-sqrt are also checked bit-exact once).
  * float64 elementwise: within 2**-52 relative (correctly rounded ops).
  * float16 / bfloat16: the reference computes in float32 on the (exactly representable) inputs and rounds the
    result to float16 / bfloat16 (round to nearest even). Correctly rounded ops must then match exactly;
    transcendental functions may differ by one unit in the last place of the 16-bit type, because two
    different float32 approximations can straddle a 16-bit rounding boundary.
  * transcendental functions: a bound in ulps measured on this device (see TRANSCENDENTAL_ULPS).
  * reductions: the worst-case bound of floating-point summation, (n - 1) * u * sum(|x|), which grows with
    the number n of summed terms (u = unit roundoff of the accumulating type), against a float64 reference.
"""

import math
import warnings

import numpy as np
import pytest

from toony_core import Tensor, dtypes

F16, BF16, F32, F64 = dtypes.float16, dtypes.bfloat16, dtypes.float32, dtypes.float64
INTS = (dtypes.int8, dtypes.int16, dtypes.int32, dtypes.int64, dtypes.uint8, dtypes.uint16, dtypes.uint32,
        dtypes.uint64)
FLOATS = (F16, BF16, F32, F64)
LOW = (F16, BF16)
NUMERIC = INTS + FLOATS
ALL = (dtypes.bool,) + NUMERIC


def ids(dts):
    return [d.name for d in dts]


# ---------------------------------------------------------------- reference helpers

def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), returned as float32."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    out = bits.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), out)


def to_dt(x, dt):
    """Host values of dtype dt (bfloat16 travels as float32); 16-bit floats are rounded from float32."""
    if dt == BF16:
        return bf16_round(np.asarray(x, np.float32))
    if dt == F16:
        return np.asarray(x, np.float32).astype(np.float16)
    return np.asarray(x).astype(dt.np)


def host(dt) -> np.dtype:
    return np.dtype(np.float32) if dt == BF16 else dt.np


def rand(shape, dt, seed=0, lo=None, hi=None, nonzero=False) -> np.ndarray:
    """Random host values exactly representable in dt."""
    r = np.random.default_rng(seed)
    if dt == dtypes.bool:
        return r.random(shape) < 0.5
    if dt.is_int:
        if lo is None:
            info = np.iinfo(dt.np)
            lo, hi = (max(info.min, -1000), min(info.max, 1000)) if dt.itemsize >= 4 else (info.min, info.max)
        x = r.integers(lo, hi, size=shape, endpoint=True).astype(dt.np)
        if nonzero:
            x[x == 0] = 1
        return x
    lo = -3.0 if lo is None else lo
    hi = 3.0 if hi is None else hi
    x = to_dt(r.uniform(lo, hi, size=shape), dt)
    if nonzero:
        x[x == 0] = 1
    return x


def f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32)


def low_ref(fn, dt, *args):
    """16-bit floats: compute in float32, round to dt. Others: compute in dt with numpy."""
    if dt in LOW:
        return to_dt(fn(*(f32(a) for a in args)), dt)
    return fn(*args)


def dt_spacing(ref: np.ndarray, dt) -> np.ndarray:
    """One unit in the last place of dt at the magnitude of ref."""
    a = np.abs(np.asarray(ref, np.float32))
    if dt == F16:
        return np.spacing(a.astype(np.float16)).astype(np.float32)
    if dt == BF16:
        return np.spacing(a) * np.float32(2 ** 16)
    return np.spacing(a.astype(dt.np))


def check(t: Tensor, want, dt, *, rtol=None, atol=0.0, ulps=0) -> None:
    """t has dtype dt and matches want: exactly for ints/bool (and 16-bit floats unless ulps is given),
    within rtol for float32/float64 (default: see the module docstring)."""
    assert t.dtype == dt, f"dtype {t.dtype} != {dt}"
    got = t.numpy()
    want = np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    assert got.dtype == host(dt), f"numpy dtype {got.dtype} != {host(dt)}"
    if dt == dtypes.bool or dt.is_int:
        np.testing.assert_array_equal(got, want.astype(got.dtype))
        return
    want = want.astype(got.dtype)
    if dt in LOW:
        if ulps:
            np.testing.assert_array_less(np.abs(got - want), ulps * dt_spacing(want, dt) * 1.0001 + 1e-30)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        if not ulps:
            np.testing.assert_array_equal(got, want)
        return
    if rtol is None:
        rtol = 1e-6 if dt == F32 else 2.0 ** -52
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def concat(ts: list[Tensor]) -> Tensor:
    """The flattened tensors one after another, as one lazy tensor (pads and adds: one fused kernel)."""
    sizes = [t.numel() for t in ts]
    total, out, off = sum(sizes), None, 0
    for t, n in zip(ts, sizes, strict=True):
        part = t.reshape(n).pad(((off, total - off - n),))
        out = part if out is None else (out | part if t.dtype == dtypes.bool else out + part)
        off += n
    return out


def check_many(cases: list[tuple[str, Tensor, np.ndarray]], dt, **tol) -> None:
    """check() every (label, tensor, want) of dtype dt, computing them all in one kernel: the sweeps over ops
    and dtypes compile a few hundred kernels fewer this way. A failure is re-checked op by op, so the message
    names the op(s) that are wrong."""
    for _, t, _ in cases:
        assert t.dtype == dt, f"dtype {t.dtype} != {dt}"
    try:
        got = concat([t for _, t, _ in cases])
        want = np.concatenate([np.asarray(w).reshape(-1).astype(host(dt)) for _, _, w in cases])
        check(got, want, dt, **tol)
    except Exception as fused_error:  # noqa: BLE001 - find out which op it was
        failures = []
        for label, t, w in cases:
            try:
                check(t, w, dt, **tol)
            except Exception as e:  # noqa: BLE001
                failures.append(f"{label}: {type(e).__name__}: {str(e).strip()[:600]}")
        raise AssertionError("\n".join(failures) or f"only fused together: {fused_error}") from fused_error


# ---------------------------------------------------------------- creation and host round trips

@pytest.mark.parametrize("dt", ALL, ids=ids(ALL))
def test_roundtrip(dt):
    x = rand((3, 5), dt, seed=1)
    t = Tensor(x, dt)
    assert t.shape == (3, 5) and t.dtype == dt and t.numel() == 15
    check(t, x, dt)


def test_roundtrip_extreme_values():
    for dt in INTS:
        info = np.iinfo(dt.np)
        x = np.array([info.min, info.max, 0, 1], dt.np)
        check(Tensor(x), x, dt)
    x = np.array([np.inf, -np.inf, np.nan, -0.0, 1e-45, 3.4e38], np.float32)
    got = Tensor(x).numpy()
    np.testing.assert_array_equal(got.view(np.uint32)[[0, 1, 3, 4, 5]], x.view(np.uint32)[[0, 1, 3, 4, 5]])
    assert np.isnan(got[2])


def test_bfloat16_rounds_on_the_way_in():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e38, 1e-3], np.float32)
    check(Tensor(x, BF16), bf16_round(x), BF16)


def test_float16_rounds_on_the_way_in():
    x = np.array([1.0, 2049.0, 65519.0, 1e-3, -7.1], np.float32)
    check(Tensor(x, F16), x.astype(np.float16), F16)


def test_scalar_tensors_are_0d():
    for v, dt in [(3.0, F32), (3, dtypes.int64), (True, dtypes.bool)]:
        t = Tensor(v)
        assert t.shape == () and t.dtype == dt and t.numel() == 1
        assert t.item() == v and type(t.item()) is type(v)
        assert t.numpy().shape == ()
    assert Tensor(2.5, F64).dtype == F64


def test_dtype_from_host_data():
    assert Tensor(np.zeros(2, np.float64)).dtype == F64
    assert Tensor(np.zeros(2, np.int16)).dtype == dtypes.int16
    assert Tensor([1.5, 2.0]).dtype == F32  # Python floats default to float32, like torch
    assert Tensor([1, 2]).dtype == dtypes.int64
    assert Tensor(np.zeros(2, np.float32), F64).dtype == F64


@pytest.mark.parametrize("dt", (dtypes.bool, dtypes.int8, dtypes.int64, dtypes.uint16, F16, BF16, F32, F64),
                         ids=ids((dtypes.bool, dtypes.int8, dtypes.int64, dtypes.uint16, F16, BF16, F32, F64)))
def test_full_zeros_ones(dt):
    check(Tensor.full((2, 3), 1, dt), np.ones((2, 3), host(dt)), dt)
    check_many([("zeros", Tensor.zeros((4,), dt), np.zeros(4, host(dt))),
                ("ones 0-d", Tensor.ones((), dt), np.ones((), host(dt))),
                ("full size-0", Tensor.full((0, 2), 1, dt), np.ones((0, 2), host(dt)))], dt)


def test_full_infers_dtype():
    assert Tensor.full((2,), 1.5).dtype == F32
    assert Tensor.full((2,), 7).dtype == dtypes.int64
    assert Tensor.full((2,), False).dtype == dtypes.bool
    check(Tensor.full((2, 2), -7.25), np.full((2, 2), -7.25, np.float32), F32)


@pytest.mark.parametrize("args,dt", [
    ((5,), None), ((2, 11, 3), None), ((5, 0, -2), None), ((3, 3), None), ((3, 1), None),
    ((0, 1, 0.25), None), ((-1.5, 1.5, 0.5), F32), ((0, 10, 3), dtypes.int8), ((0, 4), F64), ((1, 6, 2), F16),
])
def test_arange(args, dt):
    t = Tensor.arange(*args, dtype=dt)
    want = np.arange(*args)
    want_dt = dt or (F32 if want.dtype.kind == "f" else dtypes.int64)
    check(t, to_dt(want, want_dt), want_dt)


def test_item_and_numpy_of_views():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = Tensor(x)
    assert t.shrink(((1, 2), (2, 3))).item() == 6.0
    with pytest.raises(ValueError):
        t.item()
    np.testing.assert_array_equal(t.T.numpy(), x.T)


# ---------------------------------------------------------------- type promotion

PROMO = [d for d in ALL if d != BF16]


def _same_category(a, b) -> bool:
    return a == dtypes.bool or b == dtypes.bool or a.is_float == b.is_float


@pytest.mark.parametrize("a", PROMO, ids=ids(PROMO))
def test_promotion_matches_numpy(a):
    for b in PROMO:
        if not _same_category(a, b):
            continue
        got = (Tensor.zeros((2,), a) + Tensor.zeros((2,), b)).dtype
        assert got.name == np.result_type(a.np, b.np).name, (a, b, got)


def test_promotion_int_with_float_takes_the_float():
    # the one deliberate difference from numpy (decided for toony: it is a torch backend, and float32 graphs
    # must stay float32 on devices without float64): an int (or bool) with a float gives that float type,
    # as in torch; numpy 2 widens int32 + float32 to float64
    for a in PROMO:
        for b in PROMO:
            if _same_category(a, b) or not (a.is_float or b.is_float):
                continue
            want = a if a.is_float else b
            assert (Tensor.zeros((2,), a) + Tensor.zeros((2,), b)).dtype == want, (a, b)


def test_promotion_bfloat16():
    def res(a, b):
        return (Tensor.zeros((1,), a) + Tensor.zeros((1,), b)).dtype
    assert res(BF16, F16) == F32  # as torch
    assert res(BF16, F32) == F32
    assert res(BF16, F64) == F64
    assert res(BF16, dtypes.bool) == BF16
    assert res(BF16, dtypes.int8) == BF16


@pytest.mark.parametrize("a", PROMO, ids=ids(PROMO))
def test_promotion_with_python_scalars_is_weak(a):
    t = Tensor.zeros((2,), a)
    assert (t + True).dtype == a
    assert (t * 3).dtype == (a if a != dtypes.bool else dtypes.int64)
    if a.is_float:
        assert (t - 2.5).dtype == a
        assert (2.5 - t).dtype == a


def test_true_division_of_ints_is_float32():
    a, b = Tensor(np.array([7, -7, 1], np.int32)), Tensor(np.array([2, 2, 3], np.int32))
    check(a / b, np.array([3.5, -3.5, 1 / 3], np.float32), F32)
    check(a / 2, np.array([3.5, -3.5, 0.5], np.float32), F32)
    check(Tensor(np.array([1, 2], np.int64)) / Tensor(np.array([4.0, 8.0])), [0.25, 0.25], F64)


# ---------------------------------------------------------------- binary elementwise ops over dtypes

def _shift_rhs(dt, shape):
    return rand(shape, dt, seed=7, lo=0, hi=dt.itemsize * 8 - 1)


BINARY = {
    # name: (toony, numpy, dtypes, rhs must be nonzero)
    "add": (lambda a, b: a + b, np.add, ALL, False),
    "sub": (lambda a, b: a - b, np.subtract, NUMERIC, False),
    "mul": (lambda a, b: a * b, np.multiply, ALL, False),
    "maximum": (lambda a, b: a.maximum(b), np.maximum, ALL, False),
    "minimum": (lambda a, b: a.minimum(b), np.minimum, ALL, False),
    "floordiv": (lambda a, b: a // b, np.floor_divide, NUMERIC, True),
    "mod": (lambda a, b: a % b, np.remainder, NUMERIC, True),
    "fmod": (lambda a, b: a.fmod(b), np.fmod, NUMERIC, True),
    "and": (lambda a, b: a & b, np.bitwise_and, (dtypes.bool,) + INTS, False),
    "or": (lambda a, b: a | b, np.bitwise_or, (dtypes.bool,) + INTS, False),
    "xor": (lambda a, b: a ^ b, np.bitwise_xor, (dtypes.bool,) + INTS, False),
}


@pytest.mark.parametrize("dt", ALL, ids=ids(ALL))
def test_binary(dt):
    cases = []
    for name, (fn, np_fn, dts, nonzero) in BINARY.items():
        if dt not in dts:
            continue
        x, y = rand((4, 6), dt, seed=1), rand((4, 6), dt, seed=2, nonzero=nonzero)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's integer overflow warnings: C wraps the same way
            want = low_ref(np_fn, dt, x, y)
        cases.append((name, fn(Tensor(x, dt), Tensor(y, dt)), want))
    check_many(cases, dt)


def test_truediv():
    for dt in NUMERIC:
        x, y = rand((4, 6), dt, seed=1), rand((4, 6), dt, seed=2, nonzero=True)
        if dt.is_int:
            check(Tensor(x) / Tensor(y), f32(x) / f32(y), F32)
        else:
            check(Tensor(x, dt) / Tensor(y, dt), low_ref(np.true_divide, dt, x, y), dt)


@pytest.mark.parametrize("dt", INTS, ids=ids(INTS))
def test_shifts(dt):
    x = rand((4, 6), dt, seed=3)
    s = _shift_rhs(dt, (4, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_many([("<<", Tensor(x) << Tensor(s), np.left_shift(x, s)),
                    (">>", Tensor(x) >> Tensor(s), np.right_shift(x, s))], dt)


@pytest.mark.parametrize("dt", ALL, ids=ids(ALL))
def test_comparisons(dt):
    x, y = rand((5, 4), dt, seed=4), rand((5, 4), dt, seed=5)
    y[0] = x[0]  # some equal elements
    a, b = Tensor(x, dt), Tensor(y, dt)
    check_many([("<", a < b, x < y), ("<=", a <= b, x <= y), (">", a > b, x > y), (">=", a >= b, x >= y),
                ("==", a == b, x == y), ("!=", a != b, x != y)], dtypes.bool)


def test_comparisons_with_nan():
    x = np.array([np.nan, 1.0, np.nan, 2.0], np.float32)
    y = np.array([np.nan, np.nan, 1.0, 2.0], np.float32)
    a, b = Tensor(x), Tensor(y)
    for got, np_fn in [(a < b, np.less), (a <= b, np.less_equal), (a > b, np.greater),
                       (a >= b, np.greater_equal), (a == b, np.equal), (a != b, np.not_equal)]:
        check(got, np_fn(x, y), dtypes.bool)


def test_maximum_minimum_propagate_nan():
    x = np.array([np.nan, 1.0, np.nan, 2.0, -0.0], np.float32)
    y = np.array([1.0, np.nan, np.nan, 3.0, 0.0], np.float32)
    check(Tensor(x).maximum(Tensor(y)), np.maximum(x, y), F32)
    check(Tensor(x).minimum(Tensor(y)), np.minimum(x, y), F32)


@pytest.mark.parametrize("dt", (dtypes.bool, dtypes.int8, dtypes.uint32, F32), ids=ids((dtypes.bool, dtypes.int8,
                                                                                      dtypes.uint32, F32)))
def test_logical_ops(dt):
    small = {} if dt in (dtypes.bool, F32) else {"lo": 0, "hi": 2}  # many zeros
    x, y = rand((3, 7), dt, seed=8, **small), rand((3, 7), dt, seed=9, **small)
    a, b = Tensor(x, dt), Tensor(y, dt)
    check_many([("and", a.logical_and(b), np.logical_and(x, y)), ("or", a.logical_or(b), np.logical_or(x, y)),
                ("xor", a.logical_xor(b), np.logical_xor(x, y)), ("not", a.logical_not(), np.logical_not(x))],
               dtypes.bool)


def test_float32_basic_arithmetic_is_correctly_rounded():
    # with -cl-fp32-correctly-rounded-divide-sqrt, + - * / sqrt give numpy's float32 bits exactly
    x, y = rand(4096, F32, seed=10, lo=-1e3, hi=1e3), rand(4096, F32, seed=11, lo=-1e3, hi=1e3, nonzero=True)
    a, b = Tensor(x), Tensor(y)
    for got, want in [(a + b, x + y), (a - b, x - y), (a * b, x * y), (a / b, x / y),
                      (a.abs().sqrt(), np.sqrt(np.abs(x))), (b.reciprocal(), np.float32(1) / y)]:
        np.testing.assert_array_equal(got.numpy(), want)


FLOORDIV_EDGES = (np.array([1.0, -1.0, 7.0, 0.3, 5.0], np.float32), np.array([0.1, 0.1, 0.7, 0.1, -0.7], np.float32))


def test_float_mod_matches_python():
    x, y = FLOORDIV_EDGES
    check(Tensor(x) % Tensor(y), np.remainder(x, y), F32)


def test_float_floordiv_matches_python():
    # Python (and numpy) define a // b so that a == (a // b) * b + a % b; 1 // 0.1 is 9.0, not floor(1 / 0.1)
    x, y = FLOORDIV_EDGES
    np.testing.assert_array_equal((Tensor(x) // Tensor(y)).numpy(), np.floor_divide(x, y))


def test_integer_division_by_zero_does_not_crash():
    # numpy (with a warning) gives 0 for x // 0 and x % 0; torch raises. toony must at least not trap or
    # return garbage: a zero divisor in a tensor gives 0.
    x = np.array([5, -5, 7, 0], np.int32)
    z = np.zeros(4, np.int32)
    check(Tensor(x) // Tensor(z), np.zeros(4, np.int32), dtypes.int32)
    check(Tensor(x) % Tensor(z), np.zeros(4, np.int32), dtypes.int32)
    check(Tensor(x).fmod(Tensor(z)), np.zeros(4, np.int32), dtypes.int32)


def test_integer_division_by_constant_zero():
    x = np.array([5, -5, 7, 0], np.int32)
    check(Tensor(x) // 0, np.zeros(4, np.int32), dtypes.int32)
    check(Tensor(x) % 0, np.zeros(4, np.int32), dtypes.int32)


def test_integer_overflow_wraps():
    x = np.array([100, 127, -128, 50], np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(Tensor(x) + Tensor(x), x + x, dtypes.int8)
        check(Tensor(x) * Tensor(x), x * x, dtypes.int8)
    u = np.array([0, 1, 255], np.uint8)
    check(Tensor(u) - 1, np.array([255, 0, 254], np.uint8), dtypes.uint8)
    check(Tensor(u) + Tensor(np.full(3, 255, np.uint8)), np.array([255, 0, 254], np.uint8), dtypes.uint8)
    # the product wraps to uint8 before it is divided (a wider C temporary would give 152 for 99)
    w = np.array([99, 200, 3], np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check((Tensor(w) * 3 + 7) // 2, (w * np.uint8(3) + np.uint8(7)) // np.uint8(2), dtypes.uint8)
        check((Tensor(w.view(np.int8)) * 3 + 7) % 5, (w.view(np.int8) * np.int8(3) + np.int8(7)) % np.int8(5),
              dtypes.int8)
    big = np.array([2**40, -(2**40), 2**62], np.int64)
    check(Tensor(big) + Tensor(big // 2), big + big // 2, dtypes.int64)  # really 64-bit
    ub = np.array([2**63 + 5, 2**64 - 1, 3], np.uint64)
    check(Tensor(ub) > Tensor(np.array([2**63, 2**63, 2**63], np.uint64)), ub > np.uint64(2**63), dtypes.bool)
    check(Tensor(ub) // Tensor(np.array([3, 7, 2], np.uint64)), ub // np.array([3, 7, 2], np.uint64),
          dtypes.uint64)


def test_small_int_sum_wraps_before_division():
    x = np.array([1, 0, 200], np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check((Tensor(x) + 255) // 2, (x + np.uint8(255)) // np.uint8(2), dtypes.uint8)


def test_kernels_whose_loads_simplify_away():
    # every element is padding, or the input is multiplied away: the kernel reads no buffer
    check(Tensor(np.arange(4, dtype=np.float32)).pad(((2, 0),)).shrink(((0, 2),)), np.zeros(2, np.float32), F32)
    check(Tensor(np.arange(4, dtype=np.int32)) * 0, np.zeros(4, np.int32), dtypes.int32)
    check(Tensor(np.arange(4, dtype=np.int32)) & 0, np.zeros(4, np.int32), dtypes.int32)


def test_subtract_negative_float_constant():
    x = np.array([1.0, 2.0], np.float32)
    check(Tensor(x) - (-0.25), x + np.float32(0.25), F32)
    check(Tensor(x.astype(np.float64)) - (-0.25), x.astype(np.float64) + 0.25, F64)
    # found by test_property.py as a constant that padding folds to
    check(Tensor(x[:1]) - Tensor(np.zeros(0, np.float32)).pad(((0, 1),), -0.25), x[:1] + np.float32(0.25), F32)


def test_subtract_negative_int_constant():
    check(Tensor(np.array([1, 2], np.int32)) - (-3), np.array([4, 5], np.int32), dtypes.int32)


def test_python_scalar_operands():
    x = rand((3, 4), F32, seed=12, nonzero=True)
    t = Tensor(x)
    check(t + 2, x + 2, F32)
    check(2 - t, 2 - x, F32)
    check(t * 0.5, x * 0.5, F32)
    check(3 / t, np.float32(3) / x, F32)
    check(t ** 2, x ** 2, F32)
    check(2 ** t, np.float32(2) ** x, F32, rtol=2.4e-7)  # pow: see TRANSCENDENTAL_ULPS
    check(t // 0.75, np.floor_divide(x, np.float32(0.75)), F32)
    check(t % 0.75, np.remainder(x, np.float32(0.75)), F32)
    i = rand((3, 4), dtypes.int32, seed=13, nonzero=True)
    ti = Tensor(i)
    check(ti + 5, i + 5, dtypes.int32)
    check(7 // ti, 7 // i, dtypes.int32)
    check(7 % ti, 7 % i, dtypes.int32)
    check(ti // -3, i // -3, dtypes.int32)
    check(ti % -3, i % -3, dtypes.int32)
    check(ti * 1.5, f32(i) * np.float32(1.5), F32)
    check(ti & 6, i & 6, dtypes.int32)
    check(ti << 2, i << 2, dtypes.int32)


@pytest.mark.parametrize("dt", (dtypes.int8, dtypes.int32, dtypes.int64, dtypes.uint8), ids=ids(
    (dtypes.int8, dtypes.int32, dtypes.int64, dtypes.uint8)))
def test_integer_pow(dt):
    x = rand((3, 5), dt, seed=14, lo=0 if dt.is_unsigned else -4, hi=4)
    e = rand((3, 5), dt, seed=15, lo=0, hi=3)
    check(Tensor(x) ** Tensor(e), x ** e, dt)


def test_float_pow_special_cases():
    x = np.array([-2.0, -2.0, 0.0, 0.0, 2.0, 1.0, np.nan, 4.0], np.float32)
    y = np.array([3.0, 0.5, 0.0, -1.0, -2.0, np.nan, 0.0, 0.5], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(Tensor(x) ** Tensor(y), np.power(x, y), F32)


# ---------------------------------------------------------------- unary ops over dtypes

UNARY = {
    "neg": (lambda t: -t, np.negative, NUMERIC),
    "abs": (lambda t: t.abs(), np.abs, ALL),
    "sign": (lambda t: t.sign(), lambda x: x if x.dtype == np.bool_ else np.sign(x), ALL),
    "floor": (lambda t: t.floor(), np.floor, NUMERIC),
    "ceil": (lambda t: t.ceil(), np.ceil, NUMERIC),
    "trunc": (lambda t: t.trunc(), np.trunc, NUMERIC),
    "relu": (lambda t: t.relu(), lambda x: np.maximum(x, 0).astype(x.dtype), NUMERIC),
    "bitwise_not": (lambda t: ~t, np.invert, (dtypes.bool,) + INTS),
}


@pytest.mark.parametrize("dt", ALL, ids=ids(ALL))
def test_unary(dt):
    x = rand((4, 5), dt, seed=16)
    if dt.is_float:
        x.reshape(-1)[:3] = [0.0, -0.5, 2.5]
    cases = []
    for name, (fn, np_fn, dts) in UNARY.items():
        if dt in dts:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cases.append((name, fn(Tensor(x, dt)), low_ref(np_fn, dt, x)))
    check_many(cases, dt)


def test_abs_neg_of_minimum_int_wrap():
    x = np.array([-128, -5, 5, 0], np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(Tensor(x).abs(), np.abs(x), dtypes.int8)
        check(-Tensor(x), -x, dtypes.int8)
    u = np.array([0, 1, 200], np.uint8)
    check(-Tensor(u), (256 - u.astype(np.int64)) % 256, dtypes.uint8)


def test_sign_and_rounding_special_values():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -2.5, 2.5, -0.5, 0.5, 1e30], np.float32)
    for fn, np_fn in [(Tensor.sign, np.sign), (Tensor.floor, np.floor), (Tensor.ceil, np.ceil),
                      (Tensor.trunc, np.trunc), (Tensor.abs, np.abs), (Tensor.neg, np.negative)]:
        check(fn(Tensor(x)), np_fn(x), F32)


def test_clip():
    x = rand((4, 5), F32, seed=17)
    check(Tensor(x).clip(-1.0, 0.5), np.clip(x, -1.0, 0.5), F32)
    check(Tensor(x).clip(lo=0.0), np.maximum(x, 0.0), F32)
    i = rand((9,), dtypes.int16, seed=18)
    check(Tensor(i).clip(-100, 100), np.clip(i, -100, 100), dtypes.int16)
    lo, hi = rand((4, 5), F32, seed=19, lo=-2, hi=0), rand((4, 5), F32, seed=20, lo=0, hi=2)
    check(Tensor(x).clip(Tensor(lo), Tensor(hi)), np.clip(x, lo, hi), F32)


# ---------------------------------------------------------------- transcendental functions

def ulp_error(got: np.ndarray, ref: np.ndarray, dt) -> np.ndarray:
    """|got - ref| in units of the last place of dt at ref (ref computed in higher precision)."""
    ref = np.asarray(ref, np.longdouble if dt == F64 else np.float64)
    fdt = np.float64 if dt == F64 else np.float32
    spacing = np.spacing(np.abs(ref).astype(fdt)).astype(ref.dtype)
    spacing = np.maximum(spacing, np.finfo(fdt).smallest_subnormal)
    return (np.abs(got.astype(ref.dtype) - ref) / spacing).astype(np.float64)


_erf = np.frompyfunc(math.erf, 1, 1)


def np_erf(x):
    return _erf(np.asarray(x, np.float64)).astype(np.float64)


# Measured on PoCL (pthread, x86-64 Xeon) as the max ulp error over 2**20 float32 / 2**18 float64 random
# inputs of the domain listed, against numpy float64 (for float32) or long double (for float64). The bound in
# the test is the measurement rounded up to the next half ulp; the OpenCL spec allows more (in brackets).
#   name: (toony, reference, float32 domain, float32 bound, float64 bound)
TRANSCENDENTAL_ULPS = {
    # float32 measured 0.966 [OpenCL: 3] (toony_core/transcendental.py's arithmetic; built-in exp: 0.943),
    # float64 (built-in) 0.929
    "exp": (Tensor.exp, np.exp, (-87, 88), 1.0, 1.0),
    # 0.968 [3] (arithmetic; built-in: 0.829), 0.812
    "exp2": (Tensor.exp2, np.exp2, (-126, 127), 1.0, 1.0),
    # 0.746 [3] (arithmetic; built-in: 0.561), 0.667 (positive inputs, log-uniform over e**-80 .. e**80)
    "log": (Tensor.log, np.log, "log", 1.0, 1.0),
    # 0.529 [3], 0.532
    "log2": (Tensor.log2, np.log2, "log", 1.0, 1.0),
    # 1.601 [4], 1.377
    "sin": (Tensor.sin, np.sin, (-100, 100), 2.0, 1.5),
    # 1.568 [4], 1.402
    "cos": (Tensor.cos, np.cos, (-100, 100), 2.0, 1.5),
    # 2.699 [5], 2.198
    "tan": (Tensor.tan, np.tan, (-1.5, 1.5), 3.0, 2.5),
    # 1.311 [5] (arithmetic; built-in: 1.011), 1.083
    "tanh": (Tensor.tanh, np.tanh, (-10, 10), 1.5, 1.5),
    # 0.801 [16], 1.0 against math.erf (itself within 1 ulp)
    "erf": (Tensor.erf, np_erf, (-4, 4), 1.0, 2.0),
    # 0.500 [correctly rounded with -cl-fp32-correctly-rounded-divide-sqrt], 0.500
    "sqrt": (Tensor.sqrt, np.sqrt, "log", 0.5, 0.5),
    # 1.464 [2], 1.478
    "rsqrt": (Tensor.rsqrt, lambda x: 1 / np.sqrt(x), "log", 1.5, 1.5),
    # 0.500, 0.500
    "reciprocal": (Tensor.reciprocal, lambda x: 1 / x, "log", 0.5, 0.5),
    # 2.376 (1 / (1 + exp(-x)), three rounded steps), 1.911
    "sigmoid": (Tensor.sigmoid, lambda x: 1 / (1 + np.exp(-x)), (-20, 20), 2.5, 2.5),
    # x ** 2.5: 0.804 [16], 0.800
    "pow": (lambda t: t ** 2.5, lambda x: x ** 2.5, (0, 30), 1.0, 1.0),
}


def transcendental_inputs(domain, dt, n, seed):
    r = np.random.default_rng(seed)
    if domain == "log":
        x = np.exp(r.uniform(-80, 80, n))
    else:
        x = r.uniform(*domain, n)
    return x.astype(np.float64 if dt == F64 else np.float32)


@pytest.mark.parametrize("name", TRANSCENDENTAL_ULPS)
def test_transcendental_float32_ulps(name):
    fn, ref, domain, bound, _ = TRANSCENDENTAL_ULPS[name]
    x = transcendental_inputs(domain, F32, 1 << 16, seed=21)
    t = fn(Tensor(x))
    assert t.dtype == F32
    err = ulp_error(t.numpy(), ref(x.astype(np.float64)), F32)
    worst = int(np.argmax(err))
    assert err[worst] <= bound + 1e-9, f"{name}({x[worst]!r}) off by {err[worst]:.3f} ulp > {bound}"


@pytest.mark.parametrize("name", TRANSCENDENTAL_ULPS)
def test_transcendental_float64_ulps(name):
    fn, ref, domain, _, bound = TRANSCENDENTAL_ULPS[name]
    if domain == "log":
        x = np.exp(np.random.default_rng(22).uniform(-700, 700, 1 << 14))
    else:
        x = transcendental_inputs(domain, F64, 1 << 14, seed=22)
    t = fn(Tensor(x))
    assert t.dtype == F64
    want = ref(x.astype(np.longdouble)) if name != "erf" else ref(x)
    err = ulp_error(t.numpy(), want, F64)
    worst = int(np.argmax(err))
    assert err[worst] <= bound + 1e-9, f"{name}({x[worst]!r}) off by {err[worst]:.3f} ulp > {bound}"


@pytest.mark.parametrize("dt", LOW, ids=ids(LOW))
def test_transcendental_16bit(dt):
    cases = []
    for name, (fn, ref, domain, _, _) in TRANSCENDENTAL_ULPS.items():
        if domain == "log":
            x = to_dt(np.exp(np.random.default_rng(23).uniform(-9, 11, 2048)), dt)
        else:
            lo, hi = domain
            x = to_dt(np.random.default_rng(23).uniform(max(lo, -11), min(hi, 11), 2048), dt)
        want = to_dt(np.asarray(ref(f32(x).astype(np.float64)), np.float32), dt)  # float32 result, rounded
        cases.append((name, fn(Tensor(x, dt)), want))
    check_many(cases, dt, ulps=1)


def test_transcendental_int_inputs_compute_in_float32():
    i = np.arange(1, 9, dtype=np.int32)
    check(Tensor(i).sqrt(), np.sqrt(f32(i)), F32)
    check(Tensor(i).exp(), np.exp(f32(i)), F32, rtol=1.2e-7)  # exp: 1 ulp


def test_transcendental_special_values():
    inf, nan = np.inf, np.nan
    x = np.array([inf, -inf, nan, 0.0, -0.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn, np_fn in [(Tensor.exp, np.exp), (Tensor.exp2, np.exp2), (Tensor.log, np.log),
                          (Tensor.log2, np.log2), (Tensor.sqrt, np.sqrt), (Tensor.sin, np.sin),
                          (Tensor.cos, np.cos), (Tensor.reciprocal, lambda v: 1 / v), (Tensor.erf, np_erf)]:
            check(fn(Tensor(x)), np.asarray(np_fn(x.astype(np.float64)), np.float32), F32)
        check(Tensor(np.array([-1.0, -inf], np.float32)).log(), [nan, nan], F32)
        check(Tensor(np.array([-1.0], np.float32)).sqrt(), [nan], F32)
        check(Tensor(np.array([100.0, -100.0, -104.0, inf], np.float32)).exp(), [inf, 3.783506e-44, 0.0, inf], F32)
        check(Tensor(np.array([-200.0, 200.0], np.float32)).sigmoid(), [0.0, 1.0], F32)


def test_tanh_saturates_to_one():
    x = np.array([np.inf, -np.inf, 100.0, -100.0, 20.0, np.nan, 0.0, -0.0], np.float32)
    np.testing.assert_array_equal(Tensor(x).tanh().numpy(), np.tanh(x))  # exact: IEEE / OpenCL say tanh(inf) = 1


# ---------------------------------------------------------------- where, cast, bitcast

@pytest.mark.parametrize("dt", ALL, ids=ids(ALL))
def test_where(dt):
    c = rand((4, 5), dtypes.bool, seed=24)
    x, y = rand((4, 5), dt, seed=25), rand((4, 5), dt, seed=26)
    check(Tensor(c).where(Tensor(x, dt), Tensor(y, dt)), np.where(c, x, y), dt)


def test_where_broadcast_scalars_and_promotion():
    c = rand((3, 1), dtypes.bool, seed=27)
    x = rand((1, 4), F32, seed=28)
    check(Tensor(c).where(Tensor(x), 0.5), np.where(c, x, np.float32(0.5)), F32)
    check(Tensor(c).where(1.5, Tensor(x)), np.where(c, np.float32(1.5), x), F32)
    check(Tensor(c).where(1, 0), np.where(c, 1, 0), dtypes.int64)
    i = rand((1, 4), dtypes.int8, seed=29)
    check(Tensor(c).where(Tensor(i), Tensor(x)), np.where(c, i.astype(np.float32), x), F32)
    check(Tensor(c).where(Tensor(i), 7), np.where(c, i, np.int8(7)), dtypes.int8)
    # a non-bool condition means "!= 0"
    ci = np.array([0, 2, -1], np.int32)
    check(Tensor(ci).where(1.0, 2.0), np.where(ci != 0, 1.0, 2.0).astype(np.float32), F32)


def _cast_values(src, dst) -> np.ndarray:
    """Values that convert the same way in C and numpy (in range of both; no negative floats to unsigned)."""
    if src == dtypes.bool:
        return np.array([True, False, True, True])
    lo, hi = -100, 100
    if src.is_unsigned or dst.is_unsigned:
        lo = 0
    if src.is_float:
        v = np.array([lo + 0.75, 0.0, -0.0, 1.5, 99.25, 42.9, 0.25, hi - 0.5]) if lo < 0 else \
            np.array([0.0, 0.75, 1.5, 99.25, 42.9, 0.25, hi - 0.5, 3.0])
        return to_dt(v, src)
    v = np.array([lo, 0, 1, hi, 17, -3 if lo < 0 else 3, 64, 2])
    return v.astype(src.np)


@pytest.mark.parametrize("dst", ALL, ids=ids(ALL))
def test_cast(dst):
    cases = []
    for src in ALL:
        if dst == src:
            continue
        x = _cast_values(src, dst)
        if dst in LOW:
            want = to_dt(f32(x), dst)
        elif dst == dtypes.bool:
            want = x != 0
        else:
            want = x.astype(dst.np)
        cases.append((f"{src.name} -> {dst.name}", Tensor(x, src).cast(dst), want))
    check_many(cases, dst)


def test_cast_rounding():
    big = np.array([2**53 + 1, 16777217, -16777219, 2**62 + 2**38 + 1], np.int64)
    check(Tensor(big).cast(F32), big.astype(np.float32), F32)
    check(Tensor(big).cast(F64), big.astype(np.float64), F64)
    i = np.array([2049, 2051, -4097, 65504], np.int32)
    check(Tensor(i).cast(F16), i.astype(np.float32).astype(np.float16), F16)
    f = np.array([1.00390625, 1.01171875, 1.0 + 2**-8 + 2**-20, 257.0, 3.0e38], np.float32)
    check(Tensor(f).cast(BF16), bf16_round(f), BF16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3e38 overflows float16 to inf, in numpy as in toony
        check(Tensor(f).cast(F16), f.astype(np.float16), F16)
    d = np.array([0.1, 1 + 2**-30, 3.4028235e38, 1e-50], np.float64)
    check(Tensor(d).cast(F32), d.astype(np.float32), F32)
    nan = np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)
    check(Tensor(nan).cast(dtypes.bool), nan != 0, dtypes.bool)
    check(Tensor(nan).cast(F16), nan.astype(np.float16), F16)
    check(Tensor(nan).cast(F64), nan.astype(np.float64), F64)


BITCASTS = [(F32, dtypes.int32), (F32, dtypes.uint32), (dtypes.int32, F32), (F64, dtypes.int64),
            (dtypes.uint64, F64), (F16, dtypes.int16), (dtypes.uint16, F16), (BF16, dtypes.uint16),
            (dtypes.int16, BF16), (dtypes.int8, dtypes.uint8), (dtypes.uint32, dtypes.int32), (F16, BF16)]


def _bits(x: np.ndarray, dt) -> np.ndarray:
    """Raw bits of host values of dt, as unsigned ints."""
    if dt == BF16:
        return (f32(x).view(np.uint32) >> 16).astype(np.uint16)
    return x.view(f"u{dt.itemsize}")


def _from_bits(bits: np.ndarray, dt) -> np.ndarray:
    if dt == BF16:
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(dt.np)


@pytest.mark.parametrize("src,dst", BITCASTS, ids=[f"{a.name}-{b.name}" for a, b in BITCASTS])
def test_bitcast(src, dst):
    if src.is_float:
        x = rand((6,), src, seed=30)
        x[:2] = [-0.0, 1.0]
    else:
        x = rand((6,), src, seed=30)
        if dst.is_float:  # keep clear of nan patterns, whose payload need not survive
            x = (_bits(x, src) & np.array(0x3FFF, _bits(x, src).dtype)).view(src.np)
    want = _from_bits(_bits(x, src), dst)
    got = Tensor(x, src).bitcast(dst)
    assert got.dtype == dst
    np.testing.assert_array_equal(_bits(got.numpy(), dst), _bits(want, dst))


def test_bitcast_errors():
    with pytest.raises(ValueError):
        Tensor(np.zeros(2, np.float32)).bitcast(dtypes.int16)
    with pytest.raises(TypeError):
        Tensor(np.zeros(2, np.uint8)).bitcast(dtypes.bool)


def test_type_errors():
    f = Tensor(np.zeros(2, np.float32))
    for op in (lambda: f & f, lambda: f | 1, lambda: ~f, lambda: f << 1):
        with pytest.raises(TypeError):
            op()
    b = Tensor(np.array([True, False]))
    with pytest.raises(TypeError):
        b.neg()
    with pytest.raises(TypeError):
        b.floordiv(b)


# ---------------------------------------------------------------- shapes: 0-d, size-0, broadcasting

SHAPE_PAIRS = [((), ()), ((), (3, 4)), ((5,), ()), ((1,), (6,)), ((3, 1), (1, 4)), ((2, 1, 4), (3, 1)),
               ((4, 1, 3, 1), (2, 1, 5)), ((0,), ()), ((0, 3), (1, 3)), ((2, 0, 1), (1, 0, 5)), ((1, 1, 1), (7,))]


@pytest.mark.parametrize("sa,sb", SHAPE_PAIRS, ids=[f"{a}x{b}" for a, b in SHAPE_PAIRS])
def test_broadcasting(sa, sb):
    x, y = rand(sa, F32, seed=31), rand(sb, F32, seed=32)
    a, b = Tensor(x), Tensor(y)
    check(a * b + a, x * y + x, F32)
    check((a < b).where(a, b - 1), np.where(x < y, x, y - 1), F32)
    i, j = rand(sa, dtypes.int16, seed=33), rand(sb, dtypes.int16, seed=34, nonzero=True)
    check(Tensor(i) // Tensor(j), i // j, dtypes.int16)


def test_broadcasting_mismatch_raises():
    with pytest.raises(ValueError):
        Tensor(np.zeros((2, 3), np.float32)) + Tensor(np.zeros((4,), np.float32))
    with pytest.raises(ValueError):
        Tensor(np.zeros((0,), np.float32)) + Tensor(np.zeros((2,), np.float32))


def test_zero_size_tensors():
    for shape in [(0,), (3, 0), (0, 2, 5)]:
        x = np.zeros(shape, np.float32)
        t = Tensor(x)
        assert t.numel() == 0
        check((t + 1).exp(), x, F32)
        check(t.reshape(-1), x.reshape(-1), F32)
        check(t.permute(tuple(reversed(range(len(shape))))), x.transpose(), F32)
        check(t.cast(dtypes.int8), x.astype(np.int8), dtypes.int8)
    e = Tensor(np.zeros((0, 3), np.float32))
    check(e.sum(0), np.zeros(3, np.float32), F32)
    check(e.sum(1), np.zeros(0, np.float32), F32)
    check(e.sum(), np.float32(0), F32)
    check(e.prod(0), np.ones(3, np.float32), F32)
    check(e.max(1), np.zeros(0, np.float32), F32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(e.mean(0), np.full(3, np.nan, np.float32), F32)
    with pytest.raises(ValueError):
        e.max(0)
    check(e.pad(((1, 1), (0, 0)), 5.0), np.full((2, 3), 5.0, np.float32), F32)
    check(Tensor(np.arange(6, dtype=np.int32)).shrink(((3, 3),)), np.zeros(0, np.int32), dtypes.int32)


def test_zero_d_tensors():
    a, b = Tensor(np.float32(2.5)), Tensor(3.0)
    check(a * b + 1, np.float32(8.5), F32)
    check(a.reshape(1, 1).expand(2, 3), np.full((2, 3), 2.5, np.float32), F32)
    check(a.sum(), np.float32(2.5), F32)
    check(a.max(), np.float32(2.5), F32)
    check(a.exp(), np.exp(np.float32(2.5)), F32, rtol=1.2e-7)
    check(a.pad(()), np.float32(2.5), F32)
    check(a.permute(()), np.float32(2.5), F32)
    check(Tensor(7) // 2, np.int64(3), dtypes.int64)
    assert (a < b).item() is True


# ---------------------------------------------------------------- movement ops

MOVE_DTS = (dtypes.bool, dtypes.int8, dtypes.int64, F16, BF16, F32, F64)


def distinct(shape, dt) -> np.ndarray:
    n = int(np.prod(shape))
    if dt == dtypes.bool:
        return (np.arange(n) % 3 == 0).reshape(shape)
    return to_dt(np.arange(n).reshape(shape) % 100 - 30 if dt.kind != "u" else np.arange(n) % 100, dt)


def test_reshape_permute_transpose_expand():
    x = distinct((2, 3, 4), F32)
    t = Tensor(x)
    check(t.reshape(4, 6), x.reshape(4, 6), F32)
    check(t.reshape(-1, 2), x.reshape(-1, 2), F32)
    check(t.reshape((24,)), x.reshape(24), F32)
    check(t.permute(2, 0, 1), x.transpose(2, 0, 1), F32)
    check(t.permute((1, 2, 0)), x.transpose(1, 2, 0), F32)
    check(t.permute(-1, 0, 1), x.transpose(2, 0, 1), F32)
    check(t.transpose(0, 2), x.swapaxes(0, 2), F32)
    check(t.T, x.T, F32)
    check(t.flatten(), x.flatten(), F32)
    y = distinct((3, 1), F32)
    check(Tensor(y).expand(3, 5), np.broadcast_to(y, (3, 5)), F32)
    check(Tensor(y).expand(2, 3, 4), np.broadcast_to(y, (2, 3, 4)), F32)
    check(Tensor(y).expand(-1, 4), np.broadcast_to(y, (3, 4)), F32)
    for bad in (lambda: t.reshape(5, 5), lambda: t.permute(0, 0, 1), lambda: Tensor(y).expand(4, 4)):
        with pytest.raises(ValueError):
            bad()


def test_pad():
    x = distinct((3, 4), F32)
    t = Tensor(x)
    check(t.pad(((1, 2), (0, 3))), np.pad(x, ((1, 2), (0, 3))), F32)
    check(t.pad(((0, 0), (2, 2)), -1.5), np.pad(x, ((0, 0), (2, 2)), constant_values=-1.5), F32)
    check(t.pad(((1, 1), (1, 1)), np.inf), np.pad(x, 1, constant_values=np.inf), F32)
    i = distinct((2, 3), dtypes.int32)
    check(Tensor(i).pad(((1, 0), (0, 2)), 7), np.pad(i, ((1, 0), (0, 2)), constant_values=7), dtypes.int32)
    b = distinct((2, 2), dtypes.bool)
    check(Tensor(b).pad(((1, 1), (0, 0)), True), np.pad(b, ((1, 1), (0, 0)), constant_values=True), dtypes.bool)
    with pytest.raises(ValueError):
        t.pad(((1, 1),))
    with pytest.raises(ValueError):
        t.pad(((-1, 0), (0, 0)))


def test_shrink_flip():
    x = distinct((4, 5, 3), F32)
    t = Tensor(x)
    check(t.shrink(((1, 3), (0, 5), (2, 3))), x[1:3, :, 2:3], F32)
    check(t.flip(0), x[::-1], F32)
    check(t.flip((0, 2)), x[::-1, :, ::-1], F32)
    check(t.flip(-1), x[..., ::-1], F32)
    check(t.flip((0, 1, 2)).shrink(((0, 2), (1, 4), (0, 3))), x[::-1, ::-1, ::-1][0:2, 1:4], F32)
    with pytest.raises(ValueError):
        t.shrink(((0, 5), (0, 5), (0, 3)))
    with pytest.raises(ValueError):
        t.shrink(((3, 2), (0, 5), (0, 3)))


def np_as_strided(x: np.ndarray, shape, strides, offset) -> np.ndarray:
    flat = np.ascontiguousarray(x).reshape(-1)
    return np.lib.stride_tricks.as_strided(flat[offset:], shape, [s * flat.itemsize for s in strides]).copy()


AS_STRIDED = [((3, 3), (4, 1), 0), ((2, 2), (1, 3), 5), ((4,), (0,), 2), ((3, 2), (2, 2), 1),
              ((2, 3, 2), (6, 1, 3), 0), ((5,), (2,), 1), ((0, 3), (3, 1), 4), ((), (), 7), ((2, 2), (-1, 1), 0)]


@pytest.mark.parametrize("shape,strides,offset", AS_STRIDED[:-1], ids=[str(a) for a in AS_STRIDED[:-1]])
def test_as_strided(shape, strides, offset):
    x = distinct((3, 4), F32)
    check(Tensor(x).as_strided(shape, strides, offset), np_as_strided(x, shape, strides, offset), F32)


def test_as_strided_of_a_view_uses_the_view_order():
    x = distinct((3, 4), dtypes.int32)
    v = Tensor(x).permute(1, 0).flip(0)  # the flattened view, not the buffer, is what as_strided indexes
    want = np_as_strided(x.T[::-1], (2, 3), (3, 2), 1)
    check(v.as_strided((2, 3), (3, 2), 1), want, dtypes.int32)


def test_as_strided_out_of_range_raises():
    with pytest.raises(ValueError):
        Tensor(np.zeros(10, np.float32)).as_strided((3, 3), (3, 1), 2)


@pytest.mark.parametrize("dt", MOVE_DTS, ids=ids(MOVE_DTS))
def test_movement_chain(dt):
    x = distinct((4, 6, 5), dt)
    t = Tensor(x, dt)
    got = t.permute(2, 0, 1).flip((0, 2)).pad(((1, 0), (0, 2), (3, 1))).shrink(((0, 5), (1, 6), (2, 9)))
    want = np.pad(x.transpose(2, 0, 1)[::-1, :, ::-1], ((1, 0), (0, 2), (3, 1)))[0:5, 1:6, 2:9]
    check(got, want, dt)
    got2 = got.as_strided((3, 4), (7, 2), 40).reshape(2, 6).expand(3, 2, 6).permute(1, 2, 0)
    want2 = np.broadcast_to(np_as_strided(want, (3, 4), (7, 2), 40).reshape(2, 6), (3, 2, 6)).transpose(1, 2, 0)
    check(got2, want2, dt)


def test_noncontiguous_inputs_to_elementwise():
    x, y = rand((5, 7), F32, seed=35), rand((7, 5), F32, seed=36)
    a = Tensor(x).flip(1).pad(((1, 1), (0, 0)), 2.0).shrink(((1, 6), (0, 7)))  # (5, 7)
    b = Tensor(y).permute(1, 0).flip((0, 1))  # (5, 7)
    xa = np.pad(x[:, ::-1], ((1, 1), (0, 0)), constant_values=2.0)[1:6]
    yb = y.T[::-1, ::-1]
    check(a * b - a / (b.abs() + 1), xa * yb - xa / (np.abs(yb) + 1), F32)
    s = Tensor(x).as_strided((4, 3), (5, 2), 3)
    xs = np_as_strided(x, (4, 3), (5, 2), 3)
    check((s + b.shrink(((0, 4), (0, 3)))).maximum(0.0), np.maximum(xs + yb[:4, :3], 0), F32)


def test_contiguous():
    x = distinct((3, 4), F32)
    c = Tensor(x).permute(1, 0).contiguous()
    check(c, x.T, F32)
    check(c.realize() * 2, x.T * 2, F32)


def test_realize_then_reuse():
    x = rand((3, 4), F32, seed=37)
    t = (Tensor(x) * 2).realize()
    check(t + 1, x * 2 + 1, F32)
    check(t.permute(1, 0).flip(0), (x * 2).T[::-1], F32)
    assert t.realize() is t


# ---------------------------------------------------------------- reductions

def sum_bound(x: np.ndarray, axis, u: float) -> np.ndarray:
    """(n - 1) * u * sum(|x|): the worst-case error of any order of floating-point summation."""
    xa = np.abs(np.asarray(x, np.float64))
    n = xa.size // max(np.sum(xa, axis=axis).size, 1) if xa.size else 0
    return max(n - 1, 1) * u * np.sum(xa, axis=axis) + 1e-30


def check_sum(t: Tensor, x: np.ndarray, axis, keepdim, dt) -> None:
    assert t.dtype == dt
    got = t.numpy().astype(np.float64)
    want = np.sum(np.asarray(x, np.float64), axis=axis, keepdims=keepdim)
    u = {F16: 2.0 ** -24, BF16: 2.0 ** -24, F32: 2.0 ** -24, F64: 2.0 ** -53}[dt]  # 16-bit: accumulates in f32
    bound = np.reshape(sum_bound(x, axis, u), want.shape)
    if dt in LOW:  # plus the final rounding to the 16-bit type
        bound = bound + dt_spacing(want, dt)
    assert got.shape == want.shape
    np.testing.assert_array_less(np.abs(got - want), bound)


AXES = [None, 0, 1, -1, (0, 2), (1, 2), (0, 1, 2), ()]


@pytest.mark.parametrize("axis", AXES, ids=[str(a) for a in AXES])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_axes(axis, keepdim):
    x = rand((3, 4, 5), F32, seed=38)
    check_sum(Tensor(x).sum(axis, keepdim), x, axis, keepdim, F32)


@pytest.mark.parametrize("dt", FLOATS, ids=ids(FLOATS))
def test_sum_float_dtypes(dt):
    x = rand((6, 70), dt, seed=39)
    check_sum(Tensor(x, dt).sum(1), x, 1, False, dt)
    check_sum(Tensor(x, dt).sum(), x, None, False, dt)


@pytest.mark.parametrize("dt", (dtypes.bool,) + INTS, ids=ids((dtypes.bool,) + INTS))
def test_sum_prod_of_integers(dt):
    x = rand((4, 9), dt, seed=40)
    acc = dtypes.uint64 if dt.is_unsigned else dtypes.int64  # like torch for signed ints/bool; numpy for uints
    check(Tensor(x, dt).sum(1), np.sum(x, axis=1, dtype=acc.np), acc)
    check(Tensor(x, dt).sum(), np.sum(x, dtype=acc.np), acc)
    small = rand((4, 5), dt, seed=41, **({} if dt == dtypes.bool else {"lo": 0 if dt.is_unsigned else -3, "hi": 3}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(Tensor(small, dt).prod(1), np.prod(small, axis=1, dtype=acc.np), acc)


def test_sum_with_dtype():
    x = rand((3, 5), dtypes.int8, seed=42)
    check(Tensor(x).sum(1, dtype=dtypes.int16), np.sum(x, axis=1, dtype=np.int16), dtypes.int16)
    f = rand((3, 5), F32, seed=43)
    check(Tensor(f).sum(0, dtype=F64), np.sum(f.astype(np.float64), axis=0), F64)


@pytest.mark.parametrize("dt", ALL, ids=ids(ALL))
def test_max_min(dt):
    x = rand((5, 6), dt, seed=44)
    check(Tensor(x, dt).max(), np.max(x), dt)
    check(Tensor(x, dt).max(1), np.max(x, axis=1), dt)
    check(Tensor(x, dt).min(0, keepdim=True), np.min(x, axis=0, keepdims=True), dt)


def test_max_min_nan_and_inf():
    x = np.array([[1.0, np.nan, 3.0], [-np.inf, -1.0, -2.0], [np.inf, 0.0, 5.0]], np.float32)
    check(Tensor(x).max(1), np.max(x, axis=1), F32)
    check(Tensor(x).min(1), np.min(x, axis=1), F32)
    check(Tensor(x).max(0), np.max(x, axis=0), F32)
    check(Tensor(x).min(), np.min(x), F32)


def test_prod_float():
    x = rand((4, 10), F32, seed=45, lo=0.5, hi=1.5)
    got = Tensor(x).prod(1).numpy().astype(np.float64)
    want = np.prod(x.astype(np.float64), axis=1)
    # each of the n - 1 products rounds once: relative error <= (n - 1) * u (to first order)
    np.testing.assert_array_less(np.abs(got - want), 9 * 2.0 ** -24 * np.abs(want) * 1.0001)


@pytest.mark.parametrize("axis", [None, 0, (1, 2), -1])
def test_mean(axis):
    x = rand((3, 4, 5), F32, seed=46)
    got = Tensor(x).mean(axis).numpy().astype(np.float64)
    want = np.mean(x.astype(np.float64), axis=axis)
    n = x.size // np.asarray(want).size
    # sum bound divided by n, plus the rounding of the division
    bound = (n - 1) * 2.0 ** -24 * np.mean(np.abs(x).astype(np.float64), axis=axis) + 2.0 ** -24 * np.abs(want)
    np.testing.assert_array_less(np.abs(got - want), bound + 1e-30)
    i = rand((3, 4, 5), dtypes.int32, seed=47)
    ti = Tensor(i).mean(axis)
    assert ti.dtype == F32  # integer mean computes in float32 (torch's default float)
    np.testing.assert_allclose(ti.numpy(), np.mean(i, axis=axis), rtol=1e-6)


def test_large_sum_is_accurate():
    # 2**22 uniform values: a blocked / tree sum stays far below the (n - 1) * u * sum|x| worst case;
    # compare with numpy's own float32 pairwise sum, scaled by a generous factor
    x = np.random.default_rng(48).random(1 << 22, dtype=np.float32)
    got = Tensor(x).sum().item()
    exact = np.sum(x.astype(np.float64))
    np_err = abs(float(np.sum(x)) - exact)
    err = abs(got - exact)
    assert err <= max(16 * np_err, 64 * 2.0 ** -24 * exact), (err, np_err)


def test_reduce_of_noncontiguous_and_expanded():
    x = rand((6, 5), F32, seed=49)
    t = Tensor(x).permute(1, 0).flip(1).pad(((0, 0), (1, 2)), 1.0)  # (5, 9)
    xv = np.pad(x.T[:, ::-1], ((0, 0), (1, 2)), constant_values=1.0)
    check_sum(t.sum(1), xv, 1, False, F32)
    check(t.max(0), xv.max(0), F32)
    e = Tensor(rand((1, 5), F32, seed=50)).expand(7, 5)
    check_sum(e.sum(0), np.broadcast_to(e.numpy(), (7, 5)), 0, False, F32)


def test_axis_errors():
    t = Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(IndexError):
        t.sum(2)
    with pytest.raises(IndexError):
        t.max(-3)


@pytest.mark.parametrize("shape,axis", [((4, 8), -1), ((3, 1), -1), ((2, 3, 5), 1), ((5, 6), 0), ((7,), 0)])
def test_softmax(shape, axis):
    x = rand(shape, F32, seed=51, lo=-6, hi=6)
    got = Tensor(x).softmax(axis).numpy().astype(np.float64)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis, keepdims=True))
    want = e / e.sum(axis, keepdims=True)
    n = shape[axis]
    # x - max rounds (u relative, amplified by |x - max| <= 12 through exp), exp adds 1 ulp, the sum of n
    # terms (n - 1) u, the division 0.5 ulp: relative error <= (12 + 2 + 2 * (n - 1) + 1) u
    rel = (15 + 2 * (n - 1)) * 2.0 ** -24
    np.testing.assert_array_less(np.abs(got - want), rel * want + 1e-30)
    np.testing.assert_allclose(got.sum(axis), 1.0, rtol=(n + 15) * 2.0 ** -23)


def test_softmax_large_inputs_are_stable():
    x = np.array([[1000.0, 1001.0, 1002.0], [-1e4, 0.0, 1e4]], np.float32)
    got = Tensor(x).softmax(-1).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[0], [0.09003057, 0.24472847, 0.66524096], rtol=1e-6)
    np.testing.assert_array_equal(got[1], [0.0, 0.0, 1.0])


# ---------------------------------------------------------------- matmul

@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((4,), (4, 3)), ((3, 4), (4,)), ((6,), (6,)),
                                   ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((1, 7), (7, 1)), ((0, 3), (3, 2)),
                                   ((2, 0), (0, 3))])
def test_matmul(sa, sb):
    x, y = rand(sa, F32, seed=52), rand(sb, F32, seed=53)
    got = (Tensor(x) @ Tensor(y)).numpy().astype(np.float64)
    want = x.astype(np.float64) @ y.astype(np.float64)
    k = sa[-1]
    bound = k * 2.0 ** -24 * (np.abs(x).astype(np.float64) @ np.abs(y).astype(np.float64)) + 1e-30
    assert got.shape == want.shape
    np.testing.assert_array_less(np.abs(got - want), bound)


def test_matmul_int_and_noncontiguous():
    x, y = rand((5, 3), dtypes.int32, seed=54, lo=-9, hi=9), rand((4, 5), dtypes.int32, seed=55, lo=-9, hi=9)
    check(Tensor(x).permute(1, 0) @ Tensor(y).T, x.T @ y.T, dtypes.int32)
    check(Tensor(x).flip(0).T @ Tensor(y).flip(1).T, x[::-1].T @ y[:, ::-1].T, dtypes.int32)
    with pytest.raises(ValueError):
        Tensor(x) @ Tensor(y)


# ---------------------------------------------------------------- indirect access

def test_take():
    x = distinct((4, 5), F32)
    idx = np.array([[0, 19, -1], [7, 7, -20]], np.int32)
    check(Tensor(x).take(Tensor(idx)), x.reshape(-1)[idx], F32)
    i64 = np.array([3, 0, 3], np.int64)
    check(Tensor(x).permute(1, 0).take(Tensor(i64)), x.T.reshape(-1)[i64], F32)
    check(Tensor(x).take(Tensor(np.zeros(0, np.int64))), np.zeros(0, np.float32), F32)
    with pytest.raises(TypeError):
        Tensor(x).take(Tensor(np.zeros(2, np.float32)))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gather(dim):
    x = distinct((4, 5), dtypes.int16)
    r = np.random.default_rng(56)
    n = x.shape[dim]
    idx = r.integers(-n, n, size=(3, 4))
    got = Tensor(x).gather(dim, Tensor(idx))
    # torch.gather: out[i][j] = x[idx[i][j]][j] (dim 0), x[i][idx[i][j]] (dim 1); index may be smaller than x
    want = np.empty(idx.shape, x.dtype)
    for i in range(idx.shape[0]):
        for j in range(idx.shape[1]):
            want[i, j] = x[idx[i, j] % n, j] if dim == 0 else x[i, idx[i, j] % n]
    check(got, want, dtypes.int16)


def test_scatter():
    x = np.zeros((3, 5), np.float32)
    idx = np.array([[0, 1, 2, 0, 1], [2, 0, 1, 1, 0]], np.int64)  # a permutation per column: no duplicates
    src = distinct((2, 5), F32) + 100
    got = Tensor(x).scatter(0, Tensor(idx), Tensor(src))
    want = x.copy()
    for i in range(2):
        for j in range(5):
            want[idx[i, j], j] = src[i, j]
    check(got, want, F32)
    check(Tensor(x).scatter(1, Tensor(np.array([[4], [0], [2]])), 9.0),
          np.array([[0, 0, 0, 0, 9], [9, 0, 0, 0, 0], [0, 0, 9, 0, 0]], np.float32), F32)


@pytest.mark.parametrize("dt", (dtypes.int32, dtypes.int64, F32, F64), ids=ids((dtypes.int32, dtypes.int64, F32, F64)))
def test_scatter_add_accumulates_duplicates(dt):
    base = rand((6,), dt, seed=57)
    idx = np.array([0, 2, 2, 5, 0, 0, 2, -1], np.int64)
    vals = rand((8,), dt, seed=58)
    want = base.astype(np.float64 if dt.is_float else dt.np).copy()
    np.add.at(want, idx, vals)
    got = Tensor(base, dt).scatter_flat(Tensor(idx), Tensor(vals, dt), reduce="add")
    if dt.is_int:
        check(got, want.astype(dt.np), dt)
    else:  # atomic adds land in any order: at most 4 terms per element, (4 - 1) * u * sum|terms|
        absum = np.abs(base.astype(np.float64))
        np.add.at(absum, idx, np.abs(vals))
        u = 2.0 ** -24 if dt == F32 else 2.0 ** -53
        np.testing.assert_array_less(np.abs(got.numpy() - want), 3 * u * absum + 1e-300)


def test_scatter_flat_overwrite_and_2d():
    x = distinct((2, 3), dtypes.int8)
    got = Tensor(x).scatter_flat(Tensor(np.array([5, 0, -3])), Tensor(np.array([1, 2, 3], np.int8)))
    want = x.reshape(-1).copy()
    want[[5, 0, -3]] = [1, 2, 3]
    check(got, want.reshape(2, 3), dtypes.int8)
    check(Tensor(x), x, dtypes.int8)  # the source is not modified


def test_assign_strided():
    buf = Tensor(np.zeros(10, np.float32)).realize()
    out = buf.assign_strided((2, 2), (4, 1), 1, Tensor(np.array([[1, 2], [3, 4]], np.float32)))
    check(out, [0, 1, 2, 0, 0, 3, 4, 0, 0, 0], F32)
    out2 = buf.assign_strided((3,), (3,), 0, 9.0)
    check(out2, [9, 1, 2, 9, 0, 3, 9, 0, 0, 0], F32)


def test_assign_strided_of_an_expression_and_overlapping_self_read():
    buf = Tensor(np.arange(8, dtype=np.int32)).realize()
    view = buf.as_strided((8,), (1,), 0).flip(0)  # reads the buffer being written, reversed
    out = buf.assign_strided((8,), (1,), 0, view * 10)
    check(out, np.arange(8, dtype=np.int32)[::-1] * 10, dtypes.int32)


@pytest.mark.parametrize("dt", [dtypes.int8, dtypes.uint8, dtypes.int16, dtypes.uint16, dtypes.float16,
                                dtypes.bfloat16, dtypes.bool])
def test_scatter_add_narrow_dtypes(dt):
    # 1- and 2-byte elements accumulate through a compare-and-swap on their 32-bit word: neighbours that
    # share the word (index 0/1, 2/3) are all hit, several times each, and must not disturb each other
    idx = np.array([0, 1, 1, 3, 3, 3, 2, 0, 5], np.int64)
    got = Tensor.zeros((6,), dt).scatter(0, Tensor(idx), Tensor(np.ones(9, np.float32)).cast(dt), reduce="add")
    want = np.zeros(6, np.float32)
    np.add.at(want, idx, 1.0)
    check(got, want.astype(bool) if dt == dtypes.bool else want.astype(dt.np or np.float32), dt)
