"""The scheduler: how many kernels representative graphs become (the counts the issue requires), what they are
called, that nothing runs until realize, and that results are right after fusion.

Kernel-name lists are expecttest golden values: when the scheduler changes on purpose, regenerate them with
EXPECTTEST_ACCEPT=1 pytest tests/toony_core/test_schedule.py and review the diff. Names carry the work-group
choices, which depend on the device: the goldens are for PoCL (what CI runs on); the counts hold everywhere.
"""

import expecttest
import numpy as np
import pytest

from toony_core import Tensor, device, dtypes, schedule
from toony_core.realize import Stats
from toony_core.runtime import Buffer

R = np.random.default_rng(0)
ON_POCL = "portable computing language" in device().name.lower() or "pocl" in device().name.lower()


def rand(*shape) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def names(*tensors: Tensor) -> str:
    return " ".join(item.name for item in schedule(*tensors))


def launched(t: Tensor) -> int:
    """Realize t and return how many kernels that ran."""
    before = Stats.kernels_launched
    t.realize()
    return Stats.kernels_launched - before


def chain20(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    x = a * 1.5 + b
    for i in range(6):
        x = (x - c * 0.25).maximum(-2.0) * (1.0 + i) / 3.0
    return x.abs().sqrt() + c.exp() * 0.5 - b.minimum(a)


def chain20_np(a, b, c):
    x = a * np.float32(1.5) + b
    for i in range(6):
        x = np.maximum(x - c * np.float32(0.25), np.float32(-2.0)) * np.float32(1.0 + i) / np.float32(3.0)
    return np.sqrt(np.abs(x)) + np.exp(c) * np.float32(0.5) - np.minimum(b, a)


class TestRequiredCounts(expecttest.TestCase):
    def test_sum_of_elementwise_is_one_kernel(self):
        a, b = rand(64, 32), rand(64, 32)
        t = (Tensor(a) * 2 + Tensor(b)).sum(axis=1)
        self.assertEqual(len(schedule(t)), 1)
        if ON_POCL:
            self.assertExpectedInline(names(t), """r_64_r32""")
        self.assertEqual(launched(t), 1)
        np.testing.assert_allclose(t.numpy(), (a * 2 + b).sum(1), rtol=1e-5, atol=1e-5)

    def test_matmul_by_broadcast_and_sum_is_one_kernel(self):
        a, b = rand(16, 24), rand(24, 8)
        ta, tb = Tensor(a), Tensor(b)
        t = (ta.reshape(16, 24, 1).expand(16, 24, 8) * tb.reshape(1, 24, 8).expand(16, 24, 8)).sum(1)
        items = schedule(t)
        self.assertEqual(len(items), 1)
        if ON_POCL:
            self.assertExpectedInline(names(t), """r_16_8_r24""")
        # no materialized broadcast: the kernel binds the output and the two inputs, nothing of 16*24*8
        self.assertEqual(sorted(buf.nbytes for buf in items[0].buffers), sorted([16 * 8 * 4, 16 * 24 * 4, 24 * 8 * 4]))
        self.assertEqual(names(ta @ tb), names(t))
        np.testing.assert_allclose(t.numpy(), a @ b, rtol=1e-5, atol=1e-5)

    def test_softmax_last_axis_is_one_kernel(self):
        x = rand(64, 32)
        t = Tensor(x).softmax(-1)
        self.assertEqual(len(schedule(t)), 1)
        if ON_POCL:
            self.assertExpectedInline(names(t), """r_64_l32_r32_r32""")
        e = np.exp(x - x.max(-1, keepdims=True))
        np.testing.assert_allclose(t.numpy(), e / e.sum(-1, keepdims=True), rtol=1e-5)

    def test_chain_of_20_elementwise_ops_on_views_is_one_kernel(self):
        a, b, c = rand(24, 16), rand(16, 24), rand(20, 12)
        ta = Tensor(a).permute(1, 0)  # (16, 24)
        tb = Tensor(b).flip((0, 1))  # (16, 24)
        tc = Tensor(c).pad(((0, 0), (6, 6)), 0.5).shrink(((2, 18), (0, 24)))  # (16, 24)
        t = chain20(ta, tb, tc)
        n_ops = sum(1 for u in t.uop.toposort() if u.op.name not in ("BUFFER", "CONST", "RESHAPE", "PERMUTE",
                                                                       "EXPAND", "PAD", "SHRINK", "FLIP"))
        self.assertGreaterEqual(n_ops, 20)
        self.assertEqual(len(schedule(t)), 1)
        if ON_POCL:
            self.assertExpectedInline(names(t), """E_16_24""")
        ca = np.pad(c, ((0, 0), (6, 6)), constant_values=0.5)[2:18]
        np.testing.assert_allclose(t.numpy(), chain20_np(a.T, b[::-1, ::-1], ca), rtol=1e-5, atol=1e-6)

    def test_large_full_sum_is_two_kernels(self):
        x = R.random(1 << 20, dtype=np.float32)
        t = Tensor(x).sum()
        self.assertEqual(len(schedule(t)), 2)  # partial sums in parallel, then the partials
        if ON_POCL:
            self.assertExpectedInline(names(t), """r_256_r4096 r_1_r256""")
        self.assertEqual(launched(t), 2)
        np.testing.assert_allclose(t.item(), np.sum(x.astype(np.float64)), rtol=1e-6)


@pytest.mark.skipif(not ON_POCL, reason="kernel names (work-group choices) were recorded on PoCL")
class TestSchedules(expecttest.TestCase):
    def test_elementwise_and_movement_only(self):
        a = Tensor(rand(8, 16))
        self.assertExpectedInline(names(a + 1), """E_8_16""")
        self.assertExpectedInline(names(a.permute(1, 0).flip(0).pad(((1, 1), (0, 0))) * 2), """E_18_8""")
        self.assertExpectedInline(names(a.reshape(2, 64).expand(3, 2, 64) + 1), """E_3_2_64""")

    def test_reductions(self):
        x = Tensor(rand(8, 16))
        self.assertExpectedInline(names(x.sum()), """r_1_r8_r16""")
        self.assertExpectedInline(names(x.max(0)), """r_16_r8""")
        self.assertExpectedInline(names(x - x.mean(1, keepdim=True)), """r_8_l16_r16""")
        # a reduction reshaped into another reduction: materialized in between
        self.assertExpectedInline(names(x.sum(1).reshape(2, 4).sum(1)), """r_8_r16 r_2_r4""")
        # two reductions over different axes broadcast against each other
        self.assertExpectedInline(names(x.sum(0).reshape(1, 16) + x.sum(1).reshape(8, 1)), """r_8_r16 r_16_l8_r8""")

    def test_contiguous_and_several_outputs(self):
        x = Tensor(rand(8, 16))
        self.assertExpectedInline(names((x.T.contiguous() + 1).sum()), """E_16_8 r_1_r16_r8""")
        self.assertExpectedInline(names(x * 2, x + 1), """E_8_16_x2""")

    def test_costly_prologue_of_a_matmul_is_computed_once(self):
        # erf(x @ w1) read by the second matmul once per output column: computed once into its own buffer
        # (fused, every erf would be evaluated 24 times); a cheap scale stays fused into the matmul's loads
        x, w1, w2 = Tensor(rand(8, 16)), Tensor(rand(16, 32)), Tensor(rand(32, 24))
        self.assertExpectedInline(names((x @ w1).erf() @ w2), """r_8_32_r16 E_8_32 r_8_24_r32""")
        self.assertExpectedInline(names((x * 0.5) @ w1), """r_8_32_r16""")
        # softmax then @ v: the softmax's exp and divide are computed once, its row reductions stay fused
        self.assertExpectedInline(names((x @ w1).softmax(-1) @ w2), """r_8_32_r16 r_8_l32_r32_r32 r_8_24_r32""")
        from math import erf
        ref = np.vectorize(erf)(x.numpy().astype(np.float64) @ w1.numpy()) @ w2.numpy()
        np.testing.assert_allclose(((x @ w1).erf() @ w2).numpy(), ref, rtol=1e-4, atol=1e-4)

    def test_layer_norm_feeding_a_matmul_through_a_merging_reshape(self):
        # (b, t, d) normalized per row, merged to (b*t, d) for the matmul: the norm is one kernel (its mean and
        # variance loops fused), the matmul a second; the merge keeps the rows' identity, so the norm's
        # reductions are not cut into kernels of their own
        x, w = Tensor(rand(2, 8, 16)), Tensor(rand(16, 12))
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) * (x - mean)).mean(-1, keepdim=True)
        y = ((x - mean) * (var + 1e-5).rsqrt()).reshape(16, 16) @ w
        self.assertExpectedInline(names(y), """r_2_8_l16_r16_r16 r_16_12_r16""")
        xn = x.numpy().astype(np.float64)
        ref = ((xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-5)).reshape(16, 16)
        np.testing.assert_allclose(y.numpy(), ref @ w.numpy(), rtol=1e-4, atol=1e-4)

    def test_reduction_over_a_large_axis_per_row(self):
        self.assertExpectedInline(names(Tensor(rand(2, 1 << 20)).sum(1)), """r_2_256_r4096 r_2_r256""")
        self.assertExpectedInline(names(Tensor(rand(2, 1 << 19)).sum(1)), """r_2_r524288""")


