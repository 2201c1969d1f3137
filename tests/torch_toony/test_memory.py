"""Device memory comes back, training loops stay flat, and the lazy graph stays bounded.

Two counters are checked: `torch.toony.memory_allocated()` (bytes of toony storages PyTorch holds, the
C++ allocator's table) and `toony_core.runtime.memory_allocated()` (bytes of live OpenCL buffers, which also
counts buffers a pending lazy graph keeps alive after torch freed the storage).

The issue asks for a 10,000-step training loop. A toony eager step of the tiny model costs ~26 ms on this
2-core PoCL machine, so the test runs TOONY_MEMORY_STEPS steps (default 500) and requires the counters (and
the number of live storages) to be exactly equal to their post-warm-up values at every 100th step: a slope of
zero, which no leak of even one byte per step survives. TOONY_MEMORY_STEPS=10000 runs the issue's full
length (measured: 261 s, 908 torch bytes / 908 device bytes / 14 storages at every 500th step).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_toony
from toony_core import realize as core_realize
from toony_core import runtime
from torch_toony import lazy, storage

DEV = "toony"
STEPS = int(os.environ.get("TOONY_MEMORY_STEPS", "500"))  # a multiple of 100


def settle() -> tuple[int, int]:
    """Run pending work, collect garbage, release freed storages, until nothing more goes away (realizing can
    drop the last reference to a graph in a reference cycle, which only the next collection frees); return
    (torch bytes, device buffer bytes)."""
    last = None
    for _ in range(5):
        gc.collect()
        torch.toony.synchronize()
        storage.drain_freed()
        now = torch.toony.memory_allocated(), runtime.memory_allocated()
        if now == last:
            break
        last = now
    return now


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    settle()
    yield


# --- freed tensors return memory -------------------------------------------------------


def test_freed_tensor_returns_memory() -> None:
    start = settle()
    x = torch.randn(1000, 17).to(DEV)
    y = (x * 2 + 1).relu()
    y.cpu()  # realized: y owns a device buffer
    z = torch.empty(0, device=DEV)
    w = torch.ones(3, 5, dtype=torch.float64, device=DEV).t()
    w.add_(1)
    torch_bytes, dev_bytes = settle()
    assert torch_bytes >= start[0] + 2 * 1000 * 17 * 4 + 15 * 8
    assert dev_bytes >= start[1] + 2 * 1000 * 17 * 4
    del x, y, z, w
    assert settle() == start


def test_view_keeps_its_base_alive() -> None:
    start = settle()
    base = torch.arange(4096.0).to(DEV)
    view = base[100:200:3]
    del base
    held = settle()
    assert held[0] == start[0] + 4096 * 4  # the whole storage stays while a view of it lives
    assert torch.equal(view.cpu(), torch.arange(4096.0)[100:200:3])
    del view
    assert settle() == start


def test_pending_value_holds_its_inputs_until_freed() -> None:
    """A pending value may keep an input's buffer alive after torch frees the input; freeing the pending value
    (never realized) gives all of it back."""
    start = settle()
    x = torch.randn(4096).to(DEV)
    y = x * 2  # pending: reads x's buffer
    del x
    gc.collect()
    storage.drain_freed()
    assert torch.toony.memory_allocated() == start[0] + 4096 * 4  # only y's storage is torch's now
    del y
    assert settle() == start


def test_inplace_ops_allocate_nothing() -> None:
    x = torch.randn(256, 64).to(DEV)
    before = settle()
    for _ in range(20):
        x.mul_(0.5).add_(1.0).clamp_(max=3.0)
    x[::2].zero_()
    assert settle() == before


def test_peak_memory() -> None:
    settle()
    torch.toony.reset_peak_memory_stats()
    base = torch.toony.max_memory_allocated()
    assert base == torch.toony.memory_allocated()
    x = torch.empty(1 << 20, dtype=torch.uint8, device=DEV)
    del x
    settle()
    assert torch.toony.max_memory_allocated() >= base + (1 << 20)
    torch.toony.reset_peak_memory_stats()
    assert torch.toony.max_memory_allocated() == torch.toony.memory_allocated()


# --- training loops --------------------------------------------------------------------


def _tiny_training() -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)).to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(16, 4).to(DEV), torch.randn(16, 1).to(DEV)
    return model, opt, x, y


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def test_training_loop_memory_is_flat() -> None:
    """Memory after every step is exactly the memory after the first: no step keeps anything. (Each step
    synchronizes, so the measurement sees realized values; see the test below for the loop without it.)"""
    model, opt, x, y = _tiny_training()
    for _ in range(10):  # momentum buffers appear on the first step, cached constant tables in the first few
        _step(model, opt, x, y)
        settle()
    first = settle()
    torch.toony.reset_peak_memory_stats()
    first_entries = storage.live_entries()
    losses, seen = [], []
    for i in range(STEPS):
        losses.append(_step(model, opt, x, y))
        torch.toony.synchronize()  # what the measurement needs; the loop without it is the next test
        if i % 100 == 99:  # a full settle (several gc passes) every step would dominate the run time
            seen.append((i, (*settle(), storage.live_entries())))
    changed = [(i, m) for i, m in seen if m != (*first, first_entries)]
    assert not changed, f"(torch bytes, device bytes, storages) after warm-up {(*first, first_entries)}; " \
        f"steps that differ: {changed[:10]} ({len(changed)} of {len(seen)})"
    assert losses[-1] < losses[0]
    # transient memory within a step is bounded too: the peak is a step's working set, not growing
    assert torch.toony.max_memory_allocated() < first[0] + 64 * 1024


def test_training_loop_compiles_nothing_after_warmup() -> None:
    """A loop that reads only the loss (no synchronize) reaches a steady state: a fixed set of kernels.
    Parameters and momentum buffers may stay pending for a few steps (their graphs are cut when they grow;
    measured: a 7-step cycle for this model, every kernel seen by step 17), but never grow without bound."""
    model, opt, x, y = _tiny_training()
    for _ in range(20):
        _step(model, opt, x, y)
    kernels = len(core_realize._kernels)
    for _ in range(14):  # two of the cycles measured above
        _step(model, opt, x, y)
    assert len(core_realize._kernels) == kernels


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_state_does_not_chain_across_steps(foreach: bool) -> None:
    """AdamW's bias corrections change every step and its moments are updated in place every step without
    being read: each step must reuse the same kernels (constants are read from a table, not compiled in) and
    a moment's pending value must not embed the previous steps' updates (it is realized before the next)."""
    model, _, x, y = _tiny_training()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=foreach)
    for _ in range(3):
        _step(model, opt, x, y)
    kernels = len(core_realize._kernels)
    sizes = []
    for _ in range(4):
        _step(model, opt, x, y)
        exp_avg = opt.state[model[0].weight]["exp_avg"]
        sizes.append(lazy._size.get(lazy.addr_of(exp_avg), 0))
    assert len(core_realize._kernels) == kernels
    assert len(set(sizes)) == 1, sizes  # the same graph every step, not one step longer each time


def test_lazy_bookkeeping_stays_bounded() -> None:
    """The op layer's reader/pending tables do not grow over a training loop (no entries for freed storages)."""
    model, opt, x, y = _tiny_training()

    def sizes() -> tuple[int, ...]:
        settle()
        return len(lazy._readers), len(lazy._reads), len(lazy._size), len(lazy._siblings), storage.live_entries()

    for _ in range(10):
        _step(model, opt, x, y)
        torch.toony.synchronize()
    before = sizes()
    for _ in range(30):
        _step(model, opt, x, y)
        torch.toony.synchronize()
    assert sizes() == before
    assert all(storage.is_live(a) for a in lazy._readers)


