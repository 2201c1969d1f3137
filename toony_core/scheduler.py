"""The scheduler: cut a lazy graph into kernels.

Elementwise work and movement ops always fuse into whoever consumes them. A node is materialized (ends a
kernel and gets a buffer) only when it must be:
  - it is a realize target, a CONTIGUOUS, or an ASSIGN (a write into an existing buffer);
  - it is a reduction that cannot live inside its consumer: consumed by several kernels, reached through a
    movement op that scrambles its indices (anything but EXPAND), nested in a reduction over an axis it
    still varies along, or broadcast along an axis some other reduction in the same kernel varies along.
A reduction broadcast along an output axis makes that axis a serial loop of its kernel (softmax: the row
max and row sum are computed once per row, then the row is written), so softmax is one kernel.
"""

from __future__ import annotations

import heapq
import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .dtype import DType, dtypes
from .helpers import prod, strides_for
from .runtime import Buffer, ConstantBuffer, ToonyError
from .uop import ALU, ELEMENTWISE, LIBM, MOVEMENT, Ops, PatternMatcher, UOp, UPat, graph_rewrite

# lazily evaluated nodes that were realized, and the buffer view that now holds their value
realized: weakref.WeakKeyDictionary[UOp, UOp] = weakref.WeakKeyDictionary()

# a kernel whose serial per-row loops would cover more than this many elements with fewer than
# MIN_PARALLEL rows runs its broadcast reductions as separate kernels instead (x - x.mean() on 16M floats)
MAX_SERIAL = 1 << 16
MIN_PARALLEL = 64


@dataclass
class ScheduleItem:
    """One kernel: an AST over DEFINE_GLOBAL parameters, and the buffers bound to them (output first)."""

    ast: UOp
    buffers: list[Buffer]
    reads: list[tuple[Buffer, int]] = field(default_factory=list)  # (buffer, version) read by this kernel

    @property
    def name(self) -> str:
        from .lower import kernel_name
        return kernel_name(self.ast)


def _substitute_realized(root: UOp) -> UOp:
    if not realized:
        return root
    pm = PatternMatcher([(UPat(name="x"), lambda x: realized.get(x))])
    return graph_rewrite(root, pm)


def kernel_shape(m: UOp) -> tuple[int, ...]:
    """The shape a materialized node's kernel iterates over (its stored value's shape)."""
    if m.op is Ops.ASSIGN:
        return m.src[1].shape
    if m.op is Ops.CONTIGUOUS:
        return m.src[0].shape
    return m.shape


def _kernel_value(m: UOp) -> UOp:
    return m.src[1] if m.op is Ops.ASSIGN else m.src[0] if m.op is Ops.CONTIGUOUS else m


class _Fusion:
    """Decides which nodes are materialized: each kernel's fused region is checked, and materializing a node
    re-checks only the kernels whose regions it changes, until no kernel needs another cut."""

    def __init__(self, nodes: list[UOp], roots: list[UOp]):
        self.mat: set[UOp] = set(roots)
        for n in nodes:
            if n.op in (Ops.CONTIGUOUS, Ops.ASSIGN):
                self.mat.add(n)
            if n.op is Ops.ASSIGN and n.src[0].op is not Ops.BUFFER:
                self.mat.add(n.src[0])
        for n in nodes:
            if n.op is Ops.ASSIGN:
                self._assign_hazard(n)
        self.regions: dict[UOp, Region] = {}
        self.owners: dict[UOp, set[UOp]] = {}  # node -> the kernels whose regions compute it inline
        order = {n: i for i, n in enumerate(nodes)}
        kernels = [m for m in nodes if m in self.mat and m.op is not Ops.BUFFER]
        for m in kernels:
            self._set_region(m)
        todo = [(order[m], m) for m in kernels]  # kernels to check, earliest first
        queued = set(kernels)
        while todo:
            _, m = heapq.heappop(todo)
            queued.discard(m)
            cut = self._cuts(m)
            if not cut:
                continue
            self.mat.update(cut)
            changed = {o for r in cut for o in self.owners.get(r, ())} | set(cut)
            for k in changed:
                self._set_region(k)
            # a kernel sharing a reduction with a changed one may now share it with another kernel too
            recheck = changed | {o for k in changed for r in self.regions[k].reduces for o in self.owners[r]}
            for k in recheck - queued:
                heapq.heappush(todo, (order[k], k))
                queued.add(k)

    def _set_region(self, m: UOp) -> None:
        for n in self.regions[m].nodes if m in self.regions else ():
            self.owners[n].discard(m)
        self.regions[m] = region = walk_region(m, self.mat)
        for n in region.nodes:
            self.owners.setdefault(n, set()).add(m)

    def _cuts(self, m: UOp) -> list[UOp]:
        """The nodes of m's region that must be materialized (the first found), or none."""
        region, shape = self.regions[m].reduces, kernel_shape(m)
        for r, ways in region.items():
            if len(self.owners[r]) > 1 or any(not w[0] or any(varies(r, w, d) for d in w[1]) for w in ways):
                return [r]
        # costly elementwise work broadcast inside a reduction (a matmul's GELU or layer-norm prologue) would be
        # recomputed once per output index along the broadcast axis: compute it once instead. Checked before the
        # loop axes: that kernel takes the prologue's own reductions along, which then no longer force the
        # matmul's output axes into serial loops
        costly = [c for b in self.regions[m].broadcasts if (c := _costly_work(b, self.mat)) is not None][:1]
        if costly:
            return costly
        dims = loop_dims(shape, region)
        for r, ways in region.items():
            if any(varies(r, w, d) for w in ways for d in dims):
                return [r]
        serial = prod(shape[d] for d in dims)
        parallel = prod(s for d, s in enumerate(shape) if d not in dims)
        if serial > MAX_SERIAL and parallel < MIN_PARALLEL:
            return list(region)
        return []

    def _assign_hazard(self, a: UOp) -> None:
        """A write whose value (or index) reads the written buffer anywhere but at the very element being
        written must read a copy: otherwise one work-item could read what another has already overwritten.
        Reading the same element means: only elementwise ops between the stored value and a read through
        exactly the written view."""
        target, view = a.src[0], a.arg[0]
        if target.op is not Ops.BUFFER:
            return
        for operand in a.src[1:]:
            if _reads_elsewhere(operand, target, view):
                self.mat.add(operand)


