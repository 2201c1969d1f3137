"""Horizontal fusion: independent kernels over the same output shape run as one kernel with several outputs,
and only when moving a kernel earlier cannot change what any kernel reads."""

import numpy as np

from toony_core import Tensor, schedule
from toony_core.realize import Stats, realize

R = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def launched(*tensors: Tensor) -> int:
    before = Stats.kernels_launched
    realize(*tensors)
    return Stats.kernels_launched - before


def test_independent_elementwise_outputs_share_one_kernel() -> None:
    a, b = rand(8, 16), rand(8, 16)
    x, y = Tensor(a) * 2, Tensor(b).exp() + Tensor(a)
    assert [it.name for it in schedule(x, y)] == ["E_8_16_x2"]
    assert launched(x, y) == 1
    np.testing.assert_allclose(x.numpy(), a * 2, rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), np.exp(b) + a, rtol=1e-5)


def test_sibling_reductions_share_one_kernel() -> None:
    # a bias gradient and a norm's weight gradient: both sum over the batch, each into its own buffer
    dy, xhat = rand(64, 32), rand(64, 32)
    gb, gw = Tensor(dy).sum(0), (Tensor(dy) * Tensor(xhat)).sum(0)
    assert launched(gb, gw) == 1
    np.testing.assert_allclose(gb.numpy(), dy.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw.numpy(), (dy * xhat).sum(0), rtol=1e-5, atol=1e-5)


def test_a_kernel_reading_another_is_not_merged_with_it() -> None:
    a = rand(8, 16)
    x = (Tensor(a) * 2).sum(1, keepdim=True)  # (8, 1): a reduction the next kernel reads in another shape
    y = Tensor(a) - x.expand(8, 16).T.contiguous().T  # forced through a buffer of x
    z = y * 3
    realize(x, y, z)
    np.testing.assert_allclose(z.numpy(), (a - (a * 2).sum(1, keepdims=True)) * 3, rtol=1e-5, atol=1e-5)


def test_a_write_does_not_move_before_a_read_of_the_old_contents() -> None:
    # kernel 0 computes p (the write's shape), kernel 1 reads the buffer's old contents in another shape, kernel
    # 2 overwrites the buffer: kernel 2 must not join kernel 0, or kernel 1 would read the new contents
    base, other = rand(128), rand(128)
    buf = Tensor(base.copy())
    p = Tensor(other) + 1
    old_sums = buf.reshape(8, 16).sum(1)
    written = buf.assign_strided((128,), (1,), 0, Tensor(other) * 2)
    assert launched(p, old_sums, written) == 3
    np.testing.assert_allclose(old_sums.numpy(), base.reshape(8, 16).sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(written.numpy(), other * 2, rtol=1e-6)
    np.testing.assert_allclose(p.numpy(), other + 1, rtol=1e-6)


def test_a_write_with_nothing_in_between_joins_the_earlier_kernel() -> None:
    base, other = rand(128), rand(128)
    buf = Tensor(base.copy())
    p = Tensor(other) + 1
    written = buf.assign_strided((128,), (1,), 0, Tensor(other) * 2)
    assert launched(p, written) == 1
    np.testing.assert_allclose(written.numpy(), other * 2, rtol=1e-6)
    np.testing.assert_allclose(p.numpy(), other + 1, rtol=1e-6)