# --- the lazy graph stays bounded ------------------------------------------------------


def _chain(n: int, inplace: bool) -> tuple[torch.Tensor, list[float]]:
    """x = x + 1 (or x.add_(1)) n times without reading x; returns x and the wall time of each tenth."""
    x = torch.zeros(64, device=DEV)
    times, t0 = [], time.perf_counter()
    for i in range(n):
        if inplace:
            x.add_(1)
        else:
            x = x + 1
        if (i + 1) % (n // 10) == 0:
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
    return x, times


@pytest.mark.parametrize("inplace", [
    pytest.param(False, id="x=x+1"),
    pytest.param(True, id="x.add_(1)"),
])
def test_long_chain_without_reads_stays_bounded(inplace: bool) -> None:
    """5,000 dependent ops never read back: the graph is cut into kernels as it goes (so time per op stays
    flat and memory bounded), ops still fuse (far fewer kernels than ops), and the value is exact."""
    n = 5000
    _chain(n // 10, inplace)  # compile the chunk kernels once, so timing below is steady state
    start = settle()
    k0 = torch_toony.metrics()["kernels"]
    x, times = _chain(n, inplace)
    launched = torch_toony.metrics()["kernels"] - k0
    assert 0 < launched <= n // 20, launched  # bounded graph, yet >= 20 ops fused per kernel
    # the last tenth is not slower than the first (no graph walk that grows with the chain): 3x covers noise
    assert times[-1] < 3 * times[0] + 0.05, times
    assert torch.toony.memory_allocated() <= start[0] + 64 * 4
    assert runtime.memory_allocated() <= start[1] + 16 * 64 * 4  # a few chunk buffers at most
    assert torch.equal(x.cpu(), torch.full((64,), float(n)))


def test_sum_of_many_fresh_inputs_stays_bounded() -> None:
    """Accumulating 2,000 different device tensors: the pending graph reads each one; it must be cut before
    it holds them all (each input's buffer would stay alive until the end)."""
    start = settle()
    acc = torch.zeros(1024, device=DEV)
    peak = 0
    for i in range(2000):
        acc = acc + torch.full((1024,), float(i)).to(DEV)  # a host copy: a real device buffer
        if i % 100 == 0:
            gc.collect()
            storage.drain_freed()
            peak = max(peak, runtime.memory_allocated() - start[1])
    assert acc[0].item() == sum(range(2000))
    assert peak < 200 * 1024 * 4, peak  # well under the 2,000 * 4 KiB the whole history would hold