def _reads_elsewhere(root: UOp, target: UOp, view: tuple | None) -> bool:
    stack, seen = [(root, True)], set()
    while stack:
        node, same_element = stack.pop()
        if (node, same_element) in seen:
            continue
        seen.add((node, same_element))
        if node is target:
            if same_element and _whole_view(view, target.shape):
                continue  # a 1-D buffer written whole and read whole
            return True  # read through some other view (or as a whole)
        if node.op is Ops.STRIDED and node.src[0] is target and same_element and node.arg == view:
            continue
        if node.op is Ops.RESHAPE and node.src[0] is target and same_element and _whole_view(view, node.shape):
            continue  # the whole buffer read in the shape it is written in: element for element
        keeps = same_element and node.op in ELEMENTWISE
        stack.extend((s, keeps) for s in node.src)
    return False


def _whole_view(view: tuple | None, shape: tuple[int, ...]) -> bool:
    """Is the write's view the whole buffer, row-major in `shape` (so a reshape to `shape` reads it alike)?"""
    return view is not None and view[0] == shape and tuple(view[1]) == strides_for(shape) and view[2] == 0


# how a reduction is reached from a kernel: (only through nodes that keep indices?, the axes that enclosing
# reductions reduce over, and for each axis of the node the kernel axis it is (None: a unit axis a reshape
# inserted; (REDUCE, axis): a reduced axis that is no kernel axis))
Way = tuple[bool, frozenset, tuple]


@dataclass
class Region:
    """What a kernel computes inline: the reductions it reaches (and how), every node it walks through, and
    the sources of broadcasts inside its reductions along one of its output axes."""

    reduces: dict[UOp, list[Way]]
    nodes: set[UOp]
    broadcasts: list[UOp]


def walk_region(m: UOp, stop: set[UOp]) -> Region:
    """Walk kernel node m's sources without crossing a node in `stop`."""
    region = Region({}, set(), [])
    seen: set[tuple[UOp, bool, frozenset[int], tuple]] = set()
    root_rank = len(kernel_shape(m))
    stack = list(_children(m, True, frozenset(), tuple(range(root_rank))))
    while stack:
        state = stack.pop()
        node, simple, axes, dims = state
        if state in seen or node in stop:
            continue
        seen.add(state)
        region.nodes.add(node)
        if node.op is Ops.REDUCE:
            region.reduces.setdefault(node, []).append((simple, axes, dims))
        elif node.op is Ops.EXPAND and axes:
            # along kernel axis k when every axis standing for k is broadcast (a merge can join a broadcast
            # axis with one that is not)
            broadcast: dict[int, bool] = {}
            for n, big, k in zip(node.src[0].shape, node.shape, dims):
                if isinstance(k, int) and k not in axes and big > 1:
                    broadcast[k] = broadcast.get(k, True) and n == 1
            if any(broadcast.values()):
                region.broadcasts.append(node.src[0])
        stack.extend(_children(node, simple, axes, dims))
    return region


