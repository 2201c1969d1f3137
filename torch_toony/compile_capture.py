"""One ATen graph, lowered once for one input layout and captured as a replayable toony_core program.

The graph is walked once with lazy toony_core Tensors: placeholders are lazy views of input buffers, each
node runs its lowering (the eager table, or compile_ops for views, factories and random numbers), and
nothing runs. Then every output and every input mutation is scheduled together (fusion across the whole
graph) and captured (toony_core.jit). An op with no lowering splits the capture (compile_fallback).

A call binds buffers and launches. Inputs and outputs are slots of the program: a toony tensor's storage
buffer is bound in place; a CPU tensor's memory is bound in place too where the OpenCL device works in host
memory (PoCL), else staged through a device buffer. Input mutations are in-place writes into the input's
slot after everything else. Outputs that alias an input are returned as that view of the real input, and
outputs that are views of one intermediate as views of one fresh storage, as eager would.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._pytree import tree_flatten, tree_map

from toony_core import Tensor as Lazy
from toony_core import device as cl_device
from toony_core import dtypes
from toony_core.jit import JitBuilder, JitProgram, base_buffer, can_use_host_memory, host_memory
from toony_core.runtime import Buffer, ToonyError

from . import storage
from .compile_fallback import add_cpu_step, host_bytes
from .compile_meta import Meta, Sizes, contiguous_strides, dense_order, meta_tensor
from .compile_ops import NOOPS, RANDOM_OPS, NodeContext, compile_lowering
from .dtypes import UnsupportedDtype, to_toony
from .lowering import LOWERINGS
from .metrics import count_kernels

aten = torch.ops.aten
_NO_LOWERING = object()
_warned: set[str] = set()


def warn_fallback(name: str, why: str = "it has no toony lowering") -> None:
    """Once per op: the compiled graph runs this op on the CPU."""
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"toony: {name} runs on the CPU inside the compiled graph ({why}; copy out, run, copy in). "
                      "Set TOONY_FALLBACK=0 to make this an error.", stacklevel=3)


_SYM_OPS = {aten.sym_size.int, aten.sym_stride.int, aten.sym_numel.default, aten.sym_storage_offset.default}


def op_name(op: torch._ops.OpOverload) -> str:
    """The lowering table's key for an op ("add.Tensor"); ops outside aten keep their namespace."""
    ns, _, name = op._schema.name.partition("::")
    return f"{name}.{op._overloadname}" if ns == "aten" else f"{ns}.{name}.{op._overloadname}"


def is_supported(target: Any) -> bool:
    """Whether a graph node's target lowers to toony kernels (or needs no kernel at all)."""
    if not isinstance(target, torch._ops.OpOverload):
        return True  # getitem and symbolic-size arithmetic run in Python at capture
    return compile_lowering(target) is not None or target in NOOPS or target in _SYM_OPS or \
        target is aten.copy_.default or (op_name(target) in LOWERINGS and not _seeded(target))


def _seeded(op: torch._ops.OpOverload) -> bool:
    return torch.Tag.nondeterministic_seeded in op.tags


def _shape_to(value: Lazy, m: Meta) -> Lazy:
    """A lowering's result cast and shaped like torch's metadata says the op returns (as eager.new_output)."""
    if m.numel == 0:  # (eval-mode batch norm's saved statistics are empty, whatever the lowering returns)
        return Lazy.zeros(m.shape, to_toony(m.dtype))
    value = value.cast(to_toony(m.dtype))
    if tuple(value.shape) != m.shape:
        value = value.reshape(m.shape) if value.numel() == m.numel else value.expand(m.shape)
    return value


def _splitmix(x: Lazy) -> Lazy:
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    return x ^ (x >> 31)


# ---------------------------------------------------------------- plans (what a call does)

@dataclass
class _Input:
    kind: str  # "cpu" or "toony" (a tensor bound to a slot), "empty", "value"
    buffer: Buffer | None = None
    mutated: bool = False


