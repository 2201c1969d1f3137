"""Run PyTorch's OpInfo samples on the toony device and compare them with the CPU.

Shared by the fast pytest sample (tests/torch_toony/test_opinfo.py) and the full sweep
(`python -m benchmarks.op_coverage`). Samples are always made on the CPU (so both sides see the same values),
mirrored onto toony with the exact layout (sizes, strides, storage offset, aliasing between arguments), run
on both devices, and compared with `torch.testing.assert_close` at the dtype's default tolerances, or the
loosest tolerance the OpInfo itself declares for that dtype where it declares one.

Five checks per (op, dtype), each a function that raises on failure:

- ``sample``: results for the OpInfo's reference inputs (its sample inputs plus any extra reference cases);
- ``noncontig``: the same op on non-contiguous copies of the sample inputs (PyTorch's noncontiguous_like);
- ``out``: the out= variant with a right-sized out, an empty out that must be resized, and a
  non-contiguous out (a result must land in the caller's tensor and the call must return it);
- ``inplace``: the in-place variant (same values as CPU, returns self; where the CPU refuses, toony must too);
- ``grad``: float32 gradients of every differentiable input against the CPU's, for a random cotangent.

The caller runs them with the CPU fallback off (`fallback_disabled`), so a missing kernel is a failure.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import unittest
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.testing._internal.common_device_type import toleranceOverride
from torch.testing._internal.opinfo.core import DecorateInfo, OpInfo, SampleInput
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = "toony"
CHECKS = ("sample", "noncontig", "out", "inplace", "grad")

# How many samples each check runs per (op, dtype). Spread evenly over the OpInfo's list: a few ops have
# over a thousand samples (max_pool2d), and every new shape is a kernel compile on a cold cache.
DEFAULT_CAPS = {"sample": 24, "noncontig": 8, "out": 4, "inplace": 8, "grad": 8}


class NotApplicable(Exception):
    """The check does not apply to this op and dtype (no out= variant, no samples, ...)."""


class NotComparable(Exception):
    """The op ran on toony with the right shapes and dtypes, but its values cannot be compared with the CPU's
    (random output, uninitialized memory, undefined results): PyTorch's own CPU-comparison test skips it too."""