def fused_reduces(m: UOp, stop: set[UOp]) -> dict[UOp, list[Way]]:
    """Every REDUCE reached from kernel node m without crossing a node in `stop`, with the ways it is reached."""
    return walk_region(m, stop).reduces


# ops worth computing once rather than once per broadcast index (a load costs about as much as a few adds)
_EXPENSIVE = LIBM | {Ops.EXP, Ops.EXP2, Ops.LOG, Ops.LOG2, Ops.SIN, Ops.COS, Ops.TAN, Ops.TANH, Ops.ERF, Ops.SQRT,
                     Ops.RSQRT, Ops.POW, Ops.ATAN2, Ops.FDIV, Ops.IDIV, Ops.MOD}
_CHEAP_OPS = 4


def _costly_work(u: UOp, stop: set[UOp]) -> UOp | None:
    """The elementwise work under movement ops at u if it is worth materializing (an expensive op or a few
    cheap ones above its loads), else None."""
    while u.op in MOVEMENT and u.op is not Ops.STRIDED:
        u = u.src[0]
    if u in stop or u.op not in ALU:
        return None
    seen, stack, cheap = set(), [u], 0
    while stack:
        n = stack.pop()
        if n in seen or n in stop or n.op in (Ops.REDUCE, Ops.BUFFER, Ops.GATHER):
            continue
        seen.add(n)
        cheap += n.op in ALU
        if n.op in _EXPENSIVE or cheap >= _CHEAP_OPS:
            return u
        stack.extend(n.src)
    return None


def varies(r: UOp, way: Way, d: int) -> bool:
    """Does reduction r's value change along kernel axis d (reached this way)?"""
    return any(k == d and n > 1 for k, n in zip(way[2], r.shape))


def loop_dims(shape: tuple[int, ...], reduces: dict[UOp, list[Way]]) -> set[int]:
    """Output axes some reduction is broadcast along: the kernel loops over them serially, so the reduction
    is computed once and reused instead of once per output element."""
    return {d for r, ways in reduces.items() for d in range(len(shape))
            if shape[d] > 1 and any(d not in w[1] and not varies(r, w, d) for w in ways)}


def _reshape_dims(node: UOp, dims: tuple[int | None, ...]) -> tuple[int | None, ...] | None:
    """The kernel axes of a reshape's source when the reshape only inserts or drops unit axes and merges runs of
    adjacent axes into one (each merged source axis then stands for the kernel axis it became part of: a value
    varying along it varies along that axis); None when it splits an axis."""
    src, dst = node.src[0].shape, node.shape
    out: list[int | None] = [None] * len(src)
    sources = iter(a for a, n in enumerate(src) if n != 1)
    for d, n in enumerate(dst):
        size = 1
        while size < n and (a := next(sources, None)) is not None:
            size *= src[a]
            out[a] = dims[d]
        if size != n:
            return None
    return tuple(out) if next(sources, None) is None else None


def _children(node: UOp, simple: bool, axes: frozenset[int], dims: tuple[int | None, ...]) -> list[tuple]:
    """The sources of a node with the path state they are reached in (see Way)."""
    if node.op is Ops.ASSIGN:
        return [(s, simple, axes, dims) for s in node.src[1:]]
    if node.op is Ops.REDUCE:
        # a reduced axis that is no kernel axis (a reshape dropped it) gets a name of its own, so reductions
        # nested inside can still be checked against it
        inner = tuple((node, a) if a in node.arg[1] and k is None else k for a, k in enumerate(dims))
        return [(node.src[0], simple, axes | frozenset(inner[a] for a in node.arg[1]), inner)]
    if node.op is Ops.GATHER:
        return [(node.src[0], False, axes, (None,) * len(node.src[0].shape)), (node.src[1], simple, axes, dims)]
    if node.op is Ops.RESHAPE and simple and (mapped := _reshape_dims(node, dims)) is not None:
        return [(node.src[0], True, axes, mapped)]
    if node.op is Ops.PERMUTE:  # axes move, each stays one axis: a transposed matmul result still fuses
        inverse = [0] * len(dims)
        for i, a in enumerate(node.arg):
            inverse[a] = dims[i]
        return [(node.src[0], simple, axes, tuple(inverse))]
    if node.op in (Ops.SHRINK, Ops.FLIP):  # in-bounds index changes along the same axes (a PAD is not:
        return [(node.src[0], simple, axes, dims)]  # it would read a reduction out of bounds)
    if node.op in ELEMENTWISE or node.op in (Ops.EXPAND, Ops.CONTIGUOUS):
        return [(s, simple, axes, dims if len(s.shape) == len(dims) else (None,) * len(s.shape)) for s in node.src]
    return [(s, False, axes, (None,) * len(s.shape)) for s in node.src]


