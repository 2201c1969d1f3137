"""The `toony` torch.compile backend: `torch.compile(model, backend="toony")`.

Registered through the `torch_dynamo_backends` entry point, so it works right after install with no
`import torch_toony`. dynamo's FX graph goes through aot_autograd (forward, backward and inference ATen
graphs, functionalized) with a decomposition table chosen for toony: ATen's core decompositions, plus any
other decomposition torch has for an op toony cannot lower, minus every op toony lowers natively. Each ATen
graph is lowered once per input layout through the same lowering table as the eager device, scheduled as
one graph, and captured (see compile_capture); a call binds buffers and replays the kernels.

Options: `torch.compile(m, backend="toony", options={"strict": True})` (or TOONY_FALLBACK=0) makes an op
toony cannot lower an error naming the op instead of a CPU fallback inside the graph.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from toony_core.helpers import debug_level

from .compile_capture import Capture, is_supported, op_name, warn_fallback
from .compile_ops import COMPILE_LOWERINGS, NOOPS, compile_lowering
from .dtypes import UnsupportedDtype
from .lowering import LOWERINGS

aten = torch.ops.aten

# decompositions torch has that toony does better without: views and copies are movement ops here, and
# random ops need the compiled graph's per-call seed (compile_ops)
_KEEP = {aten._to_copy.default, aten.empty_strided.default, aten.new_empty_strided.default, aten.lift.default,
         aten.lift_fresh.default, aten.sym_numel.default, aten.is_same_size.default, aten.alias.default,
         aten.clone.default, aten.copy.default}


def _handled(op: Any) -> bool:
    return compile_lowering(op) is not None or op in NOOPS or (isinstance(op, torch._ops.OpOverload)
                                                        and op_name(op) in LOWERINGS)


def _extra_ok(op: Any) -> bool:
    """Whether a decomposition outside the core set is worth taking for an op toony does not lower."""
    if not isinstance(op, torch._ops.OpOverload) or op in _KEEP or op.is_view:
        return False
    name = op_name(op)
    base, overload = name.split(".", 1)
    if "out" in overload or base.endswith("_") or torch.Tag.nondeterministic_seeded in op.tags:
        return False
    return True


_table_cache: dict[int, dict] = {}


def decompositions() -> dict[Any, Callable]:
    """The decomposition table aot_autograd traces with (rebuilt when the lowering table grows)."""
    key = len(LOWERINGS) * 100_003 + len(COMPILE_LOWERINGS)
    if key in _table_cache:
        return _table_cache[key]
    from torch._decomp import core_aten_decompositions, decomposition_table

    table = {op: fn for op, fn in core_aten_decompositions().items() if not _handled(op) and op not in _KEEP}
    for op, fn in decomposition_table.items():
        if op not in table and not _handled(op) and _extra_ok(op):
            table[op] = fn
    _table_cache.clear()
    _table_cache[key] = table
    return table


def _strict(options: dict | None) -> bool:
    if options and "strict" in options:
        return bool(options["strict"])
    return os.environ.get("TOONY_FALLBACK", "1") == "0"


# input layouts (sizes of dynamic shapes, strides, offsets, devices) kept captured per graph, oldest dropped first
MAX_CAPTURES = 8


class CompiledGraph:
    """A compiled ATen graph. Lowers and captures on the first call with each input layout, then replays."""

    def __init__(self, gm: torch.fx.GraphModule, strict: bool):
        # aot_autograd hands us its argument list, which we empty so inputs can be freed early; an instance
        # attribute, because dynamo's disable() wrapper copies the instance __dict__ onto its wrapper
        self._boxed_call = True
        self.gm = gm
        self.strict = strict
        self.captures: dict[tuple, Capture] = {}
        self.capture_seconds = 0.0

    def __call__(self, args: list[Any]) -> list[Any]:
        key = tuple(_key(a) for a in args)
        cap = self.captures.get(key)
        if cap is None:
            start = time.perf_counter()
            try:
                cap = Capture(self.gm, args, self.strict)
            except UnsupportedDtype as e:  # an input toony has no kernels for (complex, ...): run the graph eagerly
                if self.strict:
                    raise
                warnings.warn(f"toony: this compiled graph runs eagerly ({e})", stacklevel=2)
                cap = _Eager(self.gm)
            self.capture_seconds += time.perf_counter() - start
            if debug_level() >= 1 and isinstance(cap, Capture):
                print(f"toony compile: {len(self.gm.graph.nodes)} graph nodes -> {cap.kernels} kernels, "
                      f"{len(cap.fallback_ops)} CPU fallbacks {cap.fallback_ops or ''}, captured in "
                      f"{(time.perf_counter() - start) * 1e3:.1f} ms")
            if len(self.captures) >= MAX_CAPTURES:  # each capture holds its intermediates' device memory
                del self.captures[next(iter(self.captures))]
            self.captures[key] = cap
        call_args = list(args)
        args.clear()
        return cap.run(call_args)


class _Eager:
    """A graph whose inputs toony cannot hold, run op by op by PyTorch (each op where its inputs live)."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm

    def run(self, args: list[Any]) -> list[Any]:
        return list(self.gm(*args))


def _key(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return (a.device.type, a.dtype, a.shape, a.stride(), a.storage_offset())
    return (type(a), a)


def compile_graph(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], strict: bool = False) -> CompiledGraph:
    """aot_autograd's compiler for one ATen graph: checks what lowers (strict mode raises naming the op)."""
    missing = sorted({str(n.target) for n in gm.graph.nodes if n.op == "call_function" and
                      not is_supported(n.target)})
    if missing and strict:
        raise NotImplementedError(f"toony: no toony lowering for {', '.join(missing)} in a compiled graph "
                                  "and the CPU fallback is off (strict mode / TOONY_FALLBACK=0)")
    for name in missing:
        warn_fallback(name)
    return CompiledGraph(gm, strict)


def toony_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], **kwargs: Any) -> Callable:
    """The dynamo backend registered as "toony"."""
    from functorch.compile import min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    import torch_toony  # noqa: F401 - registers the device (the entry point may run before anything imported it)

    strict = _strict(kwargs.get("options"))

    def compiler(g: torch.fx.GraphModule, ex: Sequence[Any]) -> CompiledGraph:
        return compile_graph(g, ex, strict)

    backend = aot_autograd(fw_compiler=compiler, bw_compiler=compiler, inference_compiler=compiler,
                           decompositions=decompositions(), partition_fn=min_cut_rematerialization_partition,
                           keep_inference_input_mutations=True)
    return backend(gm, example_inputs)