@contextlib.contextmanager
def fallback_disabled() -> Iterator[None]:
    """TOONY_FALLBACK=0 for the duration: an op without a toony kernel raises instead of running on the CPU."""
    old = os.environ.get("TOONY_FALLBACK")
    os.environ["TOONY_FALLBACK"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TOONY_FALLBACK"]
        else:
            os.environ["TOONY_FALLBACK"] = old


# ---------------------------------------------------------------------------------------------------------
# What PyTorch itself says about comparing this op with the CPU


def _skip_reason(decorator: Callable) -> str | None:
    """The reason string of a unittest.skip(...) decorator, else None."""
    for cell in getattr(decorator, "__closure__", None) or ():
        if isinstance(cell.cell_contents, str):
            return cell.cell_contents
    return None


def not_comparable_reason(op: OpInfo, dtype: torch.dtype) -> str | None:
    """Why PyTorch's own device-vs-CPU test (TestCommon.test_compare_cpu) skips this op on every device, if it
    does: random or uninitialized outputs, undefined results for some inputs."""
    for d in op.decorators:
        if not isinstance(d, DecorateInfo) or d.test_name != "test_compare_cpu" or d.device_type is not None:
            continue
        if d.dtypes is not None and dtype not in d.dtypes:
            continue
        for dec in d.decorators:
            if dec is not unittest.expectedFailure and getattr(dec, "__qualname__", "").startswith("skip"):
                return _skip_reason(dec) or "skipped by PyTorch's CPU comparison test"
    return None


def is_random(op: OpInfo) -> bool:
    """The OpInfo reseeds the RNG around each call (wrapper_set_seed): its values depend on the device's
    random stream, which toony does not share with the CPU."""
    return "wrapper_set_seed" in getattr(getattr(op.op, "__code__", None), "co_names", ())


# OpInfo tolerance overrides that describe how far two correct implementations of the op may differ:
# the device-vs-reference tests, not the JIT/vmap/forward-AD ones.
_TOL_CLASSES = {None, "TestCommon", "TestUnaryUfuncs", "TestBinaryUfuncs", "TestReductions", "TestDecomp",
                "TestInductorOpInfo"}


def tolerances(op: OpInfo, dtype: torch.dtype) -> dict[str, float]:
    """The loosest toleranceOverride the OpInfo declares for this (input) dtype on a CPU, CUDA or any-device
    reference test, as {"atol", "rtol"}; empty if it declares none. assert_matches never goes below
    assert_close's defaults for each output's own dtype."""
    atol = rtol = None
    for d in op.decorators:
        if not isinstance(d, DecorateInfo) or d.device_type not in (None, "cpu", "cuda"):
            continue
        if d.cls_name not in _TOL_CLASSES:
            continue
        for dec in d.decorators:
            if isinstance(dec, toleranceOverride) and dtype in dec.d:
                atol = max(atol or 0.0, dec.d[dtype].atol)
                rtol = max(rtol or 0.0, dec.d[dtype].rtol)
    return {} if atol is None else {"atol": atol, "rtol": rtol}


def _leaf_tol(dtype: torch.dtype, override: dict[str, float]) -> dict[str, float]:
    from torch.testing._comparison import default_tolerances

    rtol, atol = default_tolerances(dtype)
    return {"atol": max(atol, override.get("atol", 0.0)), "rtol": max(rtol, override.get("rtol", 0.0))}


# ---------------------------------------------------------------------------------------------------------
# Moving samples between devices with their exact layout


class Mirror:
    """Copies tensors to a device keeping sizes, strides, storage offset, and aliasing between them: tensors
    that share a CPU storage share one copied storage, so in-place samples and expanded (stride-0) inputs
    behave on the device exactly as on the CPU."""

    def __init__(self, device: str, noncontiguous: bool = False) -> None:
        self.device = device
        self.noncontiguous = noncontiguous
        self._storages: dict[int, torch.Tensor] = {}

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        if getattr(t, "stays_on_cpu", False):  # see HOST_ARGS
            return t
        if t.layout != torch.strided:
            return t.to(self.device)
        with torch.no_grad():
            if t.is_conj() or t.is_neg():
                t = t.resolve_conj().resolve_neg()
            if self.noncontiguous and t.is_contiguous() and t.numel() > 0:
                out = self._noncontiguous(t)
            else:
                out = self._same_layout(t)
        return out.requires_grad_(t.requires_grad) if t.requires_grad else out

    def _same_layout(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        key = st.data_ptr() if st.nbytes() else id(t)
        flat = self._storages.get(key)
        if flat is None or flat.dtype != t.dtype:
            n = st.nbytes() // t.element_size()
            host = torch.empty(0, dtype=t.dtype).set_(st, 0, (n,), (1,))
            flat = host.to(self.device)
            self._storages[key] = flat
        return flat.as_strided(t.shape, t.stride(), t.storage_offset())

    def _noncontiguous(self, t: torch.Tensor) -> torch.Tensor:
        """Like PyTorch's noncontiguous_like: every other element of a bigger buffer whose gaps hold a value
        nobody should read (NaN, 12, True)."""
        if t.dtype.is_floating_point or t.dtype.is_complex:
            fill: Any = math.nan
        elif t.dtype == torch.bool:
            fill = True
        else:
            fill = 12
        host = torch.full((*t.shape, 2), fill, dtype=t.dtype)
        host[..., 0] = t
        return host.to(self.device)[..., 0]

    def __call__(self, x: Any) -> Any:
        def one(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return self.tensor(v)
            if isinstance(v, torch.device) and v.type == "cpu":
                return torch.device(self.device)
            if isinstance(v, str) and v == "cpu":  # a device named by a string (x.to("cpu", torch.float64))
                return self.device
            return v

        return tree_map(one, x)

    def sample(self, s: SampleInput) -> SampleInput:
        kwargs = self(s.kwargs)
        return SampleInput(self(s.input), args=self(s.args), kwargs=kwargs,
                           output_process_fn_grad=s.output_process_fn_grad, broadcasts_input=s.broadcasts_input,
                           name=s.name)


def to_cpu(x: Any) -> Any:
    return tree_map(lambda v: v.detach().cpu() if isinstance(v, torch.Tensor) else v, x)


def cpu_copy(s: SampleInput) -> SampleInput:
    """A fresh CPU copy of a sample (same layout and aliasing), for runs that mutate their inputs."""
    return Mirror("cpu").sample(s)


# ---------------------------------------------------------------------------------------------------------
# Comparing


def assert_matches(actual: Any, expected: Any, tol: dict[str, float], values: bool = True,
                   on_device: bool = True) -> None:
    """actual (toony) equals expected (CPU) leaf by leaf: same structure, shapes and dtypes, (if on_device)
    tensors on toony, and (if values) values within tol (an OpInfo override, else each output dtype's
    assert_close default), NaNs equal."""
    a_leaves, a_spec = tree_flatten(actual)
    e_leaves, e_spec = tree_flatten(expected)
    if a_spec != e_spec:
        raise AssertionError(f"output structure differs: toony {a_spec} vs CPU {e_spec}")
    for i, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        where = f" (output {i})" if len(e_leaves) > 1 else ""
        if isinstance(e, torch.Tensor):
            if not isinstance(a, torch.Tensor):
                raise AssertionError(f"toony returned {type(a).__name__}, CPU a tensor{where}")
            if on_device and a.device.type != DEVICE:
                raise AssertionError(f"toony output is on {a.device}, not on toony{where}")
            a = a.detach().cpu()
            if a.shape != e.shape or a.dtype != e.dtype:
                raise AssertionError(f"meta mismatch{where}: toony {a.dtype}{list(a.shape)} vs "
                                     f"CPU {e.dtype}{list(e.shape)}")
            if values:
                torch.testing.assert_close(a, e.detach(), equal_nan=True, check_device=False, msg=_msg(where),
                                           **_leaf_tol(e.dtype, tol))
        elif values:
            torch.testing.assert_close(a, e, equal_nan=True)


def _msg(where: str) -> Callable[[str], str]:
    return lambda m: m + where


# ---------------------------------------------------------------------------------------------------------
# The checks


def pick(items: Iterable[Any], k: int) -> list[Any]:
    """k items spread evenly over items (all of them if there are at most k)."""
    items = list(items)
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)] if k > 1 else items[:1]


@dataclass
class Run:
    """What one check did: samples compared, and whether values were only shape/dtype-checked."""

    samples: int = 0
    skipped: int = 0  # samples the CPU itself rejects (toony raised too)
    meta_only: str | None = None


def has_tensors(s: SampleInput) -> bool:
    """Whether the sample has a tensor argument (a sample of Python scalars only runs on the CPU)."""
    return any(isinstance(t, torch.Tensor) for t in tree_flatten((s.input, s.args, s.kwargs))[0])


def _call(fn: Callable, s: SampleInput, **extra: Any) -> Any:
    return fn(s.input, *s.args, **s.kwargs, **extra)


# Ops whose returned indices may legitimately differ from the CPU's where the input has ties: the docs leave
# the order of equal elements (unstable sort, topk) or the index chosen among equal values unspecified.
_TIE_OPS = {"sort", "argsort", "topk", "kthvalue", "median", "nanmedian", "mode"}


def _dim_arg(s: SampleInput, position: int) -> int:
    if "dim" in s.kwargs:
        return s.kwargs["dim"]
    return s.args[position] if len(s.args) > position and isinstance(s.args[position], int) else -1


def ties_explain_mismatch(op: OpInfo, s: SampleInput, actual: Any, expected: Any) -> bool:
    """True if toony's result is as valid as the CPU's and differs only in which of several equal elements
    its indices pick: values equal exactly, and the input at toony's indices holds those values."""
    if op.name not in _TIE_OPS or not isinstance(s.input, torch.Tensor) or s.kwargs.get("stable"):
        return False
    x = s.input.detach()
    dim = _dim_arg(s, 1 if op.name in ("topk", "kthvalue") else 0)  # (input, k, dim)
    try:
        if x.dim() == 0:
            return False
        if op.name == "argsort":
            a, e = to_cpu(actual), expected
            return bool(torch.equal(x.gather(dim, a), x.gather(dim, e)) and _distinct(a, dim))
        (av, ai), (ev, _) = to_cpu(tuple(actual)), tuple(expected)
        if not torch.equal(av.nan_to_num(), ev.nan_to_num()) or not torch.equal(av.isnan(), ev.isnan()):
            return False
        keep = op.name in ("sort", "topk") or s.kwargs.get("keepdim") or (len(s.args) > 1 and s.args[-1] is True)
        idx = ai if keep else ai.unsqueeze(dim)
        picked = x.gather(dim, idx)
        want = av if keep else av.unsqueeze(dim)
        same = torch.equal(picked.nan_to_num(), want.nan_to_num()) and torch.equal(picked.isnan(), want.isnan())
        return bool(same and (op.name not in ("sort", "topk") or _distinct(ai, dim)))
    except (RuntimeError, IndexError, TypeError, ValueError):
        return False


def _distinct(idx: torch.Tensor, dim: int) -> bool:
    """No index repeats along dim (the result is a selection, not a guess)."""
    if idx.numel() == 0:
        return True
    s = idx.sort(dim).values
    return not bool((s.narrow(dim, 1, s.shape[dim] - 1) == s.narrow(dim, 0, s.shape[dim] - 1)).any()) \
        if s.shape[dim] > 1 else True


def _compare(op: OpInfo, dtype: torch.dtype, run: Run, actual: Any, expected: Any, tol: dict[str, float],
             on_device: bool = True, sample: SampleInput | None = None) -> None:
    """Compare values unless the op's values are not comparable with the CPU's; then only shapes/dtypes."""
    reason = not_comparable_reason(op, dtype)
    if reason is not None:
        assert_matches(actual, expected, tol, values=False, on_device=on_device)
        run.meta_only = reason
        return
    try:
        assert_matches(actual, expected, tol, on_device=on_device)
    except AssertionError:
        if sample is not None and ties_explain_mismatch(op, sample, actual, expected):
            assert_matches(actual, expected, tol, values=False, on_device=on_device)
            return
        if not is_random(op):
            raise
        assert_matches(actual, expected, tol, values=False, on_device=on_device)
        run.meta_only = "random output: toony's random stream is not the CPU's"


def _run_both(op: OpInfo, fn: Callable, cpu_s: SampleInput, dev_s: SampleInput, run: Run) -> tuple[Any, Any] | None:
    """fn on the CPU sample and on the toony sample. If the CPU raises, toony must raise too (then None)."""
    try:
        expected = cpu_s.output_process_fn_grad(_call(fn, cpu_s))
    except Exception as cpu_err:
        try:
            to_cpu(_call(fn, dev_s))  # realized: a lazy op must not defer its error to the read
        except Exception:
            run.skipped += 1
            return None
        raise AssertionError(f"the CPU raises but toony does not: {type(cpu_err).__name__}: {cpu_err}") from None
    actual = dev_s.output_process_fn_grad(_call(fn, dev_s))
    return actual, expected


def _samples(op: OpInfo, dtype: torch.dtype, k: int, reference: bool = False, **kw: Any) -> list[SampleInput]:
    gen = op.reference_inputs("cpu", dtype, **kw) if reference else op.sample_inputs("cpu", dtype, **kw)
    out = pick(gen, k)
    if not out:
        raise NotApplicable("the OpInfo has no samples for this dtype")
    for sample in out:
        for i in HOST_ARGS.get(op.name, ()):
            if i < len(sample.args) and isinstance(sample.args[i], torch.Tensor):
                sample.args[i].stays_on_cpu = True
    return out


# arguments an OpInfo's samples create on the CPU whatever the device under test (no `device=`), and which the
# op requires there: PyTorch's own device tests leave them on the CPU, so the mirror does too
HOST_ARGS: dict[str, tuple[int, ...]] = {"tensor_split": (0,)}

# Ops that read their input's storage rather than its elements (as_strided's strides index the storage from
# the tensor's offset; resize_ exposes the storage behind the old view): on a non-contiguous copy they see the
# gaps, so their reference is the CPU run on the same non-contiguous layout (PyTorch marks its own
# noncontiguous-samples test for as_strided an expected failure for this reason).
STORAGE_OPS = {"as_strided", "as_strided_copy", "as_strided_scatter", "resize_", "resize_as_"}


def _noncontig_reference(op: OpInfo, s: SampleInput) -> SampleInput:
    """The CPU sample a non-contiguous toony run is compared with: the original, or for STORAGE_OPS a fresh
    CPU copy with the same non-contiguous layout."""
    return Mirror("cpu", noncontiguous=True).sample(s) if op.name in STORAGE_OPS else s


def _finish(run: Run) -> Run:
    if run.samples == 0 and run.skipped:
        raise NotApplicable("the CPU rejects every sample (toony does too)")
    if run.meta_only is not None:
        raise NotComparable(run.meta_only)
    return run


def check_sample(op: OpInfo, dtype: torch.dtype, k: int = DEFAULT_CAPS["sample"]) -> Run:
    """Results for the OpInfo's reference inputs (sample inputs plus extra reference cases)."""
    tol, run = tolerances(op, dtype), Run()
    for s in _samples(op, dtype, k, reference=True):
        dev_s = Mirror(DEVICE).sample(s)
        both = _run_both(op, op, s, dev_s, run)
        if both is not None:
            _compare(op, dtype, run, *both, tol, on_device=has_tensors(dev_s), sample=s)
            run.samples += 1
    return _finish(run)


def check_noncontig(op: OpInfo, dtype: torch.dtype, k: int = DEFAULT_CAPS["noncontig"]) -> Run:
    """The op on non-contiguous toony copies of its sample inputs, against the CPU on the originals."""
    tol, run = tolerances(op, dtype), Run()
    for s in _samples(op, dtype, k):
        dev_s = Mirror(DEVICE, noncontiguous=True).sample(s)
        both = _run_both(op, op, _noncontig_reference(op, s), dev_s, run)
        if both is not None:
            _compare(op, dtype, run, *both, tol, on_device=has_tensors(dev_s), sample=s)
            run.samples += 1
    return _finish(run)


def _out_like(expected: Any, device: str, kind: str) -> Any:
    """out= tensors for expected's leaves: "same" (right shape, garbage-filled), "empty" (0 elements: the op
    must resize it), "strided" (right shape, every other element of a bigger buffer)."""

    def one(e: Any) -> Any:
        if not isinstance(e, torch.Tensor):
            return e
        if kind == "empty":
            return torch.empty(0, dtype=e.dtype, device=device)
        host = torch.empty(e.shape, dtype=e.dtype)
        host = host.fill_(math.nan) if host.is_floating_point() or host.is_complex() else host.fill_(7)
        if kind == "same":
            return host.to(device)
        return Mirror(device, noncontiguous=True).tensor(host)

    return tree_map(one, expected)


def check_out(op: OpInfo, dtype: torch.dtype, k: int = DEFAULT_CAPS["out"]) -> Run:
    """The out= variant: right-sized, empty (resized), and non-contiguous out tensors. The CPU runs the same
    out= call only to see whether it refuses it; the values toony must write are the CPU's functional result
    (the CPU's own out= path can be wrong: torch 2.13's gelu leaves a non-contiguous out unwritten)."""
    if not op.supports_out:
        raise NotApplicable("no out= variant")
    tol, run = tolerances(op, dtype), Run()
    for s in _samples(op, dtype, k):
        try:
            functional = _call(op, s)
        except Exception:
            continue  # the CPU rejects the sample itself; check_sample covers toony's error
        if isinstance(functional, torch.Tensor):
            pass
        elif not (isinstance(functional, tuple) and all(isinstance(t, torch.Tensor) for t in functional)):
            continue  # outputs that are not tensors have no out= form
        for kind in ("same", "empty", "strided"):
            cpu_out = _out_like(functional, "cpu", kind)
            dev_out = _out_like(functional, DEVICE, kind)
            dev_s = Mirror(DEVICE).sample(s)
            with _quiet_resize_warning():
                try:
                    cpu_returned = _call(op, s, out=cpu_out)
                except Exception as cpu_err:
                    try:
                        _call(op, dev_s, out=dev_out)
                        to_cpu(dev_out)
                    except Exception:
                        run.skipped += 1
                        continue
                    raise AssertionError(f"out={kind}: the CPU raises but toony does not: "
                                         f"{type(cpu_err).__name__}: {cpu_err}") from None
                returned = _call(op, dev_s, out=dev_out)
            if cpu_returned is None and returned is not None:  # out= overloads returning () give None
                raise AssertionError(f"out={kind}: the CPU returns None, toony {type(returned).__name__}")
            if cpu_returned is not None and not _same_objects(returned, dev_out):
                raise AssertionError(f"out={kind}: the op did not return its out= tensor(s)")
            try:
                _compare(op, dtype, run, s.output_process_fn_grad(dev_out), s.output_process_fn_grad(functional),
                         tol, sample=s)
            except AssertionError as e:
                raise AssertionError(f"out={kind}: {e}") from None
            run.samples += 1
    return _finish(run)


@contextlib.contextmanager
def _quiet_resize_warning() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*out=.*resized.*")
        warnings.filterwarnings("ignore", message=".*An output with one or more elements was resized.*")
        yield


def _same_objects(returned: Any, out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return returned is out
    return isinstance(returned, tuple) and len(returned) == len(out) and all(r is o for r, o in zip(returned, out))


def check_inplace(op: OpInfo, dtype: torch.dtype, k: int = DEFAULT_CAPS["inplace"]) -> Run:
    """The in-place variant on the samples and on two non-contiguous ones: same values as the CPU's, returns
    self; where the CPU refuses (an input that would need broadcasting, a result dtype self cannot hold),
    toony must refuse too."""
    fn = op.get_inplace()
    if fn is None:
        raise NotApplicable("no in-place variant")
    tol, run = tolerances(op, dtype), Run()
    samples = [s for s in _samples(op, dtype, k) if isinstance(s.input, torch.Tensor)]
    cases = [(s, False) for s in samples] + [(s, True) for s in samples[:2]]
    for s, noncontig in cases:
        cpu_s = _noncontig_reference(op, s) if noncontig else cpu_copy(s)
        dev_s = Mirror(DEVICE, noncontiguous=noncontig).sample(s)
        try:
            cpu_ret = _call(fn, cpu_s)
        except Exception as cpu_err:
            try:
                _call(fn, dev_s)
                to_cpu(dev_s.input)
            except Exception:
                run.skipped += 1
                continue
            raise AssertionError(f"the CPU in-place op raises but toony's does not: "
                                 f"{type(cpu_err).__name__}: {cpu_err}") from None
        dev_ret = _call(fn, dev_s)
        if (cpu_ret is cpu_s.input) and dev_ret is not dev_s.input:
            raise AssertionError("the in-place op did not return self")
        _compare(op, dtype, run, dev_s.input, cpu_s.input, tol)
        run.samples += 1
    return _finish(run)


def _grad_inputs(s: SampleInput) -> list[torch.Tensor]:
    leaves = tree_flatten((s.input, s.args, s.kwargs))[0]
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]


def _differentiable(out: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0]
            if isinstance(t, torch.Tensor) and t.requires_grad and (t.is_floating_point() or t.is_complex())]


