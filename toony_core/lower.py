"""Lowering: a kernel AST of front-end ops becomes index arithmetic over loop variables.

The kernel's output axes are split into global axes (one work-item, or one work-group, each) and serial
loop axes (see schedule.loop_dims). Then `INDEX(node, valid, *idxs)`, read "node at these indices", is
pushed down the graph by the rules below until it reaches the kernel parameters, where it becomes a LOAD:
each movement op turns into arithmetic on the indices, padding into a validity mask, a reduction into an
accumulator over fresh loop ranges. The symbolic rules then simplify the indices.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from .dtype import DType, dtypes
from .helpers import getenv, prod, strides_for
from .runtime import device
from .scheduler import fused_reduces, loop_dims, walk_region
from .symbolic import symbolic
from .transcendental import transcendental
from .uop import ELEMENTWISE, REDUCE_IDENTITY, Ops, PatternMatcher, UOp, UPat, graph_rewrite

INT32_MAX = 2**31 - 1
UPCAST = 4
SPLIT_ACC = 8  # accumulators of a serial reduction in a kernel without register tiling


@dataclass
class LowerCtx:
    index: DType  # dtype of index arithmetic: int32, or int64 where some size needs it
    local: int  # work-group size splitting every reduction and serial loop; 1 = not grouped
    lid: UOp | None
    next_range: int = 0
    reduce_sizes: list[int] = field(default_factory=list)
    split: int = 1  # independent accumulators per serial reduction (see _reduce)

    def new_range(self, size: int) -> UOp:
        self.next_range += 1
        return UOp(Ops.RANGE, self.index, (), (self.next_range, size))

    def const(self, v: int) -> UOp:
        return UOp.const(v, self.index)


@dataclass(frozen=True)
class KernelInfo:
    name: str
    global_size: int  # work-items in all (a multiple of local_size when grouped)
    local_size: int | None  # None: let the driver choose (no local memory used)
    uops: UOp  # the lowered SINK


def _unflatten(flat: UOp, shape: tuple[int, ...]) -> list[UOp]:
    return [(flat // st) % n if n > 1 else UOp.const(0, flat.dtype) for n, st in zip(shape, strides_for(shape))]


def _flatten(idxs: tuple[UOp, ...], shape: tuple[int, ...], index: DType) -> UOp:
    acc = UOp.const(0, index)
    for i, st, n in zip(idxs, strides_for(shape), shape):
        if n > 1:
            acc = acc + i * st
    return acc


def _split_range(ctx: LowerCtx, n: int) -> tuple[UOp, UOp, UOp]:
    """A serial range of n elements shared by the work-group: element r*L + lid. Returns (range, elem, valid)."""
    L = ctx.local  # noqa: N806
    r = ctx.new_range(math.ceil(n / L))
    elem = r * L + ctx.lid
    valid = elem < n if n % L else UOp.const(True, dtypes.bool)
    return r, elem, valid


# ---------------------------------------------------------------- the lowering rules

def _idx(x: UOp, valid: UOp, idxs: list[UOp] | tuple[UOp, ...]) -> UOp:
    if x.op is Ops.REDUCE:  # a reduction ignores the consumer's mask (see _reduce): one node per position
        valid = UOp.const(True, dtypes.bool)
    return UOp(Ops.INDEX, x.dtype, (x, valid, *idxs))


def _elementwise(x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    return x.replace(src=tuple(_idx(s, valid, idxs) for s in x.src))


def _reshape(ctx: LowerCtx, x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    src = x.src[0]
    return _idx(src, valid, _unflatten(_flatten(idxs, x.shape, ctx.index), src.shape))


def _permute(x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    out: list[UOp] = [idxs[0]] * len(idxs)
    for i, a in enumerate(x.arg):
        out[a] = idxs[i]
    return _idx(x.src[0], valid, out)


def _expand(ctx: LowerCtx, x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    src = x.src[0]
    return _idx(src, valid, [ctx.const(0) if s == 1 and n != 1 else i for i, s, n in zip(idxs, src.shape, x.shape)])


def _pad(x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    src, inside, new = x.src[0], UOp.const(True, dtypes.bool), []
    for i, (b, _), n in zip(idxs, x.arg, src.shape):
        if (b, _) != (0, 0):
            inside = inside & i.ge(b) & (i < b + n)
        new.append(i - b if b else i)
    return inside.where(_idx(src, valid & inside, new), UOp.const(0, x.dtype))


def _shrink(x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    return _idx(x.src[0], valid, [i + s if s else i for i, (s, _) in zip(idxs, x.arg)])


def _flip(x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    return _idx(x.src[0], valid, [(n - 1) - i if d in x.arg else i for d, (i, n) in enumerate(zip(idxs, x.shape))])


def _strided(ctx: LowerCtx, x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    shape, strides, offset = x.arg
    flat = ctx.const(offset)
    for i, st, n in zip(idxs, strides, shape):
        if n > 1 and st:
            flat = flat + i * st
    return _idx(x.src[0], valid, [flat])


def _iota(ctx: LowerCtx, x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    return idxs[0].cast(x.dtype)


def _load(x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    return UOp(Ops.LOAD, x.dtype, (x, idxs[0], valid))


def _reduce(ctx: LowerCtx, x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    op, axes = x.arg
    src = x.src[0]
    axes = tuple(a for a in axes if src.shape[a] > 1)
    if not axes:
        return _idx(src, valid, idxs)
    sizes = tuple(src.shape[a] for a in axes)
    identity = UOp.const(REDUCE_IDENTITY[op](x.dtype), x.dtype)
    new = list(idxs)
    # the reduction's own indices are always in bounds (the scheduler never fuses one under a pad or a
    # gather), so it does not inherit the consumer's mask: that keeps it independent of the consumer's loops
    valid = UOp.const(True, dtypes.bool)
    if ctx.local > 1:
        r, elem, ok = _split_range(ctx, prod(sizes))
        for a, i in zip(axes, _unflatten(elem, sizes)):
            new[a] = i
        value = ok.where(_idx(src, valid & ok, new), identity)
        partial = UOp(Ops.ACC, x.dtype, (value, r), op)
        return UOp(Ops.GROUP_REDUCE, x.dtype, (partial, ctx.lid), (op, ctx.local))
    k = ctx.split if sizes[-1] % ctx.split == 0 and sizes[-1] >= 8 * ctx.split else 1
    # k accumulators, each over every k-th element of the innermost reduced axis, combined at the end: k
    # independent chains of adds instead of one long dependent chain (the CPU overlaps them)
    ranges = [ctx.new_range(n) for n in sizes[:-1]] + [ctx.new_range(sizes[-1] // k)]
    for a, r in zip(axes, ranges):
        new[a] = r
    parts = []
    for j in range(k):
        if k > 1:
            new[axes[-1]] = ranges[-1] * k + j
        parts.append(UOp(Ops.ACC, x.dtype, (_idx(src, valid, new), *ranges), op))
    while len(parts) > 1:
        parts = [parts[i].alu(op, parts[i + 1]) for i in range(0, len(parts), 2)]
    return parts[0]


def _gather(ctx: LowerCtx, x: UOp, valid: UOp, idxs: tuple[UOp, ...]) -> UOp:
    source, index = x.src
    n = prod(source.shape)
    i = _idx(index, valid, idxs).cast(ctx.index)
    ok = i.ge(0) & (i < n)  # out-of-range indices read 0 instead of faulting
    return ok.where(_idx(source, valid & ok, _unflatten(i, source.shape)), UOp.const(0, x.dtype))


def _rule(fn):  # noqa: ANN001, ANN202 - adapts fn(ctx, x, valid, idxs) to an INDEX pattern
    def apply(ctx: LowerCtx, i: UOp, **_: UOp) -> UOp:
        x, valid, *idxs = i.src
        return fn(ctx, x, valid, tuple(idxs))
    return apply


def _no_ctx(fn):  # noqa: ANN001, ANN202
    return _rule(lambda ctx, x, valid, idxs: fn(x, valid, idxs))


def _index_rule(ops: Ops | set[Ops], fn) -> tuple[UPat, object]:  # noqa: ANN001
    ops = {ops} if isinstance(ops, Ops) else ops
    return UPat(Ops.INDEX, name="i", predicate=lambda u: u.src[0].op in ops), fn


lowering = PatternMatcher([
    _index_rule(ELEMENTWISE, _no_ctx(_elementwise)),
    _index_rule(Ops.CONST, _no_ctx(lambda x, valid, idxs: x)),
    _index_rule(Ops.IOTA, _rule(_iota)),
    _index_rule(Ops.RESHAPE, _rule(_reshape)),
    _index_rule(Ops.PERMUTE, _no_ctx(_permute)),
    _index_rule(Ops.EXPAND, _rule(_expand)),
    _index_rule(Ops.PAD, _no_ctx(_pad)),
    _index_rule(Ops.SHRINK, _no_ctx(_shrink)),
    _index_rule(Ops.FLIP, _no_ctx(_flip)),
    _index_rule(Ops.STRIDED, _rule(_strided)),
    _index_rule(Ops.DEFINE_GLOBAL, _no_ctx(_load)),
    _index_rule(Ops.REDUCE, _rule(_reduce)),
    _index_rule(Ops.GATHER, _rule(_gather)),
])


# ---------------------------------------------------------------- a whole kernel

def _sizes(ast: UOp) -> int:
    return max([1] + [prod(u.shape) for u in ast.toposort() if u.op not in (Ops.SINK, Ops.STORE)])


def _depends_on(u: UOp, x: UOp) -> bool:
    return any(n is x for n in u.toposort())


def choose_local(serial_work: int, n_global: int) -> int:
    """Work-group size for a kernel whose work-items each do serial_work steps of reductions and loops.
    On a GPU, big serial work is split across a work-group (tree-combined in local memory) so no work-item
    loops over many elements alone and enough work-items are in flight. A CPU runs a whole work-group on
    one core, so there a group only adds barriers: work-items stay alone (huge reductions are split into
    two kernels by the front end instead). TOONY_LOCAL=1/0 forces the GPU choice on or off."""
    forced = getenv("TOONY_LOCAL", -1)
    if forced == 0 or (forced == -1 and not device().is_gpu) or serial_work < 256:
        return 1
    if n_global >= (1 << 16) and serial_work < 4096:
        return 1  # plenty of parallel outputs: one work-item each is fine
    return 256 if serial_work >= 8192 else 64


def choose_upcast(shape: tuple[int, ...], gdims: list[int], has_reduce: bool, serial: bool, local: int) -> list[int]:
    """Output axes each work-item computes UPCAST of (register tiling): a matrix product's work-item then
    computes a 4x4 block, loading 4 values of each operand per step for 16 multiply-adds. Not in a kernel with
    serial loops over whole rows (softmax, layer norm): 4 rows per work-item there just interleave 4 rows'
    passes (measured slower on PoCL: a 64M-element softmax 401 -> 255 ms without, an attention softmax with
    its mask 64 -> 9 ms)."""
    if local > 1 or not has_reduce or serial or getenv("TOONY_NOUPCAST"):
        return []
    dims: list[int] = []
    n_global = prod(shape[d] for d in gdims)
    for d in reversed(gdims):
        if len(dims) < 2 and shape[d] % UPCAST == 0 and n_global // UPCAST >= 1024:
            dims.append(d)
            n_global //= UPCAST
    return dims


def lower(ast: UOp) -> KernelInfo:
    """Lower a kernel AST: a SINK of one STORE, or of several over the same output shape (horizontal fusion),
    which then share the kernel's indices."""
    shape = ast.src[0].src[1].shape
    reduces: dict = {}
    for st in ast.src:
        value = st.src[1]
        reduces.update(walk_region(UOp(Ops.CONTIGUOUS, value.dtype, (value,)), set()).reduces)
    loops = loop_dims(shape, reduces)
    gdims = [d for d in range(len(shape)) if d not in loops]
    n_global = prod(shape[d] for d in gdims)
    n_loop = prod(shape[d] for d in loops)
    serial = n_loop + sum(prod(r.src[0].shape) // max(prod(r.shape), 1) for r in reduces)
    local = choose_local(serial, n_global)
    index = dtypes.int64 if _sizes(ast) > INT32_MAX else dtypes.int32
    lid = UOp(Ops.SPECIAL, index, (), ("lid", local)) if local > 1 else None
    ctx = LowerCtx(index, local, lid)

    upcast = choose_upcast(shape, gdims, bool(reduces), bool(loops), local)
    if reduces and not upcast and local == 1 and not getenv("TOONY_NOSPLIT"):
        ctx.split = SPLIT_ACC
    gsizes = tuple(shape[d] // UPCAST if d in upcast else shape[d] for d in gdims)
    n_global = prod(gsizes)
    gid = UOp(Ops.SPECIAL, index, (), ("group" if local > 1 else "gid", n_global))
    idxs: list[UOp] = [ctx.const(0)] * len(shape)
    unrolled: list[UOp] = []
    for d, i in zip(gdims, _unflatten(gid, gsizes)):
        if d in upcast:
            unrolled.append(ctx.new_range(UPCAST))
            i = i * UPCAST + unrolled[-1]
        idxs[d] = i
    valid = UOp.const(True, dtypes.bool)
    ldims = sorted(loops)
    if ldims and local > 1:
        _, elem, valid = _split_range(ctx, n_loop)
        for d, i in zip(ldims, _unflatten(elem, tuple(shape[d] for d in ldims))):
            idxs[d] = i
    else:
        for d in ldims:
            idxs[d] = ctx.new_range(shape[d])

    sink = UOp(Ops.SINK, None, tuple(_store(ctx, st, valid, idxs) for st in ast.src))
    sink = graph_rewrite(graph_rewrite(sink, lowering + transcendental, ctx), symbolic)
    if unrolled:
        sink = graph_rewrite(_unroll(sink, unrolled), symbolic)
    if lid is not None:  # a store every work-item of the group would make alike: only the first makes it
        sink = sink.replace(src=tuple(st if _depends_on(st.src[1], lid) else
                                      st.replace(src=(*st.src[:3], st.src[3] & lid.eq(0))) for st in sink.src))
        sink = graph_rewrite(sink, symbolic)
    name = kernel_name(ast, gdims, ldims, reduces, shape) + "".join(f"_u{shape[d]}" for d in upcast)
    return KernelInfo(name, n_global * local, local if local > 1 else None, sink)


def _store(ctx: LowerCtx, store: UOp, valid: UOp, idxs: list[UOp]) -> UOp:
    """A kernel-level STORE(out, value[, index]) as STORE(out, flat position, value at idxs, valid)."""
    out, value = store.src[0], store.src[1]
    val = _idx(value, valid, idxs)
    if len(store.src) > 2:  # scatter: the flat position comes from the index tensor
        pos = _idx(store.src[2], valid, idxs).cast(ctx.index)
        valid = valid & pos.ge(0) & (pos < out.arg[1])
    else:
        vshape, vstrides, offset = store.arg[0]
        pos = ctx.const(offset)
        for i, st, n in zip(idxs, vstrides, vshape):
            if n > 1 and st:
                pos = pos + i * st
    return UOp(Ops.STORE, None, (out, pos, val, valid), store.arg[1])


def _unroll(sink: UOp, ranges: list[UOp]) -> UOp:
    """One copy of the kernel's stores per value of the unrolled ranges. The copies share every node that
    does not depend on them, and their accumulators share the reduction loops (see linearize)."""
    stores: list[UOp] = []
    for values in itertools.product(*(range(r.arg[1]) for r in ranges)):
        subst = {r: UOp.const(v, r.dtype) for r, v in zip(ranges, values)}
        pm = PatternMatcher([(UPat(Ops.RANGE, name="r"), lambda r, subst=subst: subst.get(r))])
        stores.extend(graph_rewrite(sink, pm).src)
    return UOp(Ops.SINK, None, tuple(stores))


def kernel_name(ast: UOp, gdims: list[int] | None = None, ldims: list[int] | None = None,
                reduces: dict | None = None, shape: tuple[int, ...] | None = None) -> str:
    """E_ for elementwise kernels, r_ for kernels with reductions; then the global, loop and reduce sizes."""
    if shape is None:
        shape = ast.src[0].src[1].shape
        reduces = {}
        for st in ast.src:
            reduces.update(fused_reduces(UOp(Ops.CONTIGUOUS, st.src[1].dtype, (st.src[1],)), set()))
        ldims = sorted(loop_dims(shape, reduces))
        gdims = [d for d in range(len(shape)) if d not in ldims]
    parts = ["r" if reduces else "E"] + ([str(shape[d]) for d in gdims if shape[d] > 1] or ["1"])
    parts += [f"l{shape[d]}" for d in ldims or []]
    for r in reduces or {}:
        parts += [f"r{r.src[0].shape[a]}" for a in r.arg[1] if r.src[0].shape[a] > 1]
    parts += [f"x{len(ast.src)}"] if len(ast.src) > 1 else []  # the outputs of a horizontally fused kernel
    return "_".join(parts)