def create_schedule(roots_in: list[UOp]) -> tuple[list[ScheduleItem], dict[UOp, UOp]]:
    """Kernels that realize `roots` (in a runnable order), and for each root the buffer view holding it."""
    requested = [_substitute_realized(r) for r in roots_in]
    # a reshape of the result costs nothing: realize what is under it and hand back a reshaped view
    roots = list(dict.fromkeys(_strip_reshapes(r) for r in requested))
    sink = UOp(Ops.SINK, None, tuple(roots))
    nodes = sink.toposort()[:-1]
    fusion = _Fusion(nodes, roots)
    order = [n for n in nodes if n in fusion.mat and n.op is not Ops.BUFFER]

    # buffers: ASSIGN writes into its target, everything else gets a new one (intermediates reuse freed ones)
    last_use: dict[UOp, int] = {}
    for i, m in enumerate(order):
        for n in _region_inputs(m, fusion.mat):
            last_use[n] = i
    buffers: dict[UOp, Buffer] = {}
    free: dict[int, list[Buffer]] = {}
    root_set = set(roots)
    for i, m in enumerate(order):
        if m.op is Ops.ASSIGN:
            t = m.src[0]
            buffers[m] = t.arg[0] if t.op is Ops.BUFFER else buffers[t]
        else:
            nbytes = prod(m.shape) * m.dtype.itemsize
            reuse = free.get(nbytes) if m not in root_set else None
            buffers[m] = reuse.pop() if reuse else Buffer(nbytes)
        for n, last in last_use.items():
            if last == i and n in buffers and n not in root_set and n.op is not Ops.ASSIGN \
                    and not _feeds_assign(n, order):
                free.setdefault(buffers[n].nbytes, []).append(buffers[n])

    items = [_make_item(m, buffers, fusion.mat) for m in order]
    _check_write_after_read(items, order)
    from .horizontal import merge_horizontal  # (it builds on this module's regions)
    items = merge_horizontal(items, _input_positions(order, fusion.mat))
    flat: dict[UOp, UOp] = {}
    for r in roots:
        if r.op is Ops.BUFFER:
            flat[r] = r
            continue
        buf = buffers[r]
        if r.op is Ops.ASSIGN:
            buf.version += 1
        flat[r] = UOp(Ops.BUFFER, r.dtype, (), (buf, prod(r.shape), buf.version))
    outputs: dict[UOp, UOp] = {}
    for orig, r in zip(roots_in, requested):
        base = flat[_strip_reshapes(r)]
        outputs[orig] = base if len(r.shape) == 1 else UOp(Ops.RESHAPE, r.dtype, (base,), r.shape)
    return items, outputs


def _input_positions(order: list[UOp], mat: set[UOp]) -> list[list[int]]:
    """For each kernel, the positions of the kernels it reads (an in-place write also follows its target)."""
    pos = {m: i for i, m in enumerate(order)}
    out = []
    for m in order:
        deps = [pos[n] for n in _region_inputs(m, mat) if n in pos]
        if m.op is Ops.ASSIGN and m.src[0] in pos:
            deps.append(pos[m.src[0]])
        out.append(deps)
    return out


def _strip_reshapes(u: UOp) -> UOp:
    while u.op is Ops.RESHAPE:
        u = u.src[0]
    return u


def _feeds_assign(n: UOp, order: list[UOp]) -> bool:
    return any(m.op is Ops.ASSIGN and m.src[0] is n for m in order)


def _region_inputs(m: UOp, mat: set[UOp]) -> list[UOp]:
    """The materialized nodes (and buffers) kernel m reads."""
    out, seen, stack = [], set(), list(m.src)
    if m.op is Ops.ASSIGN:
        stack = list(m.src[1:]) + ([m.src[0]] if m.src[0].op is Ops.BUFFER else [])
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in mat or n.op is Ops.BUFFER:
            out.append(n)
        else:
            stack.extend(n.src)
    return out


# float constants that stay literals in kernel source: integral values (sizes, counts) and the ones the
# rewrite rules look for; every other float constant (a learning rate, an optimizer's bias correction) is
# read from a small buffer, so a kernel run again with new values is the same compiled kernel
_LIFTED_DTYPES = (dtypes.float32, dtypes.float64)
_const_buffers: OrderedDict[tuple, Buffer] = OrderedDict()
CONST_BUFFERS_KEPT = 1024