def check_grad(op: OpInfo, dtype: torch.dtype, k: int = DEFAULT_CAPS["grad"]) -> Run:
    """Gradients (float32): d(sum(out * cotangent))/d(input) for every input that requires grad, toony vs CPU."""
    if dtype != torch.float32:
        raise NotApplicable("gradients are checked for float32 only")
    if not op.supports_autograd or dtype not in op.supported_backward_dtypes(DEVICE):
        raise NotApplicable("the op has no float32 backward")
    if not_comparable_reason(op, dtype) is not None or is_random(op):
        raise NotApplicable("values not comparable with the CPU, so neither are gradients")
    tol, run = tolerances(op, dtype), Run()
    for s in _samples(op, dtype, k, requires_grad=True):
        cpu_in = _grad_inputs(s)
        if not cpu_in:
            continue
        dev_s = Mirror(DEVICE).sample(s)
        dev_in = _grad_inputs(dev_s)
        try:
            cpu_out = _differentiable(s.output_process_fn_grad(_call(op, s)))
            if not cpu_out:
                continue
            cotangents = [torch.randn_like(t) for t in cpu_out]
            cpu_grads = torch.autograd.grad(cpu_out, cpu_in, cotangents, allow_unused=True)
        except Exception:
            continue  # the CPU rejects the sample (or has no backward for it); check_sample covers the forward
        dev_out = _differentiable(dev_s.output_process_fn_grad(_call(op, dev_s)))
        if len(dev_out) != len(cpu_out):
            raise AssertionError(f"toony gives {len(dev_out)} differentiable outputs, the CPU {len(cpu_out)}")
        dev_grads = torch.autograd.grad(dev_out, dev_in, [c.to(DEVICE) for c in cotangents], allow_unused=True)
        assert_matches(list(dev_grads), list(cpu_grads), tol)
        run.samples += 1
    if run.samples == 0:
        raise NotApplicable("no sample has a differentiable input and output")
    return run


