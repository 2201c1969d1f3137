"""Scatters that combine with the target (reduce = add, mul, max, min), against numpy's ufunc.at."""

from __future__ import annotations

import numpy as np
import pytest

from toony_core import Tensor, dtypes
from toony_core.dtype import DType

ALL = (dtypes.bool, dtypes.int8, dtypes.uint8, dtypes.int16, dtypes.uint16, dtypes.int32, dtypes.uint32, dtypes.int64,
       dtypes.uint64, dtypes.float16, dtypes.bfloat16, dtypes.float32, dtypes.float64)
UFUNC = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
BOOL_UFUNC = {"add": np.logical_or, "mul": np.logical_and, "max": np.logical_or, "min": np.logical_and}
# neighbours sharing a 32-bit word (0/1, 2/3) are hit several times each: narrow types must not disturb them
IDX = np.array([0, 1, 1, 3, 3, 3, 2, 0, 5, 4, 4, -1], np.int64)


def _values(n: int, dt: DType, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo = 0 if dt.kind in "bu" else -5
    vals = rng.integers(lo, 6, n)
    if dt == dtypes.bool:
        return vals.astype(bool)
    return vals.astype(np.float32 if dt == dtypes.bfloat16 else dt.np)  # small integers: exact in every dtype


@pytest.mark.parametrize("reduce", list(UFUNC))
@pytest.mark.parametrize("dt", ALL, ids=[d.name for d in ALL])
def test_scatter_flat_reduce_is_exact(dt: DType, reduce: str) -> None:
    # small integer values keep every float product and sum exact, so any order of the atomics gives numpy's
    base, vals = _values(7, dt, 1), _values(len(IDX), dt, 2)
    got = Tensor(base, dt).scatter_flat(Tensor(IDX), Tensor(vals, dt), reduce=reduce).numpy()
    want = base.copy()
    with np.errstate(over="ignore"):
        (BOOL_UFUNC if dt == dtypes.bool else UFUNC)[reduce].at(want, IDX, vals)
    np.testing.assert_array_equal(got.astype(want.dtype), want)


def test_integer_products_wrap_like_c() -> None:
    base = np.array([3, 1], np.int32)
    vals = np.array([1 << 20, 1 << 20, 7, -9], np.int32)
    got = Tensor(base).scatter_flat(Tensor(np.array([0, 0, 1, 1])), Tensor(vals), reduce="mul").numpy()
    with np.errstate(over="ignore"):
        want = base.copy()
        np.multiply.at(want, np.array([0, 0, 1, 1]), vals)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dt", (dtypes.float16, dtypes.float32, dtypes.float64), ids=["float16", "float32", "float64"])
@pytest.mark.parametrize("reduce", ["max", "min"])
def test_max_min_propagate_nan(dt: DType, reduce: str) -> None:
    base = np.array([1.0, np.nan, 2.0], np.float32)
    vals = np.array([np.nan, 5.0, 3.0, -1.0], np.float32)
    idx = np.array([0, 1, 2, 2])
    got = Tensor(base, dt).scatter_flat(Tensor(idx), Tensor(vals, dt), reduce=reduce).numpy()
    want = base.copy()
    with np.errstate(invalid="ignore"):
        UFUNC[reduce].at(want, idx, vals)  # numpy's maximum/minimum propagate NaN too
    np.testing.assert_array_equal(got.astype(np.float32), want)


def test_scatters_of_one_tensor_write_their_own_copies() -> None:
    # hash-consing makes x.flatten().contiguous() one node: each scatter's target must still be its own buffer
    x = Tensor(np.zeros(4, np.float32))
    i = Tensor(np.array([0, 1]))
    a = x.scatter_flat(i, Tensor(np.array([1.0, 2.0], np.float32)), "add")
    b = x.scatter_flat(i, Tensor(np.array([10.0, 20.0], np.float32)), "max")
    plain = x.flatten().contiguous()
    np.testing.assert_array_equal((a + b * 100 + plain).numpy(), [1001.0, 2002.0, 0.0, 0.0])


def test_unknown_reduce_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'mul'"):
        Tensor(np.zeros(2, np.float32)).scatter_flat(Tensor(np.array([0])), Tensor(np.ones(1, np.float32)), "prod")
