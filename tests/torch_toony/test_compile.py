"""torch.compile(backend="toony"): whole models forward and backward against eager CPU, captured-schedule
replay, inputs and outputs on either device, input mutations, aliasing outputs, random ops, dynamic shapes,
strict mode, the entry point and the disk cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._dynamo
import torch.nn as nn
import torch.nn.functional as F

import torch_toony
import torch_toony.compile_capture as capture_mod

DEV = "toony"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def quiet_fallback(monkeypatch: pytest.MonkeyPatch):
    """Models may reach ops whose lowerings are still being written: those run on the CPU, with a warning."""
    monkeypatch.setenv("TOONY_FALLBACK", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def tc(fn: Callable, **kw: Any) -> Callable:
    return torch.compile(fn, backend="toony", **kw)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), atol=atol, rtol=rtol)


def twins(make: Callable[[], nn.Module], device: str = "cpu") -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ref = make()
    mod = make()
    mod.load_state_dict(ref.state_dict())
    return ref, mod.to(device)


def check_model(make: Callable[[], nn.Module], inputs: list[torch.Tensor], device: str = "cpu", steps: int = 2,
                atol: float = 1e-5) -> nn.Module:
    """Forward and backward of the compiled model match eager CPU (outputs, every grad, every buffer), for a
    few calls (the later ones replay the captured schedule)."""
    ref, mod = twins(make, device)
    cm = tc(mod)
    for _ in range(steps):
        want = ref(*inputs)
        got = cm(*[x.to(device) for x in inputs])
        assert got.device.type == device
        close(got, want, atol=atol)
        want.square().sum().backward()
        got.square().sum().backward()
        for (name, p), q in zip(ref.named_parameters(), mod.parameters()):
            assert q.grad is not None and q.grad.device.type == device, name
            close(q.grad, p.grad, atol=atol * 10, rtol=1e-3)
        for b1, b2 in zip(ref.buffers(), mod.buffers()):
            close(b2, b1)
        ref.zero_grad()
        mod.zero_grad()
    return cm


# ---------------------------------------------------------------- models

def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 8))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


class Block(nn.Module):
    """A pre-norm transformer block: causal self-attention, LayerNorm, GELU MLP, dropout."""

    def __init__(self, d: int = 32, heads: int = 4, p: float = 0.0):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), 1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class SDPABlock(nn.Module):
    """Attention through F.scaled_dot_product_attention with is_causal (the fused CPU op and its backward)."""

    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj, self.ln = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.proj(y.transpose(1, 2).reshape(b, t, d))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.rnn = cell(8, 16, batch_first=True)
        self.out = nn.Linear(16, 20)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.emb(idx))[0])


def test_mlp() -> None:
    check_model(mlp, [torch.randn(4, 16)], steps=3)


def test_mlp_on_device() -> None:
    check_model(mlp, [torch.randn(4, 16)], device=DEV)


@pytest.mark.usefixtures("quiet_fallback")
def test_cnn_batchnorm_pooling_train_and_eval() -> None:
    x = torch.randn(2, 3, 12, 12)
    cm = check_model(cnn, [x], atol=1e-4)
    # eval mode: running statistics are read, not updated (a separate inference graph)
    ref, mod = twins(cnn)
    ref.train()(x)
    mod.train()(x)  # same statistics in both
    ref.eval()
    cm = tc(mod.eval())
    with torch.no_grad():
        close(cm(x), ref(x), atol=1e-4)
        close(cm(x * 2), ref(x * 2), atol=1e-4)


@pytest.mark.usefixtures("quiet_fallback")
def test_cnn_on_device_updates_running_stats_in_place() -> None:
    check_model(cnn, [torch.randn(2, 3, 12, 12)], device=DEV, atol=1e-4)


def test_transformer_block() -> None:
    check_model(Block, [torch.randn(2, 8, 32)], atol=1e-4)


def test_transformer_block_on_device() -> None:
    check_model(Block, [torch.randn(2, 8, 32)], device=DEV, atol=1e-4)


def test_sdpa_causal_block() -> None:
    check_model(SDPABlock, [torch.randn(2, 8, 32)], atol=1e-4)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_embedding_recurrent(cell: type[nn.Module], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch._dynamo.config, "allow_rnn", True)  # else dynamo leaves RNN modules to eager
    check_model(lambda: Recurrent(cell), [torch.randint(0, 20, (3, 6))], atol=1e-5)


def _keep_fraction_ok(kept: torch.Tensor, p: float) -> None:
    frac, n = kept.float().mean().item(), kept.numel()
    assert abs(frac - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5, (frac, 1 - p)


def test_transformer_dropout_statistics() -> None:
    """Dropout in train mode inside the block: each element of the dropped branch is either 0 or scaled by
    1/(1-p), the kept fraction is 1-p, and masks differ between calls."""
    p = 0.25
    torch.manual_seed(0)
    block = Block(p=p)
    cm = tc(block)
    x = torch.randn(8, 16, 32)
    out1, out2 = cm(x), cm(x)
    assert not torch.equal(out1, out2)
    with torch.no_grad():  # the block's pieces before its last dropout, in eager
        mask = torch.triu(torch.ones(16, 16, dtype=torch.bool), 1)
        h1 = block.ln1(x)
        x1 = x + block.attn(h1, h1, h1, attn_mask=mask, need_weights=False)[0]
        branch = block.mlp[:3](block.ln2(x1))
    big = branch.abs() > 1e-2
    for out in (out1, out2):
        ratio = ((out - x1) / branch)[big]
        kept = (ratio - 1 / (1 - p)).abs() < 1e-3
        assert (kept | (ratio.abs() < 1e-3)).all()
        _keep_fraction_ok(kept, p)


def test_dropout_masks_seeds_and_backward() -> None:
    p = 0.3
    drop = tc(lambda z: F.dropout(z * 3, p, training=True))
    y = drop(torch.ones(200, 500))
    _keep_fraction_ok(y != 0, p)
    close(y[y != 0], torch.full_like(y[y != 0], 3 / (1 - p)))
    a, b = drop(torch.ones(100, 100)), drop(torch.ones(100, 100))
    _keep_fraction_ok((a != 0) != (b != 0), 1 - 2 * p * (1 - p))  # independent masks
    torch.manual_seed(3)
    a = drop(torch.ones(64, 64))
    torch.manual_seed(3)
    assert torch.equal(a, drop(torch.ones(64, 64)))  # reproducible under torch.manual_seed
    w = torch.ones(300, 300, requires_grad=True)
    y = drop(w)
    y.sum().backward()
    assert torch.equal(w.grad != 0, y != 0)  # the backward uses the forward's mask
    close(w.grad[y != 0], torch.full_like(w.grad[y != 0], 3 / (1 - p)))
    u, n = tc(lambda z: (torch.rand_like(z), torch.randn_like(z)))(torch.empty(400, 500))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 5e-3
    assert abs(n.mean()) < 1e-2 and abs(n.std() - 1) < 1e-2


def test_adamw_training_loop_matches_eager() -> None:
    """20 steps of AdamW with a compiled model and a compiled optimizer step (in-place parameter and state
    updates inside a compiled graph): every loss matches eager CPU."""

    def run(compiled: bool) -> list[float]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 4))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        fwd = tc(model) if compiled else model
        step = tc(opt.step) if compiled else opt.step
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(20):
            x, y = torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)
            loss = F.mse_loss(fwd(x), y)
            opt.zero_grad()
            loss.backward()
            step()
            losses.append(loss.item())
        return losses

    want, got = run(False), run(True)
    assert got[-1] < got[0] * 0.8
    for a, b in zip(got, want):
        assert abs(a - b) <= 1e-5 + 1e-4 * abs(b), (got, want)


# ---------------------------------------------------------------- the captured schedule

def _count_calls(monkeypatch: pytest.MonkeyPatch, names: list[str]) -> dict[str, int]:
    """Count calls to these toony_core functions wherever a module imported them by name."""
    counts = dict.fromkeys(names, 0)
    for modname, mod in list(sys.modules.items()):
        if not (modname.startswith("toony_core") or modname.startswith("torch_toony")) or mod is None:
            continue
        for name in names:
            orig = getattr(mod, name, None)
            if callable(orig) and getattr(orig, "__module__", "").startswith("toony_core"):
                def counted(*a: Any, _orig: Callable = orig, _name: str = name, **k: Any) -> Any:
                    counts[_name] += 1
                    return _orig(*a, **k)
                monkeypatch.setattr(mod, name, counted)
    return counts


@pytest.mark.parametrize("device", ["cpu", DEV])
def test_second_call_schedules_and_renders_nothing(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = Block(p=0.1).to(device)
    cm = tc(model)
    params = list(model.parameters())
    x = torch.randn(2, 8, 32, device=device)
    grad_out = torch.ones(2, 8, 32, device=device)
    if device == DEV:
        torch.toony.synchronize()  # nothing eager is left pending for the compiled calls to realize
    torch.autograd.grad(cm(x), params, grad_out)  # first call: compile and capture forward and backward
    counts = _count_calls(monkeypatch, ["create_schedule", "render", "lower", "compile_kernel", "get_kernel"])
    torch_toony.reset_metrics()
    grads = torch.autograd.grad(cm(x), params, grad_out)
    assert counts == dict.fromkeys(counts, 0), counts
    assert torch_toony.metrics()["kernels"] > 0
    assert all(g.device.type == device for g in grads)


def test_tiny_graph_is_one_kernel() -> None:
    f = tc(lambda x, y: torch.sin(x) + torch.cos(y))
    x, y = torch.randn(10, 10), torch.randn(10, 10)
    close(f(x, y), torch.sin(x) + torch.cos(y))
    torch_toony.reset_metrics()
    f(x, y)
    assert torch_toony.metrics()["kernels"] == 1


# ---------------------------------------------------------------- devices, layouts, dtypes

@pytest.mark.parametrize("device", ["cpu", DEV])
def test_outputs_where_eager_puts_them(device: str) -> None:
    f = tc(lambda x, y: (x @ y, (x + 1).sum(), x > 0))
    x, y = torch.randn(3, 4), torch.randn(4, 2)
    outs = f(x.to(device), y.to(device))
    for got, want in zip(outs, (x @ y, (x + 1).sum(), x > 0)):
        assert got.device.type == device
        close(got, want)


@pytest.mark.parametrize("device", ["cpu", DEV])
def test_non_contiguous_and_offset_inputs(device: str) -> None:
    base = torch.randn(6, 10, device=device)
    a = base.t()  # transposed
    b = base[2:5, 1::3]  # offset and strided
    f = tc(lambda u, v: (u * 2).sum(1), dynamic=False)
    g = tc(lambda v: v.exp() + v[:, :1])
    close(f(a, b), (a * 2).sum(1))
    close(g(b), b.exp() + b[:, :1])
    c = base[1:4, 1::3]  # same shape and strides, another offset: reuses the graph, binds another view
    close(g(c), c.exp() + c[:, :1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64,
                                   torch.uint8,
                                   torch.bool])
def test_dtypes(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        x = torch.randn(7, 5, generator=g).to(dtype)
        f = tc(lambda t: (t * 1.5 + 2).abs().sum(0, dtype=torch.float32) + t.mean())
        want = (x * 1.5 + 2).abs().sum(0, dtype=torch.float32) + x.mean()
    elif dtype == torch.bool:
        x = torch.randint(0, 2, (7, 5), generator=g).bool()
        f = tc(lambda t: (t & ~t.roll(1, 0)) | t.logical_not())
        want = (x & ~x.roll(1, 0)) | x.logical_not()
    else:
        x = torch.randint(0, 100, (7, 5), generator=g).to(dtype)
        f = tc(lambda t: (t * 3 + 7) // 2 + t.max())
        want = (x * 3 + 7) // 2 + x.max()
    got = f(x)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
    close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("in_place", [True, False])
def test_cpu_memory_staged_or_used_in_place(in_place: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU tensors are bound in place where the OpenCL device works in host memory (and their storage is
    aligned), else staged through device buffers; both give the same results, mutations included."""
    if not in_place:
        monkeypatch.setattr(capture_mod, "can_use_host_memory", lambda: False)

    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y.mul_(2)
        return (x.t() @ y).relu(), x[1:].exp()

    cf = tc(f)
    raw = bytearray(4 * 65)
    x = torch.frombuffer(raw, dtype=torch.float32, offset=4, count=64).view(8, 8)  # storage 4 bytes off alignment
    x.copy_(torch.randn(8, 8))
    for _ in range(2):
        y = torch.randn(8, 3)
        y2 = y.clone()
        got = cf(x, y)
        want = f(x, y2)
        for a, b in zip(got, want):
            close(a, b)
        close(y, y2)