CHECK_FNS: dict[str, Callable[..., Run]] = {
    "sample": check_sample,
    "noncontig": check_noncontig,
    "out": check_out,
    "inplace": check_inplace,
    "grad": check_grad,
}


# ---------------------------------------------------------------------------------------------------------
# Outcomes, for the sweep


@dataclass
class Outcome:
    check: str
    status: str  # "pass", "fail", "skip" (ran, values not comparable), "n/a" (check does not apply)
    kind: str = ""  # a short error kind for failures, the reason for skip / n/a
    detail: str = ""
    samples: int = 0
    seconds: float = 0.0
    fallbacks: list[str] = field(default_factory=list)


def _first_line(s: str) -> str:
    for line in s.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def classify(e: BaseException) -> str:
    """A short, stable name for a failure, for grouping: missing kernels by ATen op, wrong values, or the
    exception type and its first line."""
    msg = str(e)
    if "has no kernels for dtype" in msg:
        return "unsupported dtype"
    if "has no toony kernel and the CPU fallback is off" in msg:
        return "no kernel: " + msg.split("toony: ", 1)[-1].split(" has no toony kernel")[0]
    if isinstance(e, AssertionError):
        first = _first_line(msg)
        if "meta mismatch" in first:
            return "wrong shape/dtype"
        if "not close" in msg or "not equal" in msg or "Scalars are not" in msg:
            prefix = first.split(":")[0] + ": " if first.startswith("out=") else ""
            return prefix + "wrong values"
        return "assert: " + _trim(first)
    return f"{type(e).__name__}: {_trim(_first_line(msg))}"