@dataclass
class _Group:
    """One storage several outputs are views of: each call allocates it and returns views into it."""

    buffer: Buffer | None
    extent: int  # elements
    dtype: torch.dtype
    device: str
    root: int | None = None  # the root computing the whole storage, if one does (else views are assigned)


@dataclass
class _Output:
    kind: str  # "tensor" (computed into a slot), "view" (of a group), "alias", "empty", "value", "none"
    value: Any = None  # "value": the Python value; "alias": the input index; "view": the group index
    meta: Meta | None = None
    buffer: Buffer | None = None
    offset_delta: int = 0  # "alias": the view's offset relative to the input's own offset


class Capture:
    """The graph lowered for one input layout: a JitProgram plus how to bind inputs and build outputs."""

    def __init__(self, gm: torch.fx.GraphModule, args: list[Any], strict: bool):
        self.gm = gm
        self.strict = strict
        self.sizes = Sizes()
        self.builder = JitBuilder()
        self.env: dict[torch.fx.Node, Any] = {}
        self.inputs: list[_Input] = []
        self.mutations: dict[int, Lazy] = {}
        self.groups: list[_Group] = []
        self.seed: Buffer | None = None
        self.rng_device = "cpu"
        self._fallbacks: list[str] = []
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        self.placeholder_index = {n: i for i, n in enumerate(placeholders)}
        for n, a in zip(placeholders, args):
            self._learn_sizes(n.meta.get("val"), a)
        for n, a in zip(placeholders, args):
            self.env[n] = self._input(n, a)
        output_node = None
        for node in gm.graph.nodes:
            if node.op == "call_function":
                self.env[node] = self._call(node)
            elif node.op == "get_attr":
                self.env[node] = self._constant(getattr(gm, node.target))
            elif node.op == "output":
                output_node = node
        assert output_node is not None
        self.outputs = self._plan_outputs(output_node.args[0], placeholders, args)
        self.program: JitProgram = self.builder.finish()
        self.slot_of = {id(b): i for i, b in enumerate(self.program.slots)}
        self.env.clear()
        self.kernels = self.program.kernels
        self.fallback_ops = list(self._fallbacks)
        self._queue = cl_device().queue
        self._host_memory = can_use_host_memory()
        self._staging: dict[int, Buffer] = {}

    # ---- inputs
    def _learn_sizes(self, val: Any, a: Any) -> None:
        if isinstance(val, torch.Tensor) and isinstance(a, torch.Tensor):
            for s, r in zip(val.shape, a.shape):
                self.sizes.learn(s, r)
            for s, r in zip(val.stride(), a.stride()):
                self.sizes.learn(s, r)
            self.sizes.learn(val.storage_offset(), a.storage_offset())
        elif isinstance(val, torch.SymInt):
            self.sizes.learn(val, a)

    def _input(self, node: torch.fx.Node, a: Any) -> Any:
        if not isinstance(a, torch.Tensor):
            self.inputs.append(_Input("value"))
            return a
        dt = to_toony(a.dtype, "torch.compile input")
        if a.numel() == 0:
            self.inputs.append(_Input("empty"))
            return Lazy.zeros(tuple(a.shape), dt)
        # a slot over the storage bytes the view can reach; kernels read it through the view's strides
        extent = a.storage_offset() + 1 + sum((n - 1) * s for n, s in zip(a.shape, a.stride()))
        buf = self.builder.slot(extent * a.element_size())
        self.inputs.append(_Input(a.device.type, buf))
        base = Lazy.from_buffer(buf, dt, extent)
        if a.storage_offset() == 0 and a.is_contiguous() and a.numel() == extent:
            return base.reshape(tuple(a.shape))
        return base.as_strided(tuple(a.shape), tuple(a.stride()), a.storage_offset())

    def _constant(self, t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        c = t.detach().to("cpu").contiguous()
        return Lazy(c.numpy() if c.dtype != torch.bfloat16 else c.float().numpy(), to_toony(c.dtype))

    # ---- nodes
    def _call(self, node: torch.fx.Node) -> Any:
        target = node.target
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: self.env[n])
        if target is operator.getitem:
            return args[0][args[1]]
        if not isinstance(target, torch._ops.OpOverload):
            return target(*args, **kwargs)  # symbolic-size arithmetic on this call's integers
        if target in NOOPS:
            return None
        val = node.meta.get("val")
        if target in _SYM_OPS or (val is not None and not isinstance(val, (torch.Tensor, list, tuple))):
            return self.sizes.int(val)
        if target is aten.copy_.default:
            return self._mutation(node, args[1])
        if val is None:
            raise NotImplementedError(f"toony: the graph node {node.name} ({target}) has no metadata to lower with")
        meta = self.sizes.meta(val)
        try:
            res = self._lower(node, target, args, kwargs, meta)
        except (NotImplementedError, UnsupportedDtype) as e:
            # a lowering that exists but cannot take these arguments: the op runs on the CPU like one without
            if self.strict:
                raise NotImplementedError(f"toony: {target} cannot be lowered here ({e}) and the CPU fallback is "
                                          "off (strict mode / TOONY_FALLBACK=0)") from e
            warn_fallback(str(target), str(e))
            return self._fallback(node, target, args, kwargs, meta)
        return self._fallback(node, target, args, kwargs, meta) if res is _NO_LOWERING else res

    def _lower(self, node: torch.fx.Node, target: Any, args: Any, kwargs: Any, meta: Any) -> Any:
        special = compile_lowering(target)
        if special is not None:
            arg_metas = [self._meta_of(a) for a in node.args]
            ctx = NodeContext(meta, arg_metas, lambda shape, stream, _n=node: self._bits(_n, shape, stream))
            if target in RANDOM_OPS:
                self.rng_device = meta.device if isinstance(meta, Meta) else meta[0].device
            return self._shape_all(special(ctx, *args, **kwargs), meta)
        low = LOWERINGS.get(op_name(target))
        if low is None or _seeded(target):  # a random op replayed from the shared table would repeat its numbers
            return _NO_LOWERING
        if low.pointwise:
            margs, mkwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: meta_tensor(self._meta_of(n)))
            dt = to_toony(low.compute_dtype(margs, mkwargs, meta_tensor(meta)))
            args, kwargs = tree_map(lambda x: x.cast(dt) if isinstance(x, Lazy) else x, (args, kwargs))
        return self._shape_all(low.fn(*args, **kwargs), meta)

    def _meta_of(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            val = a.meta.get("val")
            return self.sizes.meta(val) if val is not None else None
        return None

    def _shape_all(self, res: Any, meta: Any) -> Any:
        if isinstance(meta, Meta):
            return _shape_to(res, meta)
        if isinstance(meta, list):
            return [None if r is None or not isinstance(m, Meta) else _shape_to(r, m) for r, m in zip(res, meta)]
        return res

    def _mutation(self, node: torch.fx.Node, value: Lazy) -> Lazy:
        dst = node.args[0]
        if dst not in self.placeholder_index:
            raise NotImplementedError(f"toony: copy_ into {dst} (not a graph input) in a compiled graph")
        i = self.placeholder_index[dst]
        m = self._meta_of(dst)
        value = _shape_to(value, m) if isinstance(value, Lazy) else Lazy.full(m.shape, value, to_toony(m.dtype))
        self.mutations[i] = value
        self.inputs[i].mutated = True
        return value

    def _bits(self, node: torch.fx.Node, shape: tuple[int, ...], stream: int) -> Lazy:
        """Counter-based random words: splitmix64 of (element index, a key from this call's seed and the node)."""
        if self.seed is None:
            self.seed = Buffer(8)
        seed = Lazy.from_buffer(self.seed, dtypes.uint64, 1).reshape(())
        node_id = list(self.gm.graph.nodes).index(node) * 2 + stream
        key = _splitmix(seed ^ Lazy((node_id * 0x9E3779B97F4A7C15) % 2**64, dtypes.uint64))
        n = math.prod(shape)
        idx = Lazy.arange(n, dtype=dtypes.uint64) if n else Lazy.zeros((0,), dtypes.uint64)
        return _splitmix(idx * 0x9E3779B97F4A7C15 + key.reshape(1).expand(n)).reshape(shape)

    # ---- the CPU fallback inside a captured graph
    def _fallback(self, node: torch.fx.Node, op: torch._ops.OpOverload, args: Any, kwargs: Any, meta: Any) -> Any:
        if self.strict:
            raise NotImplementedError(f"toony: {op} has no toony lowering and the CPU fallback is off "
                                      "(strict mode / TOONY_FALLBACK=0)")
        self._fallbacks.append(str(op))
        node_leaves = tree_flatten((node.args, node.kwargs))[0]
        arg_metas = [self._meta_of(n) for n in node_leaves]
        outs, realized = add_cpu_step(self.builder, op, args, kwargs, meta, arg_metas)
        if len(node_leaves) == len(tree_flatten((args, kwargs))[0]):
            for i, r in realized:  # later readers read the realized buffers instead of computing again
                if isinstance(node_leaves[i], torch.fx.Node):
                    self.env[node_leaves[i]] = r
        return outs

    # ---- outputs and the final schedule
    @staticmethod
    def _own_root(flat: Lazy, used: set[Any]) -> Lazy:
        """A root whose buffer is this output's alone: output storages are fresh every call, so a value that is
        already a buffer, or that another output computes too, is copied."""
        while base_buffer(flat) is not None or flat.uop in used:
            flat = flat.contiguous()
        used.add(flat.uop)
        return flat

    def _new_group(self, key: Any, metas: list[Meta], roots: list[Lazy], used: set[Any]) -> int:
        """A storage shared by several outputs. When a node of the graph holds the whole storage densely (the
        intermediate the outputs are views of), it is computed once as the storage; otherwise each output is
        written into the storage at its own view."""
        m = metas[0]
        extent = max(v.offset + 1 + sum((n - 1) * st for n, st in zip(v.shape, v.stride)) for v in metas if v.numel)
        for node, value in self.env.items():
            val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
            if not isinstance(val, torch.Tensor) or not isinstance(value, Lazy) or \
                    StorageWeakRef(val.untyped_storage()) != key:
                continue
            bm = self.sizes.meta(val)
            order = dense_order(bm)
            if order is None or bm.offset != 0 or bm.numel < extent or bm.dtype != m.dtype:
                continue
            flat = value.permute(order).reshape(bm.numel) if len(bm.shape) else value.reshape(1)
            roots.append(self._own_root(flat, used))
            self.groups.append(_Group(None, bm.numel, m.dtype, m.device, len(roots) - 1))
            return len(self.groups) - 1
        buf = self.builder.slot(extent * torch.empty((), dtype=m.dtype).element_size())
        self.groups.append(_Group(buf, extent, m.dtype, m.device))
        return len(self.groups) - 1

    def _plan_outputs(self, outs: Any, placeholders: list[torch.fx.Node], args: list[Any]) -> list[_Output]:
        in_storage = {}
        for i, n in enumerate(placeholders):
            val = n.meta.get("val")
            if isinstance(val, torch.Tensor) and isinstance(args[i], torch.Tensor):
                in_storage.setdefault(StorageWeakRef(val.untyped_storage()), i)
        # outputs that share a storage (views of one intermediate) must share one in the results too:
        # aot_autograd rebuilds such aliases from each other
        sharing: dict[Any, list[torch.fx.Node]] = {}
        for node in outs:
            if isinstance(node, torch.fx.Node) and isinstance(node.meta.get("val"), torch.Tensor):
                val = node.meta["val"]
                sharing.setdefault(StorageWeakRef(val.untyped_storage()), []).append(node)
        plans: list[_Output] = []
        roots: list[Lazy] = []
        root_of: list[tuple[int, int]] = []  # (root index, plan index) of each output computed on its own
        used: set[Any] = set()  # uops of roots that become output storages
        group_of: dict[Any, int] = {}
        for node in outs:
            if not isinstance(node, torch.fx.Node):
                plans.append(_Output("none" if node is None else "value", node))
                continue
            val = node.meta.get("val")
            value = self.env[node]
            if not isinstance(val, torch.Tensor):
                plans.append(_Output("value", self.sizes.int(val) if val is not None else value))
                continue
            m = self.sizes.meta(val)
            key = StorageWeakRef(val.untyped_storage())
            if key in in_storage:  # a view of an input: return that view of the real input
                i = in_storage[key]
                base_off = self.sizes.int(placeholders[i].meta["val"].storage_offset())
                plans.append(_Output("alias", i, m, offset_delta=m.offset - base_off))
                continue
            if m.numel == 0:
                plans.append(_Output("empty", None, m))
                continue
            group = sharing[key]
            if len(group) > 1 and len({g.meta["val"].dtype for g in group}) == 1:
                if key not in group_of:
                    metas = [self.sizes.meta(g.meta["val"]) for g in group]
                    group_of[key] = self._new_group(key, metas, roots, used)
                g = self.groups[group_of[key]]
                if g.root is None:
                    target = Lazy.from_buffer(g.buffer, to_toony(m.dtype), g.extent)
                    roots.append(target.assign_strided(m.shape, m.stride, m.offset, value))
                plans.append(_Output("view", group_of[key], m))
                continue
            order = dense_order(m)
            if order is None:  # not dense (an expanded view): return it contiguous, as eager does
                m = Meta(m.dtype, m.shape, contiguous_strides(m.shape), 0, m.device)
                order = list(range(len(m.shape)))
            flat = value.permute(order).reshape(m.numel) if len(m.shape) else value.reshape(1)
            plans.append(_Output("tensor", None, m))
            roots.append(self._own_root(flat, used))
            root_of.append((len(roots) - 1, len(plans) - 1))
        n_outputs = len(roots)
        try:  # input mutations written straight into the inputs, in the same schedule (fused with their values)
            done = self.builder.schedule(roots + self._input_writes(args, self.mutations))
        except ToonyError:  # a kernel would read an input after its write: compute first, write afterwards
            done = self.builder.schedule(roots + list(self.mutations.values()))
            values = dict(zip(self.mutations, done[n_outputs:]))
            # writes into inputs come last: every kernel reading an input's old values has run
            self.builder.schedule(self._input_writes(args, values))
        for k, plan_i in root_of:
            bb = base_buffer(done[k])
            assert bb is not None
            plans[plan_i].buffer = bb[0]
            self.builder.make_slot(bb[0])
        for g in self.groups:
            if g.root is not None:
                bb = base_buffer(done[g.root])
                assert bb is not None
                g.buffer = bb[0]
                self.builder.make_slot(bb[0])
        return plans

    def _input_writes(self, args: list[Any], values: dict[int, Lazy]) -> list[Lazy]:
        """In-place writes of new values into the graph inputs aot_autograd mutates (BatchNorm's running stats)."""
        writes = []
        for i, v in sorted(values.items()):
            a, slot = args[i], self.inputs[i].buffer
            if slot is None:
                continue
            target = Lazy.from_buffer(slot, to_toony(a.dtype), slot.nbytes // a.element_size())
            writes.append(target.assign_strided(tuple(a.shape), tuple(a.stride()), a.storage_offset(),
                                                v.reshape(tuple(a.shape))))
        return writes

    # ---- a call
    def run(self, args: list[Any]) -> list[Any]:
        bindings: list[Any] = list(self.program.slots)
        slot_of = self.slot_of
        host = self._host_memory
        cpu = False
        copy_back: list[tuple[Buffer, torch.Tensor]] = []  # CPU memory staged through a device buffer
        for a, inp in zip(args, self.inputs):
            kind = inp.kind
            if kind == "toony":
                addr = a.untyped_storage().data_ptr()
                buf = storage.write_buffer(addr, whole=False) if inp.mutated else storage.read_buffer(addr)
                bindings[slot_of[id(inp.buffer)]] = buf
            elif kind == "cpu":
                cpu = True
                bindings[slot_of[id(inp.buffer)]] = self._bind_cpu(a.untyped_storage(), inp, host, copy_back)
        if self.seed is not None:
            self.seed.copyin(np.array([self._next_seed()], np.uint64))
        fresh: list[Any] = []
        for plan in self.outputs:
            if plan.kind != "tensor":
                fresh.append(None)
                continue
            m = plan.meta
            out = self._new_output(m.shape, m.stride, m.dtype, m.device, plan.buffer, bindings, copy_back, host)
            cpu = cpu or m.device != "toony"
            fresh.append(out)
        bases = []
        for g in self.groups:
            bases.append(self._new_output((g.extent,), (1,), g.dtype, g.device, g.buffer, bindings, copy_back, host))
            cpu = cpu or g.device != "toony"
        self.program(bindings)
        count_kernels(self.kernels)
        for buf, dst in copy_back:
            buf.copyout(host_bytes(dst))  # blocking: waits for the kernels
        if cpu:
            self._queue.finish()  # CPU memory the kernels used in place holds its values now
        results: list[Any] = []
        for plan, out in zip(self.outputs, fresh):
            kind = plan.kind
            if kind == "tensor":
                results.append(out)
            elif kind == "view":
                m = plan.meta
                results.append(bases[plan.value].as_strided(m.shape, m.stride, m.offset))
            elif kind == "alias":
                a = args[plan.value]
                m = plan.meta
                off = a.storage_offset() + plan.offset_delta
                same = tuple(a.shape) == m.shape and tuple(a.stride()) == m.stride and off == a.storage_offset()
                results.append(a if same else a.as_strided(m.shape, m.stride, off))
            elif kind == "empty":
                m = plan.meta
                results.append(torch.empty_strided(m.shape, m.stride, dtype=m.dtype,
                                                   device="toony" if m.device == "toony" else "cpu"))
            else:
                results.append(plan.value)
        return results

    def _new_output(self, shape: tuple[int, ...], stride: tuple[int, ...], dtype: torch.dtype, device: str,
                    slot: Buffer, bindings: list[Any], copy_back: list[tuple[Buffer, torch.Tensor]],
                    host: bool) -> torch.Tensor:
        """A fresh output tensor whose memory is bound to the slot the kernels write it through."""
        if device == "toony":
            out = torch.empty_strided(shape, stride, dtype=dtype, device="toony")
            addr = out.untyped_storage().data_ptr()
            buf = storage.write_buffer(addr, whole=True)
        else:
            out = torch.empty_strided(shape, stride, dtype=dtype)
            buf = self._bind_cpu(out.untyped_storage(), None, host, copy_back, slot.nbytes)
        bindings[self.slot_of[id(slot)]] = buf
        return out

    def _bind_cpu(self, st: torch.UntypedStorage, inp: _Input | None, host: bool,
                  copy_back: list[tuple[Buffer, torch.Tensor]], nbytes: int = 0) -> Any:
        """A CPU storage for a slot: used in place where the device works in host memory, else staged."""
        nbytes = inp.buffer.nbytes if inp is not None else nbytes
        ptr = st.data_ptr()
        if host and ptr % 64 == 0:
            return host_memory(ptr, nbytes)
        raw = torch.empty(0, dtype=torch.uint8).set_(st, 0, (nbytes,), (1,))
        key = id(inp) if inp is not None else ptr
        buf = self._staging.get(key)
        if buf is None or buf.nbytes != nbytes:
            buf = self._staging[key] = Buffer(nbytes)
        if inp is not None:
            buf.copyin(raw.numpy())
            if inp.mutated:
                copy_back.append((buf, raw))
        else:
            copy_back.append((buf, raw))
        return buf

    def _next_seed(self) -> int:
        if self.rng_device == "toony":
            from . import device_module
            from .fallback import _mix64
            gen = device_module.default_generators[0]
            offset = gen.get_offset()
            gen.set_offset(offset + 1)
            return _mix64(gen.initial_seed(), offset)
        return int(torch.empty((), dtype=torch.int64).random_().item())