def test_repeated_calls_on_the_same_cpu_tensors_see_their_new_values() -> None:
    """A call with the same CPU tensors as the last one rebinds nothing (the kernels keep their arguments):
    values written into those tensors between calls, and fresh tensors, must still be read."""
    cf = tc(lambda x, y: x * 2 + y)
    x, y = torch.randn(16), torch.randn(16)
    for _ in range(3):
        close(cf(x, y), x * 2 + y)
        x.add_(1)
        y.copy_(torch.randn(16))
    z = torch.randn(16)
    close(cf(z, y), z * 2 + y)
    close(cf(x, y), x * 2 + y)


def test_zero_dim_and_empty() -> None:
    f = tc(lambda s, e, x: (s * 2 + x.sum(), e * 3, e.sum()))
    s, e, x = torch.tensor(1.5), torch.empty(0, 4), torch.randn(3, 2)
    got = f(s, e, x)
    want = (s * 2 + x.sum(), e * 3, e.sum())
    for a, b in zip(got, want):
        close(a, b)


def test_broadcasting_and_constants() -> None:
    f = tc(lambda x, b: torch.where(x > 0, x, torch.tensor([0.5, -1.0, 2.0])) * b + torch.arange(3))
    x, b = torch.randn(4, 3), torch.randn(4, 1)
    close(f(x, b), torch.where(x > 0, x, torch.tensor([0.5, -1.0, 2.0])) * b + torch.arange(3))