def test_square_is_a_multiply():
    # pow(x, 2) is exactly x * x; as a multiply it vectorizes where the pow() library call does not
    from toony_core.lower import lower
    x = Tensor(rand(4, 4))
    ast = schedule(x ** 2)[0].ast
    ops = {u.op.name for u in lower(ast).uops.toposort()}
    assert "POW" not in ops and "MUL" in ops
    np.testing.assert_array_equal((x ** 2).numpy(), x.numpy() * x.numpy())


def test_schedule_runs_nothing():
    before = Stats.kernels_launched
    t = (Tensor(rand(4, 4)) * 3).sum()
    assert len(schedule(t)) == 1
    assert Stats.kernels_launched == before


def test_realized_input_is_not_recomputed():
    x = rand(8, 8)
    y = (Tensor(x) * 2 + 1).realize()
    z = y.exp().sum(1)
    assert len(schedule(z)) == 1  # y is a buffer now; its kernel is not part of z's schedule
    assert launched(z) == 1
    np.testing.assert_allclose(z.numpy(), np.exp(x * 2 + 1).sum(1), rtol=1e-5)
    assert schedule(y) == []
    assert launched(y) == 0  # realizing a realized tensor runs nothing


def test_shared_reduction_feeding_two_outputs():
    x = rand(16, 16)
    t = Tensor(x)
    s = t.sum(1, keepdim=True)
    a, b = t / s, t * s
    items = schedule(a, b)
    assert 2 <= len(items) <= 3
    np.testing.assert_allclose(a.numpy(), x / x.sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(b.numpy(), x * x.sum(1, keepdims=True), rtol=1e-5)


def test_intermediate_buffers_are_reused():
    # a chain of forced materializations: each intermediate dies after the next kernel reads it, so the plan
    # needs at most two scratch buffers of that size, however long the chain
    x = rand(32, 32)
    t = Tensor(x)
    for _ in range(6):
        t = (t.T * 1.01).contiguous()
    items = schedule(t)
    assert len(items) == 6
    intermediates = {id(item.buffers[0]) for item in items[:-1]}  # the output is bound first
    assert len(intermediates) <= 2, len(intermediates)
    assert id(items[-1].buffers[0]) not in intermediates  # the result gets its own buffer
    np.testing.assert_allclose(t.numpy(), x.T.T.T.T.T.T * np.float32(1.01) ** 6, rtol=1e-5)


def test_schedule_items_bind_output_first():
    a = Tensor(rand(4, 8))
    items = schedule(a.sum(1))
    assert isinstance(items[0].buffers[0], Buffer)
    assert items[0].buffers[0].nbytes == 4 * 4


def test_realize_the_same_tensor_twice():
    from toony_core.realize import realize
    t = Tensor(np.ones(4, np.float32)) + 1
    before = Stats.kernels_launched
    realize(t, t)
    assert Stats.kernels_launched - before == 1
    np.testing.assert_array_equal(t.numpy(), np.full(4, 2.0, np.float32))


def test_float_constants_are_read_from_a_table_so_new_values_reuse_the_kernel():
    # an optimizer's bias correction changes every step: the kernel must not be rebuilt for each value
    from toony_core.realize import _kernels
    x = Tensor(rand(64))
    (x * 0.25 + 1.75).numpy()
    before = len(_kernels)
    for c in (0.1, 0.3, 1e-3):
        np.testing.assert_allclose((x * c + 1.75).numpy(), x.numpy() * np.float32(c) + np.float32(1.75), rtol=1e-6)
    assert len(_kernels) == before
    # integral values (sizes, counts) stay literals in the source
    from toony_core.realize import get_kernel
    assert "3.0f" in get_kernel(schedule(x * 3.0)[0].ast).source


def test_a_schedule_leaves_no_cycles_holding_buffers():
    # graph rewrites and the scheduler's rule closures must not keep intermediate buffers alive until the next
    # garbage collection (a long chain of realizes would hold every chunk's buffers)
    import gc

    from toony_core import runtime
    gc.collect()
    gc.disable()
    try:
        x = Tensor(rand(64))
        for _ in range(20):
            x = ((x + 1) * 2).contiguous()
            x.realize()
        live = runtime.memory_allocated()
        assert live <= 4 * 64 * 4, live  # x, its input, at most a pair of in-flight buffers
    finally:
        gc.enable()


def test_lifted_constants_in_scatter_indices_and_realized_constants():
    # a float constant in a scatter's index computation, and a constant another kernel of the same schedule
    # realizes, are both handled (the table covers every constant the kernel reads)
    x = Tensor(rand(8))
    idx = ((Tensor.arange(8).cast(dtypes.float32) * 0.5).floor()).cast(dtypes.int64)
    got = Tensor.zeros((4,)).scatter_flat(idx, x, reduce="add").numpy()
    want = np.zeros(4, np.float32)
    np.add.at(want, np.floor(np.arange(8) * 0.5).astype(np.int64), x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-6)
    c = Tensor.full((), 0.25, dtypes.float32)
    a, b = c.contiguous(), (x * c).contiguous()
    from toony_core.realize import realize
    realize(a, b)
    np.testing.assert_allclose(b.numpy(), x.numpy() * np.float32(0.25))