def _trim(s: str, n: int = 90) -> str:
    import re

    s = re.sub(r"0x[0-9a-f]+", "0x..", s)
    s = re.sub(r"\[[0-9, ]+\]|\([0-9, ]+\)", "[..]", s)  # shapes vary between samples; the cause does not
    return s if len(s) <= n else s[: n - 3] + "..."


def run_check(op: OpInfo, dtype: torch.dtype, check: str, caps: dict[str, int] | None = None) -> Outcome:
    """Run one check with the fallback off and turn what happened into an Outcome (never raises)."""
    caps = caps or DEFAULT_CAPS
    t0 = time.perf_counter()
    torch.manual_seed(0)
    try:
        with fallback_disabled():
            run = CHECK_FNS[check](op, dtype, caps[check])
        out = Outcome(check, "pass", samples=run.samples)
    except NotApplicable as e:
        out = Outcome(check, "n/a", kind=str(e))
    except NotComparable as e:
        out = Outcome(check, "skip", kind=f"values not compared: {e}")
    except Exception as e:
        out = Outcome(check, "fail", kind=classify(e), detail=_trim(_first_line(str(e)), 300))
    out.seconds = time.perf_counter() - t0
    return out


def fallback_ops(op: OpInfo, dtype: torch.dtype, check: str, caps: dict[str, int] | None = None) -> tuple[bool, list]:
    """Re-run a check with the CPU fallback on: (passes then?, the ATen ops that fell back)."""
    import torch_toony

    caps = caps or DEFAULT_CAPS
    torch.manual_seed(0)
    torch_toony.reset_metrics()
    old = os.environ.pop("TOONY_FALLBACK", None)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            CHECK_FNS[check](op, dtype, caps[check])
        ok = True
    except (NotApplicable, NotComparable):
        ok = True
    except Exception:
        ok = False
    finally:
        if old is not None:
            os.environ["TOONY_FALLBACK"] = old
    return ok, sorted(torch_toony.metrics()["fallbacks"])
