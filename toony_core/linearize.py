"""Linearize: order a lowered kernel graph into nested loop blocks.

Every node lives in the innermost loop among the ranges it depends on, and is computed once there: a value
that does not depend on a loop is hoisted out of it (softmax's row max is computed before, not inside, the
loop that writes the row). An accumulator is declared outside its loops, updated inside, read after.
"""

from __future__ import annotations

from dataclasses import dataclass

from .uop import Ops, UOp

INLINE = {Ops.CONST, Ops.DEFINE_GLOBAL, Ops.RANGE, Ops.SINK}


@dataclass(frozen=True)
class AccDecl:
    """The declaration of an ACC's accumulator with the reduction's identity, before its loops."""

    acc: UOp


@dataclass(frozen=True)
class AccUpdate:
    """The `acc = op(acc, value)` step of an ACC, inside its innermost loop."""

    acc: UOp


@dataclass
class Loop:
    """A serial loop over a RANGE and the items computed inside it."""

    range: UOp
    body: list[Item]


Item = UOp | AccDecl | AccUpdate | Loop


def linearize(sink: UOp) -> list[Item]:
    nodes = sink.toposort()
    ranges_of: dict[UOp, frozenset[UOp]] = {}
    owner: dict[UOp, UOp] = {}  # range -> the ACC looping over it
    for u in nodes:
        if u.op is Ops.RANGE:
            ranges_of[u] = frozenset([u])
        elif u.op is Ops.ACC:
            ranges_of[u] = frozenset().union(*(ranges_of[s] for s in u.src)) - frozenset(u.src[1:])
            for r in u.src[1:]:
                owner[r] = u
        else:
            ranges_of[u] = frozenset().union(*(ranges_of[s] for s in u.src))
    store_loops = sorted((r for r in ranges_of[sink] if r not in owner), key=lambda r: r.arg[0])
    paths: dict[UOp, tuple[UOp, ...]] = {}

    def range_path(r: UOp) -> tuple[UOp, ...]:
        if r not in paths:
            if r in owner:
                acc = owner[r]
                mine = list(acc.src[1:])
                paths[r] = node_path(acc) + tuple(mine[:mine.index(r) + 1])
            else:
                paths[r] = tuple(store_loops[:store_loops.index(r) + 1])
        return paths[r]

    def node_path(u: UOp | AccUpdate) -> tuple[UOp, ...]:
        deps = ranges_of[u.acc].union(u.acc.src[1:]) if isinstance(u, AccUpdate) else ranges_of[u]
        best: tuple[UOp, ...] = ()
        for r in deps:
            p = range_path(r)
            if len(p) > len(best):
                best = p
        return best

    items: list[Item] = []
    for u in nodes:
        if u.op not in INLINE:
            if u.op is Ops.ACC:
                items += [AccDecl(u), AccUpdate(u)]
            items.append(u)
    placed = {it: node_path(it.acc) if isinstance(it, AccDecl) else node_path(it) for it in items}
    return _emit_scope((), items, placed)


def _sources(it: Item) -> tuple:
    """What an item needs computed first: an update needs its value and the declared accumulator; the
    accumulator's final read needs the update (so the loop comes before it)."""
    if isinstance(it, AccDecl):
        return ()
    if isinstance(it, AccUpdate):
        return (it.acc.src[0], AccDecl(it.acc))
    return it.src + ((AccUpdate(it),) if it.op is Ops.ACC else ())


def _emit_scope(prefix: tuple[UOp, ...], members: list, placed: dict) -> list[Item]:
    """Order one loop body: its own items and its child loops (each a unit), sources first, ties in
    topological order; then each child loop's body the same way."""
    depth = len(prefix)

    def unit(it: Item) -> Item | tuple[str, UOp]:
        p = placed[it]
        return it if len(p) == depth else ("loop", p[depth])

    member_set = set(members)
    units: dict = {}
    for i, it in enumerate(members):
        units.setdefault(unit(it), i)
    after: dict = {u: set() for u in units}
    needs: dict = {u: 0 for u in units}
    for it in members:
        for s in _sources(it):
            if s in member_set and unit(s) != unit(it) and unit(it) not in after[unit(s)]:
                after[unit(s)].add(unit(it))
                needs[unit(it)] += 1
    ready = sorted((u for u in units if needs[u] == 0), key=units.__getitem__)
    out: list[Item] = []
    while ready:
        u = ready.pop(0)
        if isinstance(u, tuple):
            r = u[1]
            inner = [it for it in members if len(placed[it]) > depth and placed[it][depth] is r]
            out.append(Loop(r, _emit_scope(prefix + (r,), inner, placed)))
        else:
            out.append(u)
        for v in after[u]:
            needs[v] -= 1
            if needs[v] == 0:
                ready.append(v)
        ready.sort(key=units.__getitem__)
    if len(out) != len(units):
        raise RuntimeError("linearize: the loop nest has a cycle (a bug in lowering)")
    return out
