"""Random numbers on the toony device: distributions, reproducibility, generator state, dropout, randperm.

The device stream is its own (counter-based), so nothing is compared with the CPU stream: distributions are
checked statistically with bounds of about five standard errors (a false failure is a < 1e-6 event), and
reproducibility is checked exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import torch_toony

DEV = "toony"
N = 1 << 16
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def strict(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TOONY_FALLBACK", "0")


def moments_ok(x: torch.Tensor, mean: float, var: float, fourth: float | None = None) -> None:
    """Sample mean and variance within five standard errors of the true ones (fourth: the 4th central moment)."""
    x = x.double().flatten().cpu()
    n = x.numel()
    assert abs(x.mean().item() - mean) < 5 * math.sqrt(var / n), (x.mean().item(), mean)
    m4 = 3 * var * var if fourth is None else fourth
    # the sample variance's standard error, plus its O(1/n) term (which is all there is for a fair coin)
    assert abs(x.var().item() - var) < 5 * math.sqrt((m4 - var * var) / n) + 5 * var / n, (x.var().item(), var)


def ks_ok(x: torch.Tensor, cdf) -> None:
    """Kolmogorov-Smirnov: sup |F_n - F| below the 0.01% critical value 2.3 / sqrt(n) (1.95 at 1%)."""
    s = x.double().flatten().cpu().sort().values
    n = s.numel()
    f = cdf(s)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum((i / n - f).abs(), (f - (i - 1) / n).abs()).max().item()
    assert d < 2.3 / math.sqrt(n), d


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


# ---------------------------------------------------------------- uniform and normal


@pytest.mark.parametrize("dtype", FLOATS)
def test_rand_is_uniform(dtype: torch.dtype):
    x = torch.rand(N, device=DEV, dtype=dtype)
    assert x.dtype == dtype and x.device.type == DEV
    c = x.cpu()
    assert c.min() >= 0 and c.max() < 1
    moments_ok(c, 0.5, 1 / 12, fourth=1 / 80)
    if dtype in (torch.float32, torch.float64):
        ks_ok(c, lambda s: s)


def test_uniform_range_and_noncontiguous():
    x = torch.empty(300, 400, device=DEV).t()  # a transposed (non-contiguous) target
    x.uniform_(-3, 5)
    c = x.cpu()
    assert c.min() >= -3 and c.max() < 5
    moments_ok(c, 1.0, 64 / 12, fourth=8 ** 4 / 80)
    # `to` is excluded in the output type: 1.001 rounds to the half after 1.0, so every value is 1.0
    h = torch.empty(1000, device=DEV, dtype=torch.float16).uniform_(1, 1.001).cpu()
    assert torch.equal(h, torch.ones(1000, dtype=torch.float16))
    torch.empty(0, device=DEV).uniform_()  # empty: nothing to draw
    z = torch.zeros((), device=DEV).uniform_(2, 3)
    assert 2 <= z.item() < 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_randn_is_normal(dtype: torch.dtype):
    x = torch.randn(N, device=DEV, dtype=dtype).cpu()
    moments_ok(x, 0.0, 1.0)
    if dtype != torch.float16:
        ks_ok(x, normal_cdf)
    y = torch.empty(N, device=DEV, dtype=dtype).normal_(3, 0.5).cpu()
    moments_ok(y, 3.0, 0.25)


def test_normal_tensor_forms():
    mean = torch.linspace(-2, 2, 256).repeat(256).to(DEV)
    std = torch.full((256 * 256,), 0.5).to(DEV)
    for z, (mu, sigma) in [(torch.normal(mean, 0.5), (mean, 0.5)), (torch.normal(1.0, std), (1.0, std)),
                           (torch.normal(mean, std), (mean, std))]:
        assert z.shape == (N,) and z.device.type == DEV
        moments_ok((z - mu) / sigma, 0.0, 1.0)
    out = torch.empty(N, device=DEV)
    torch.normal(mean, std, out=out)
    moments_ok((out - mean) / std, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="std"):
        torch.empty(3, device=DEV).normal_(0, -1)


def test_adjacent_values_are_uncorrelated():
    x = torch.rand(N, device=DEV).cpu().double() - 0.5
    r = (x[1:] * x[:-1]).mean().item() / x.var().item()
    assert abs(r) < 5 / math.sqrt(N)
    a, b = torch.rand(N, device=DEV).cpu().double() - 0.5, torch.rand(N, device=DEV).cpu().double() - 0.5
    assert abs((a * b).mean().item() / (a.std() * b.std()).item()) < 5 / math.sqrt(N)


# ---------------------------------------------------------------- reproducibility and generator state


def test_manual_seed_reproduces_and_calls_differ():
    torch.manual_seed(1234)
    a, b = torch.rand(1000, device=DEV).cpu(), torch.randn(1000, device=DEV).cpu()
    torch.manual_seed(1234)
    a2, b2 = torch.rand(1000, device=DEV).cpu(), torch.randn(1000, device=DEV).cpu()
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert not torch.equal(a, torch.rand(1000, device=DEV).cpu())  # successive calls differ
    torch.manual_seed(1235)
    assert not torch.equal(a, torch.rand(1000, device=DEV).cpu())  # other seeds differ
    torch.toony.manual_seed(1234)
    assert torch.equal(a, torch.rand(1000, device=DEV).cpu())
    assert torch.toony.initial_seed() == 1234


def test_generator_state_and_objects():
    torch.manual_seed(7)
    state = torch.toony.get_rng_state()
    a = torch.rand(100, device=DEV).cpu()
    torch.toony.set_rng_state(state)
    assert torch.equal(a, torch.rand(100, device=DEV).cpu())
    with torch.random.fork_rng(device_type="toony"):
        torch.rand(5, device=DEV)
    after_fork = torch.rand(100, device=DEV).cpu()
    torch.toony.set_rng_state(state)
    torch.rand(100, device=DEV)
    assert torch.equal(after_fork, torch.rand(100, device=DEV).cpu())  # fork_rng restored the state

    g = torch.Generator(device=DEV).manual_seed(99)
    x = torch.rand(50, device=DEV, generator=g).cpu()
    assert g.get_offset() == 50  # one 64-bit word per float32
    torch.rand(50, device=DEV)  # the default generator does not touch g
    g.manual_seed(99)
    assert torch.equal(x, torch.rand(50, device=DEV, generator=g).cpu())
    with pytest.raises(RuntimeError, match="generator"):
        torch.rand(3, device=DEV, generator=torch.Generator())


def test_seed_changes_do_not_compile_new_kernels():
    """The seed and offset come from a buffer, so a new draw reuses the compiled kernel."""
    from toony_core.runtime import CompileStats
    torch.rand(777, device=DEV).cpu()
    before = CompileStats.built + CompileStats.loaded
    for s in range(3):
        torch.manual_seed(s)
        torch.rand(777, device=DEV).cpu()
    assert CompileStats.built + CompileStats.loaded == before


# ---------------------------------------------------------------- bernoulli, random_, exponential


def test_bernoulli():
    x = torch.empty(N, device=DEV).bernoulli_(0.3).cpu()
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    moments_ok(x, 0.3, 0.21, fourth=0.3 * 0.7 * (0.7 ** 3 + 0.3 ** 3))
    assert torch.empty(100, device=DEV).bernoulli_(0.0).cpu().sum() == 0
    assert torch.empty(100, device=DEV).bernoulli_(1.0).cpu().sum() == 100
    p = torch.linspace(0, 1, 16).repeat(N // 16)
    b = torch.bernoulli(p.to(DEV)).cpu()  # a probability per element
    for k in (0, 5, 15):
        col = b[k::16]
        q = p[k].item()
        assert abs(col.mean().item() - q) <= 5 * math.sqrt(q * (1 - q) / col.numel()) + 1e-9
    ints = torch.zeros(N, dtype=torch.int64, device=DEV).bernoulli_(p.to(DEV)).cpu()
    assert ints.dtype == torch.int64 and abs(ints.double().mean().item() - 0.5) < 5 * 0.5 / math.sqrt(N)
    bools = torch.empty(N, dtype=torch.bool, device=DEV).bernoulli_(0.25).cpu()
    moments_ok(bools.double(), 0.25, 0.1875, fourth=0.25 * 0.75 * (0.75 ** 3 + 0.25 ** 3))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8, torch.float32,
                                   torch.float16])
def test_randint_covers_range_uniformly(dtype: torch.dtype):
    x = torch.randint(-3, 5, (N,), device=DEV, dtype=dtype).cpu() if dtype != torch.uint8 else \
        torch.randint(2, 10, (N,), device=DEV, dtype=dtype).cpu()
    assert x.dtype == dtype
    lo = -3 if dtype != torch.uint8 else 2
    counts = torch.bincount((x.long() - lo), minlength=8)
    assert counts.numel() == 8  # nothing outside [lo, lo + 8)
    expected = N / 8
    chi2 = ((counts.double() - expected) ** 2 / expected).sum().item()
    assert chi2 < 35  # 7 degrees of freedom: P(chi2 > 35) ~ 1e-5


def test_random_default_ranges():
    i64 = torch.empty(N, dtype=torch.int64, device=DEV).random_().cpu()
    assert i64.min() >= 0 and i64.double().mean().item() == pytest.approx(2.0 ** 62, rel=0.02)
    i8 = torch.empty(N, dtype=torch.int8, device=DEV).random_().cpu()
    assert i8.min() == 0 and i8.max() == 127
    f = torch.empty(N, device=DEV).random_().cpu()  # [0, 2**24]
    assert f.min() >= 0 and f.max() <= 2 ** 24 and f.max() > 2 ** 23 and torch.equal(f, f.round())
    b = torch.empty(N, dtype=torch.bool, device=DEV).random_().cpu()
    assert 0.45 < b.double().mean().item() < 0.55
    full = torch.empty(N, dtype=torch.int64, device=DEV).random_(-(2 ** 63), None).cpu()
    assert (full < 0).double().mean().item() == pytest.approx(0.5, abs=0.02)
    to = torch.empty(N, dtype=torch.int16, device=DEV).random_(7).cpu()
    assert to.min() == 0 and to.max() == 6
    with pytest.raises(RuntimeError):
        torch.empty(3, device=DEV).random_(5, 2)


def test_exponential():
    x = torch.empty(N, device=DEV).exponential_(2.0).cpu()
    assert x.min() > 0
    moments_ok(x, 0.5, 0.25, fourth=9 / 16)
    ks_ok(x, lambda s: 1 - torch.exp(-2 * s))


def test_log_normal_cauchy_geometric():
    x = torch.empty(N, device=DEV).log_normal_(0.5, 0.3).cpu()
    assert x.min() > 0
    moments_ok(x.double().log(), 0.5, 0.09)
    c = torch.empty(N, device=DEV).cauchy_(1.0, 2.0).cpu().double()
    ks_ok(c, lambda s: 0.5 + torch.atan((s - 1.0) / 2.0) / math.pi)
    g = torch.empty(N, device=DEV).geometric_(0.25).cpu().double()
    assert g.min() >= 1 and torch.equal(g, g.round())
    moments_ok(g, 4.0, 0.75 / 0.0625, fourth=(1 - 0.25) * (0.25 ** 2 - 9 * 0.25 + 9) / 0.25 ** 4)


def test_multinomial():
    p = torch.tensor([0.1, 0.0, 0.6, 0.3])
    s = torch.multinomial(p.to(DEV), N, replacement=True).cpu()
    assert s.dtype == torch.int64 and s.shape == (N,)
    counts = torch.bincount(s, minlength=4).double()
    assert counts[1] == 0  # a zero probability is never drawn
    keep = p > 0
    expected = p[keep].double() * N
    assert (((counts[keep] - expected) ** 2) / expected).sum().item() < 25  # 2 dof: P ~ 4e-6
    rows = torch.rand(5, 12) + 0.01
    w = torch.multinomial(rows.to(DEV), 12).cpu()  # without replacement: each row a permutation
    assert torch.equal(w.sort(1).values, torch.arange(12).expand(5, 12))
    two = torch.stack([torch.multinomial(p.to(DEV), 2) for _ in range(50)]).cpu()
    assert (two[:, 0] != two[:, 1]).all() and (two != 1).all()
    out = torch.empty(0, dtype=torch.long, device=DEV)
    torch.multinomial(rows.to(DEV), 3, replacement=True, out=out)
    assert out.shape == (5, 3) and out.cpu().max() < 12


# ---------------------------------------------------------------- dropout and randperm


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_rate_and_scaling(p: float):
    x = torch.rand(256, 256) + 0.5
    xd = x.to(DEV).requires_grad_()
    out = F.dropout(xd, p, training=True)
    c = out.detach().cpu()
    kept = c != 0
    moments_ok(kept.double(), 1 - p, p * (1 - p), fourth=p * (1 - p) * (p ** 3 + (1 - p) ** 3))
    torch.testing.assert_close(c[kept], x[kept] / (1 - p))
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(xd.grad.cpu(), kept.float() / (1 - p))  # native_dropout_backward: mask * scale


def test_dropout_edges():
    x = torch.randn(64, 64).to(DEV)
    assert torch.equal(F.dropout(x, 0.5, training=False).cpu(), x.cpu())
    assert torch.equal(F.dropout(x, 0.0, training=True).cpu(), x.cpu())
    assert F.dropout(x, 1.0, training=True).cpu().abs().sum() == 0
    out, mask = torch.ops.aten.native_dropout(x, 0.25, True)
    assert mask.dtype == torch.bool and out.shape == x.shape
    torch.testing.assert_close(out.cpu(), x.cpu() * mask.cpu() / 0.75)
    torch.manual_seed(3)
    a = F.dropout(x, 0.5, training=True).cpu()
    torch.manual_seed(3)
    assert torch.equal(a, F.dropout(x, 0.5, training=True).cpu())
    h = torch.randn(1000, dtype=torch.float16).to(DEV)
    assert F.dropout(h, 0.5, training=True).dtype == torch.float16
    # the backward of an integer or bool gradient is float, as on the CPU
    g, m = torch.tensor([True, True, False]), torch.tensor([True, False, True])
    want = torch.ops.aten.native_dropout_backward(g, m, 2.0)
    got = torch.ops.aten.native_dropout_backward(g.to(DEV), m.to(DEV), 2.0)
    assert got.dtype == want.dtype and torch.equal(got.cpu(), want)


@pytest.mark.parametrize("n", [0, 1, 2, 37, 1000])
def test_randperm_is_a_permutation(n: int):
    p = torch.randperm(n, device=DEV)
    assert p.dtype == torch.int64 and p.device.type == DEV
    assert torch.equal(p.cpu().sort().values, torch.arange(n))
    q = torch.randperm(n, device=DEV, dtype=torch.int32).cpu()
    assert q.dtype == torch.int32 and torch.equal(q.sort().values, torch.arange(n, dtype=torch.int32))
    if n > 30:
        assert not torch.equal(p.cpu(), torch.randperm(n, device=DEV).cpu())


def test_randperm_is_uniform_and_reproducible():
    n = N
    p = torch.randperm(n, device=DEV).cpu().double()
    # descents (p[i] > p[i+1]) of a uniform permutation: mean (n - 1) / 2, variance (n + 1) / 12
    descents = (p[1:] < p[:-1]).sum().item()
    assert abs(descents - (n - 1) / 2) < 5 * math.sqrt((n + 1) / 12)
    # rank correlation of position and value: about N(0, 1 / (n - 1))
    i = torch.arange(n, dtype=torch.float64)
    r = ((i - i.mean()) * (p - p.mean())).mean() / (i.std() * p.std())
    assert abs(r.item()) < 5 / math.sqrt(n - 1)
    torch.manual_seed(11)
    a = torch.randperm(500, device=DEV).cpu()
    torch.manual_seed(11)
    assert torch.equal(a, torch.randperm(500, device=DEV).cpu())


def test_random_ops_do_not_fall_back():
    torch_toony.reset_metrics()
    torch.rand(10, device=DEV)
    torch.randn(10, device=DEV)
    torch.randint(0, 3, (10,), device=DEV)
    torch.randperm(10, device=DEV)
    torch.empty(10, device=DEV).bernoulli_(0.5)
    torch.empty(10, device=DEV).exponential_()
    torch.empty(10, device=DEV).log_normal_()
    torch.empty(10, device=DEV).cauchy_()
    torch.empty(10, device=DEV).geometric_(0.5)
    torch.multinomial(torch.ones(10, device=DEV), 3)
    F.dropout(torch.ones(10, device=DEV), 0.5, True)
    torch.toony.synchronize()
    assert torch_toony.metrics()["fallbacks"] == {}
