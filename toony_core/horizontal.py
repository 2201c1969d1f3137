"""Horizontal fusion: independent kernels that iterate over the same output shape become one kernel.

The scheduler cuts a graph into kernels, one per materialized value. A training graph then has many small
kernels side by side that read the same inputs in the same way (a linear layer's bias gradient and the
layer norm's weight gradient both reduce over the batch; BatchNorm's running mean and running variance are
both updated elementwise over the channels). Each costs a launch. This pass moves such a kernel into an
earlier one with the same iteration space, so one launch computes both: the merged kernel shares its loop
indices and stores each value into its own buffer.

A kernel moves to an earlier one only when that is invisible: everything it reads is produced before the
earlier kernel, and nothing between the two reads or writes the buffer it writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .runtime import Buffer
from .scheduler import ScheduleItem, fused_reduces, loop_dims
from .uop import Ops, PatternMatcher, UOp, UPat, graph_rewrite


@dataclass
class _Group:
    item: ScheduleItem  # the merged kernel so far
    key: tuple  # what must match to merge into it (see _key)


def _key(item: ScheduleItem) -> tuple | None:
    """(output shape, has reductions) of a kernel that may merge with others; None for one that may not: a
    scatter (its store position is data), or a kernel with serial row loops (their loop structure is shaped
    by its own reductions)."""
    store = item.ast.src[0]
    if len(item.ast.src) != 1 or len(store.src) > 2:
        return None
    value = store.src[1]
    reduces = fused_reduces(UOp(Ops.CONTIGUOUS, value.dtype, (value,)), set())
    if loop_dims(value.shape, reduces):
        return None
    return (value.shape, bool(reduces))


def _renumbered(store: UOp, params: list[Buffer], target: list[Buffer]) -> UOp:
    """store with its DEFINE_GLOBAL indices into `params` renumbered as indices into `target` (which grows).
    In two steps through a tuple-wrapped index: a renumbered parameter can equal another, not yet renumbered
    one (UOps are hash-consed), and must not be renumbered again."""
    def wrap(g: UOp) -> UOp | None:
        if not isinstance(g.arg[0], int):
            return None
        buf = params[g.arg[0]]
        if not any(b is buf for b in target):
            target.append(buf)
        return g.replace(arg=((next(i for i, b in enumerate(target) if b is buf),), g.arg[1]))

    def unwrap(g: UOp) -> UOp | None:
        return g.replace(arg=(g.arg[0][0], g.arg[1])) if isinstance(g.arg[0], tuple) else None

    store = graph_rewrite(store, PatternMatcher([(UPat(Ops.DEFINE_GLOBAL, name="g"), wrap)]))
    return graph_rewrite(store, PatternMatcher([(UPat(Ops.DEFINE_GLOBAL, name="g"), unwrap)]))


def merge_horizontal(items: list[ScheduleItem], inputs: list[list[int]]) -> list[ScheduleItem]:
    """Merge kernels with the same iteration space. `inputs[j]` lists the positions (in `items`) of the kernels
    whose outputs kernel j reads. Returns the new, shorter list, still in a runnable order."""
    if len(items) < 2:
        return items
    groups: list[_Group | None] = []  # per original position: the group headed there, or None if merged away
    for j, item in enumerate(items):
        key = _key(item)
        target = _merge_target(items, groups, inputs[j], j, key) if key is not None else None
        if target is None:
            groups.append(_Group(item, key) if key is not None else _Group(item, ()))
            continue
        head = groups[target]
        assert head is not None
        params = list(head.item.buffers)
        store = _renumbered(item.ast.src[0], item.buffers, params)
        head.item = ScheduleItem(UOp(Ops.SINK, None, (*head.item.ast.src, store)), params,
                                 head.item.reads + item.reads)
        groups.append(None)
    return [g.item for g in groups if g is not None]


def _merge_target(items: list[ScheduleItem], groups: list[_Group | None], deps: list[int], j: int,
                  key: tuple) -> int | None:
    """The earliest group head i that kernel j can join, or None. Scanning back from j: stop at the last kernel
    j depends on, or at one that touches the buffer j writes (j must not move before it)."""
    written = items[j].buffers[0]
    earliest = max(deps, default=-1)
    found = None
    for i in range(j - 1, earliest, -1):
        head = groups[i]
        if any(b is written for b in items[i].buffers) or \
                (head is not None and any(b is written for b in head.item.buffers)):
            break
        if head is not None and head.key == key:
            found = i
    return found