def _lifted(x: UOp) -> bool:
    return x.op is Ops.CONST and x.dtype in _LIFTED_DTYPES and math.isfinite(x.arg) and x.arg != int(x.arg)


def _constants_buffer(dtype: DType, values: tuple[float, ...]) -> Buffer:
    key = (dtype, values)
    buf = _const_buffers.get(key)
    if buf is None:
        buf = _const_buffers[key] = ConstantBuffer(np.array(values, dtype=dtype.np))
        if len(_const_buffers) > CONST_BUFFERS_KEPT:
            _const_buffers.popitem(last=False)
    _const_buffers.move_to_end(key)
    return buf


def _kernel_constants(roots: list[UOp], m: UOp, mat: set[UOp]) -> dict[DType, list[float]]:
    """The liftable float constants a kernel computes with (not looking into other kernels), per dtype."""
    found: dict[DType, list[float]] = {}
    stack, seen = list(roots), set()
    while stack:
        n = stack.pop()
        if n in seen or (n in mat and n is not m) or n.op is Ops.BUFFER:
            continue
        seen.add(n)
        if _lifted(n) and n.arg not in found.setdefault(n.dtype, []):
            found[n.dtype].append(n.arg)
        stack.extend(n.src)
    return {dt: sorted(vs) for dt, vs in found.items() if vs}


def _make_item(m: UOp, buffers: dict[UOp, Buffer], mat: set[UOp]) -> ScheduleItem:
    out_buf = buffers[m]
    params: list[Buffer] = [out_buf]
    reads: list[tuple[Buffer, int]] = []

    def param(buf: Buffer, numel: int, dtype) -> UOp:  # noqa: ANN001
        if buf not in params:
            params.append(buf)
        return UOp(Ops.DEFINE_GLOBAL, dtype, (), (params.index(buf), numel))

    roots = [_kernel_value(m)] + ([m.src[2]] if m.op is Ops.ASSIGN and len(m.src) > 2 else [])
    constants = _kernel_constants(roots, m, mat)
    tables = {dt: (param(_constants_buffer(dt, tuple(vs)), len(vs), dt), vs) for dt, vs in constants.items()}

    def leaf(x: UOp) -> UOp | None:
        if _lifted(x) and not (x in mat and x is not m):  # (a constant another kernel realizes is its buffer)
            table, values = tables[x.dtype]
            i = values.index(x.arg)
            return UOp(Ops.RESHAPE, x.dtype, (UOp(Ops.SHRINK, x.dtype, (table,), ((i, i + 1),)),), ())
        if x.op is Ops.BUFFER:
            buf, numel, version = x.arg
            if version != buf.version:
                raise ToonyError("a lazy value reads a buffer that was written after it was built; realize readers "
                                 "before writing (this is a bug in the caller)")
            reads.append((buf, version))
            return param(buf, numel, x.dtype)
        if x in mat and x is not m:
            flat = param(buffers[x], prod(x.shape), x.dtype)
            return flat if x.op is Ops.ASSIGN or len(x.shape) == 1 else UOp(Ops.RESHAPE, x.dtype, (flat,), x.shape)
        return None

    pm = PatternMatcher([(UPat(name="x"), leaf)])
    value = graph_rewrite(_kernel_value(m), pm)
    out = UOp(Ops.DEFINE_GLOBAL, m.dtype, (), (0, out_buf.nbytes // m.dtype.itemsize))
    if m.op is Ops.ASSIGN:
        view, acc = m.arg
        index = graph_rewrite(m.src[2], pm) if len(m.src) > 2 else None
        store = UOp(Ops.STORE, None, (out, value) + ((index,) if index is not None else ()), (view, acc))
    else:
        shape = kernel_shape(m)
        store = UOp(Ops.STORE, None, (out, value), ((shape, strides_for(shape), 0), None))
    return ScheduleItem(UOp(Ops.SINK, None, (store,)), params, reads)


def _check_write_after_read(items: list[ScheduleItem], order: list[UOp]) -> None:
    """An in-place write (ASSIGN) must not run before a kernel that reads the buffer's previous contents.
    Data order puts readers of the new contents after it; readers of the old contents are the caller's to
    realize first (the torch layer does, before any mutation)."""
    for i, m in enumerate(order):
        if m.op is Ops.ASSIGN and m.src[0].op is Ops.BUFFER:
            buf, _, version = m.src[0].arg
            if any(b is buf and v == version for it in items[i + 1:] for b, v in it.reads):
                raise ToonyError("a kernel reads a buffer's old contents after an in-place write to it in the same "
                                 "schedule; realize the reader first")