# ---------------------------------------------------------------- mutations and aliasing

@pytest.mark.parametrize("device", ["cpu", DEV])
def test_input_mutations(device: str) -> None:
    def f(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        y[:, 1].mul_(2)  # a write through a view of an input
        z.copy_(x.t())
        return x * y.sum()

    cf = tc(f)
    for _ in range(2):
        a, b, c = torch.randn(3, 3), torch.randn(3, 4), torch.randn(3, 3)
        da, db, dc = (t.clone().to(device) for t in (a, b, c))
        want = f(a, b, c)
        got = cf(da, db, dc)
        close(got, want)
        close(da, a)
        close(db, b)
        close(dc, c)


@pytest.mark.parametrize("device", ["cpu", DEV])
def test_mutated_non_contiguous_input(device: str) -> None:
    def f(x: torch.Tensor) -> None:
        x.mul_(x.sum())

    base = torch.randn(4, 6)
    dbase = base.clone().to(device)
    tc(f)(dbase[:, ::2])
    f(base[:, ::2])
    close(dbase, base)


@pytest.mark.parametrize("device", ["cpu", DEV])
def test_outputs_that_alias_inputs(device: str) -> None:
    cf = tc(lambda x: (x.t(), x[1:], x.view(-1), x * 2))
    x = torch.randn(3, 4, device=device)
    t, s, v, m = cf(x)
    close(t, x.t())
    close(s, x[1:])
    close(m, x * 2)
    x.add_(1)  # views see the input's later values, as eager views do
    close(t, x.t())
    close(s, x[1:])
    close(v, x.view(-1))


def test_repeated_output() -> None:
    cf = tc(lambda x: ((x + 1).exp(), (x + 1).exp(), x.exp()))
    a, b, c = cf(torch.randn(5))
    close(a, b)
    a.add_(1)
    assert not torch.equal(a, b)  # two outputs, two tensors


# ---------------------------------------------------------------- dynamic shapes, graph breaks

@pytest.mark.parametrize("dynamic", [True, None])
def test_new_batch_sizes(dynamic: bool | None) -> None:
    torch.manual_seed(0)
    model = mlp()
    cm = tc(model, dynamic=dynamic)
    for b in (4, 8, 5, 8):
        x = torch.randn(b, 16, requires_grad=True)
        got = cm(x)
        got.sum().backward()
        g = x.grad
        x.grad = None
        want = model(x)
        want.sum().backward()
        close(got, want)
        close(g, x.grad)


def test_a_new_batch_size_reuses_the_compiled_programs_of_inference_kernels() -> None:
    # a kernel's code does not depend on the size of its outermost (batch) axis unless it reduces over it: an
    # inference graph called with a new batch size is re-captured, but builds and loads no OpenCL program
    from toony_core.runtime import CompileStats

    torch.manual_seed(0)
    model = mlp()
    cm = tc(model, dynamic=True)
    with torch.no_grad():
        x = torch.randn(24, 16)
        close(cm(x), model(x))  # compiles
        before = (CompileStats.built, CompileStats.loaded)
        x = torch.randn(40, 16)
        close(cm(x), model(x))
        assert (CompileStats.built, CompileStats.loaded) == before


def test_graph_breaks_run_every_piece() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        y = x.sin() * 2
        if y.sum().item() > 0:  # a data-dependent branch: dynamo breaks the graph here
            y = y + 1
        return y.cos()

    x = torch.randn(10)
    close(tc(f)(x), f(x))
    close(tc(f)(-x), f(-x))


# ---------------------------------------------------------------- ops toony cannot lower

@torch.library.custom_op("toony_test::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_twice.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@pytest.mark.parametrize("device", ["cpu", DEV])
def test_unlowerable_op_falls_back_with_a_warning(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOONY_FALLBACK", "1")
    monkeypatch.setattr(capture_mod, "_warned", set())
    f = tc(lambda x: torch.ops.toony_test.twice(x.exp() + 1).sum(0) * 3)
    x = torch.randn(4, 3)
    if device == DEV:
        pytest.importorskip("torch_toony")
        torch.library.impl("toony_test::twice", "PrivateUse1")(lambda t: t * 2)
    with pytest.warns(UserWarning, match="toony_test.twice"):
        got = f(x.to(device))
    close(got, (x.exp() + 1).mul(2).sum(0) * 3)
    torch_toony.reset_metrics()
    close(f(x.to(device) + 1), ((x + 1).exp() + 1).mul(2).sum(0) * 3)
    assert torch_toony.metrics()["fallbacks"] == {"toony_test::twice": 1}


def test_strict_mode_raises_naming_the_op(monkeypatch: pytest.MonkeyPatch) -> None:
    f = torch.compile(lambda x: torch.ops.toony_test.twice(x) + 1, backend="toony", options={"strict": True})
    with pytest.raises(Exception, match="toony_test.twice"):
        f(torch.randn(3))
    torch._dynamo.reset()
    monkeypatch.setenv("TOONY_FALLBACK", "0")
    with pytest.raises(Exception, match="toony_test.twice"):
        tc(lambda x: torch.ops.toony_test.twice(x) - 1)(torch.randn(3))


def test_complex_inputs_run_eagerly_with_a_warning() -> None:
    f = tc(lambda z: (z * z.conj()).real + 1)
    z = torch.randn(4, dtype=torch.complex64)
    with pytest.warns(UserWarning, match="complex"):
        got = f(z)
    close(got, (z * z.conj()).real + 1)


# ---------------------------------------------------------------- install-level behaviour

def _python(code: str, env: dict[str, str]) -> str:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_entry_point_and_disk_cache(tmp_path: Any) -> None:
    """A fresh process compiles with backend="toony" without importing torch_toony (even with torch's device
    autoload off), and a second process compiling the same model builds no OpenCL program."""
    code = """
        import sys, torch
        assert "torch_toony.compile" not in sys.modules
        m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
        x = torch.randn(2, 8)
        out = torch.compile(m, backend="toony")(x)
        torch.testing.assert_close(out, m(x))
        from toony_core.runtime import CompileStats
        print("built", CompileStats.built)
    """
    from torch_toony._build import cache_root

    (tmp_path / "ext").symlink_to(cache_root() / "ext")  # a fresh kernel cache, the same built C++ extension
    env = {"TOONY_CACHE_DIR": str(tmp_path), "TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}
    first = _python(code, env)
    second = _python(code, env)
    assert int(first.split()[-1]) > 0
    assert second.split()[-1] == "0", second


def test_batchnorm_running_stats_are_written_by_the_kernels_that_compute_them() -> None:
    # inference graphs keep BatchNorm's input mutations: the new running mean and variance are computed
    # straight into the module's buffers (one kernel for both: they have the same shape), not into
    # temporaries copied afterwards
    torch.manual_seed(0)
    cpu_bn, dev_bn = twins(lambda: nn.BatchNorm1d(16), DEV)
    cf = tc(dev_bn)
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(32, 16)
            torch_toony.reset_metrics()
            close(cf(x.to(DEV)), cpu_bn(x))
            torch.toony.synchronize()
    close(dev_bn.running_mean, cpu_bn.running_mean)
    close(dev_bn.running_var, cpu_bn.running_var)
    assert dev_bn.num_batches_tracked.item() == cpu_bn.num_batches_tracked.item() == 3
    # mean, variance, the normalized output, the running mean and variance together, the batch counter
    assert torch_toony.metrics()["kernels"] == 5
