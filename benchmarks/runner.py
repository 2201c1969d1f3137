"""Runs one workload on one backend: first call (compile included), warm-up, timed calls, kernels, error.

Backends:
- `eager`: torch eager on the CPU (the baseline every speedup is relative to)
- `inductor`: torch.compile(backend="inductor") on the CPU
- `toony`: torch.compile(backend="toony") with model and inputs on the toony device
- `toony-eager`: eager ops on the toony device (lazy: a call's kernels run at torch.toony.synchronize())
A call of a toony backend ends with torch.toony.synchronize(), so its time includes every kernel it queued.
Any exception (or the time limit) makes the result a failure carrying the error's kind; nothing is dropped.
"""

from __future__ import annotations

import copy
import gc
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import torch_toony
from toony_core import scheduler as toony_scheduler

from . import inductor_kernels, toony_kernels
from .toony_kernels import KernelTime
from .workloads import Case

BACKENDS = ("eager", "inductor", "toony", "toony-eager")
BACKEND_LABELS = {
    "eager": "eager CPU",
    "inductor": "inductor CPU",
    "toony": "toony compile",
    "toony-eager": "toony eager",
}


@dataclass
class Result:
    workload: str
    backend: str
    median_s: float | None = None
    first_call_s: float | None = None  # the first call: compilation (compiled backends) plus one run
    reps: int = 0
    kernels: int | None = None  # kernel launches per call (None: not counted for this backend)
    kernels_note: str = ""  # e.g. inductor's "2 generated + 1 extern"
    fallbacks: int = 0  # toony CPU fallbacks per call
    max_err: float | None = None  # max |out - float64 reference| over every output
    error: str | None = None  # "ErrorKind: first line of the message" when the backend failed
    profile: list[KernelTime] = field(default_factory=list)  # toony backends: each kernel of one call

    @property
    def ok(self) -> bool:
        return self.error is None


class _TimeLimit(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _TimeLimit("ran past the time limit")


def _to(x: torch.Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
    return x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)


def make_step(case: Case, device: str, dtype: torch.dtype, backend: str | None) -> Callable[[], list[torch.Tensor]]:
    """A no-argument call of the case on device/dtype, compiled with `backend` when given."""
    model = copy.deepcopy(case.model).to(device=device, dtype=dtype) if case.model is not None else None
    inputs = tuple(_to(x, device, dtype) for x in case.inputs)
    if model is not None:
        def fn(*xs: torch.Tensor) -> Any:
            return case.forward(model, *xs)
    else:
        def fn(*xs: torch.Tensor) -> Any:
            return case.forward(*xs)
    if backend is not None:
        fn = torch.compile(fn, backend=backend)
    if not case.train:
        def step() -> list[torch.Tensor]:
            with torch.no_grad():  # a forward workload is inference: no autograd graph, nothing saved for backward
                out = fn(*inputs)
            return list(out) if isinstance(out, tuple | list) else [out]
        return step
    assert model is not None, "a training case needs a model"
    params = [p for p in model.parameters() if p.requires_grad]

    def train_step() -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        loss = fn(*inputs)
        loss.backward()
        return [loss.detach()] + [p.grad for p in params]
    return train_step


def reference(case: Case) -> list[torch.Tensor]:
    """The case's outputs in float64 on the CPU."""
    return [o.detach() for o in make_step(case, "cpu", torch.float64, None)()]


def max_error(outs: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    if len(outs) != len(ref):
        raise RuntimeError(f"{len(outs)} outputs, the reference has {len(ref)}")
    err = 0.0
    for o, r in zip(outs, ref):
        o = o.detach().cpu().to(torch.float64)
        if o.shape != r.shape:
            raise RuntimeError(f"output shape {tuple(o.shape)} != reference {tuple(r.shape)}")
        if o.numel():
            err = max(err, float((o - r).abs().max()))
    return err


def _error_kind(e: BaseException) -> str:
    kind = "Timeout" if isinstance(e, _TimeLimit) else type(e).__name__
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return f"{kind}: {first[:160]}" if first else kind


def run(case: Case, workload: str, backend: str, ref: list[torch.Tensor], time_budget_s: float,
        limit_s: int, max_reps: int = 200) -> Result:
    """Measure one backend. time_budget_s bounds the timed calls (at least 3); limit_s bounds everything."""
    res = Result(workload, backend)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(limit_s)
    try:
        _measure(case, backend, ref, time_budget_s, max_reps, res)
    except (Exception, _TimeLimit) as e:  # noqa: B014 - _TimeLimit is an Exception; named for the reader
        res.error = _error_kind(e)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        torch._dynamo.reset()
        gc.collect()
        if backend.startswith("toony"):
            try:
                torch.toony.synchronize()
            except Exception:  # a failed run may leave a poisoned pending value; the next run starts afresh
                pass
    return res


def _without_memo(step: Callable[[], list[torch.Tensor]]) -> Callable[[], list[torch.Tensor]]:
    """toony_core remembers the buffer of every realized graph (UOps are hash-consed), so an eager call that
    builds the same graph on the same inputs as the call before would launch nothing and copy the old result.
    A program computes new values each call; forgetting the memo first makes every call compute."""
    def call() -> list[torch.Tensor]:
        toony_scheduler.realized.clear()
        return step()
    return call


def _measure(case: Case, backend: str, ref: list[torch.Tensor], time_budget_s: float, max_reps: int,
             res: Result) -> None:
    on_toony = backend.startswith("toony")
    device = "toony" if on_toony else "cpu"
    compiler = {"inductor": "inductor", "toony": "toony"}.get(backend)
    sync: Callable[[], None] = torch.toony.synchronize if on_toony else (lambda: None)
    torch._dynamo.reset()
    step = make_step(case, device, torch.float32, compiler)
    if backend == "toony-eager":
        step = _without_memo(step)
    sync()  # the copies of model and inputs onto the device are not part of any call

    modules_before = inductor_kernels.loaded_modules() if backend == "inductor" else set()
    start = time.perf_counter()
    outs = step()
    sync()
    res.first_call_s = time.perf_counter() - start
    if backend == "inductor":
        counts = inductor_kernels.count_since(modules_before)
        res.kernels = counts.total
        res.kernels_note = f"{counts.generated} generated + {counts.extern} extern"
    del outs

    # the warm-up call (a training step's second call is the first with every graph compiled) also gives the
    # error and the kernels per call; a toony backend's is profiled kernel by kernel (its time is then no sample)
    def call() -> list[torch.Tensor]:
        out = step()
        sync()
        return out

    before = torch_toony.metrics()
    start = time.perf_counter()
    if on_toony:
        outs, res.profile = toony_kernels.profile(call)
    else:
        outs = call()
    warm = time.perf_counter() - start
    after = torch_toony.metrics()
    res.max_err = max_error(outs, ref)
    del outs
    if on_toony:
        res.kernels = after["kernels"] - before["kernels"]
        res.fallbacks = sum(after["fallbacks"].values()) - sum(before["fallbacks"].values())

    times = [] if on_toony else [warm]
    reps = max(3 - len(times), min(max_reps, int(time_budget_s / max(warm, 1e-9))))
    for _ in range(reps):
        start = time.perf_counter()
        outs = step()
        sync()
        times.append(time.perf_counter() - start)
        del outs
    res.median_s = statistics.median(times)
    res.reps = len(times)
