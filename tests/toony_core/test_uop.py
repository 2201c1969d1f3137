"""The IR: hash-consed UOps, UPat patterns, PatternMatcher and graph_rewrite."""

import gc
import math
import pickle
import weakref

from toony_core import Ops, UOp, dtypes
from toony_core.uop import PatternMatcher, UPat, graph_rewrite

I32 = dtypes.int32


def var(name: str, size: int = 16) -> UOp:
    return UOp(Ops.SPECIAL, I32, (), (name, size))


# ---------------------------------------------------------------- hash-consing

def test_equal_parts_give_the_same_object():
    a = UOp(Ops.CONST, dtypes.float32, (), 1.5)
    b = UOp(Ops.CONST, dtypes.float32, (), 1.5)
    assert a is b
    x = var("gid")
    assert (x + 3) is (x + 3)
    assert UOp(Ops.ADD, I32, (x, UOp.const(3, I32))) is x + 3


def test_different_parts_give_different_objects():
    x = var("gid")
    assert UOp.const(1, I32) is not UOp.const(1, dtypes.int64)  # dtype
    assert (x + 1) is not (x * 1)  # op
    assert (x + 1) is not (x + 2)  # arg of a source
    assert (x + 1) is not UOp(Ops.ADD, I32, (UOp.const(1, I32), x))  # source order
    assert var("gid", 16) is not var("gid", 17)  # arg


def test_zero_and_negative_zero_are_distinct():
    pz, nz = UOp.const(0.0, dtypes.float32), UOp.const(-0.0, dtypes.float32)
    assert pz is not nz
    assert math.copysign(1.0, pz.arg) == 1.0 and math.copysign(1.0, nz.arg) == -1.0
    assert UOp.const(-0.0, dtypes.float32) is nz


def test_nan_const_finds_itself():
    assert UOp.const(math.nan, dtypes.float32) is UOp.const(math.nan, dtypes.float32)


def test_const_is_normalized_to_its_dtype():
    assert UOp.const(300, dtypes.uint8).arg == 44  # wraps like the C type
    assert UOp.const(-1, dtypes.uint32).arg == 2**32 - 1
    assert UOp.const(128, dtypes.int8).arg == -128
    assert UOp.const(2, dtypes.bool).arg is True
    assert isinstance(UOp.const(2, dtypes.float32).arg, float)
    assert UOp.const(1, dtypes.float32) is UOp.const(1.0, dtypes.float32)


def test_pickle_roundtrip_gives_the_same_object():
    x = var("gid")
    e = (x * 4 + 3) // 2
    assert pickle.loads(pickle.dumps(e)) is e


def test_unreferenced_uops_are_freed():
    r = weakref.ref(UOp(Ops.CONST, I32, (), 123456789))
    gc.collect()
    assert r() is None


def test_toposort_sources_before_users_each_once():
    x = var("gid")
    shared = x * 2
    e = (shared + 1) + (shared + 2)
    order = e.toposort()
    assert order[-1] is e
    assert len(order) == len(set(order))
    pos = {u: i for i, u in enumerate(order)}
    for u in order:
        assert all(pos[s] < pos[u] for s in u.src)
    assert set(order) == {x, shared, shared + 1, shared + 2, e, UOp.const(1, I32), UOp.const(2, I32)}


# ---------------------------------------------------------------- patterns

def test_upat_matches_op_dtype_src_arg():
    x = var("gid")
    e = x + 3
    store = {}
    assert UPat(Ops.ADD, I32, src=(UPat.var("a"), UPat.cvar("c"))).match(e, store)
    assert store == {"a": x, "c": UOp.const(3, I32)}
    assert not UPat(Ops.MUL).match(e, {})
    assert not UPat(Ops.ADD, dtypes.int64).match(e, {})
    assert not UPat(Ops.ADD, src=(UPat.cvar(), UPat.var())).match(e, {})
    assert not UPat(Ops.ADD, src=(UPat.var(),)).match(e, {})  # wrong number of sources
    assert UPat({Ops.ADD, Ops.MUL}).match(x * 2, {})
    assert UPat(Ops.SPECIAL, arg=("gid", 16)).match(x, {})
    assert not UPat(Ops.SPECIAL, arg=("gid", 8)).match(x, {})
    assert UPat(predicate=lambda u: u.op is Ops.SPECIAL).match(x, {})


def test_upat_same_name_must_bind_the_same_node():
    x, y = var("gid"), var("lid")
    pat = UPat(Ops.ADD, src=(UPat.var("a"), UPat.var("a")))
    assert pat.match(x + x, {})
    assert not pat.match(x + y, {})


def test_upat_single_src_pattern_applies_to_every_source():
    x = var("gid")
    all_const = UPat(Ops.ADD, src=UPat(Ops.CONST))
    assert all_const.match(UOp(Ops.ADD, I32, (UOp.const(1, I32), UOp.const(2, I32))), {})
    assert not all_const.match(x + 1, {})


def test_pattern_matcher_first_matching_rule_wins_and_none_falls_through():
    x = var("gid")
    seen = []

    def declines(a):
        seen.append("declines")
        return None

    pm = PatternMatcher([
        (UPat(Ops.ADD, src=(UPat.var("a"), UPat.const(0))), declines),
        (UPat(Ops.ADD, src=(UPat.var("a"), UPat.const(0))), lambda a: a),
        (UPat(Ops.ADD, name="e"), lambda e: UOp.const(-1, I32)),  # never reached for x + 0
    ])
    assert pm.rewrite(x + 0) is x
    assert seen == ["declines"]
    assert pm.rewrite(x + 1) is UOp.const(-1, I32)
    assert pm.rewrite(x * 2) is None


def test_pattern_matcher_wildcard_rules_apply_to_every_op():
    x = var("gid")
    pm = PatternMatcher([
        (UPat(Ops.MUL, src=(UPat.var("a"), UPat.const(1))), lambda a: a),
        (UPat(name="u", predicate=lambda u: u.op is Ops.SPECIAL and u.arg[1] == 16), lambda u: var(u.arg[0], 32)),
    ])
    assert pm.rewrite(x * 1) is x
    assert pm.rewrite(x) is var("gid", 32)


def test_pattern_matcher_passes_ctx():
    x = var("gid")
    pm = PatternMatcher([(UPat(Ops.SPECIAL, name="u"), lambda ctx, u: UOp.const(ctx[u.arg[0]], I32))])
    assert pm.rewrite(x, ctx={"gid": 7}) is UOp.const(7, I32)


def test_pattern_matcher_add_concatenates_rules():
    x = var("gid")
    a = PatternMatcher([(UPat(Ops.MUL, src=(UPat.var("v"), UPat.const(1))), lambda v: v)])
    b = PatternMatcher([(UPat(Ops.ADD, src=(UPat.var("v"), UPat.const(0))), lambda v: v)])
    both = a + b
    assert both.rewrite(x * 1) is x and both.rewrite(x + 0) is x


# ---------------------------------------------------------------- graph_rewrite

IDENTITIES = PatternMatcher([
    (UPat(Ops.MUL, src=(UPat.var("a"), UPat.const(1))), lambda a: a),
    (UPat(Ops.ADD, src=(UPat.var("a"), UPat.const(0))), lambda a: a),
    (UPat(Ops.ADD, src=(UPat.var("a"), UPat.var("a"))), lambda a: a * 2),
])


def test_graph_rewrite_reaches_a_fixed_point():
    x = var("gid")
    assert graph_rewrite(((x * 1) + 0) * 1 + 0, IDENTITIES) is x


def test_graph_rewrite_child_rewrite_enables_parent_rule():
    x = var("gid")
    # neither source is x until it is rewritten; then ADD(x, x) matches the doubling rule
    assert graph_rewrite((x * 1) + (x + 0), IDENTITIES) is x * 2


def test_graph_rewrite_leaves_unmatched_graph_alone():
    x = var("gid")
    e = (x * 3 + 2) // 5
    assert graph_rewrite(e, IDENTITIES) is e


def test_graph_rewrite_shared_subgraph_rewritten_once():
    x = var("gid")
    calls = []

    def count(a):
        calls.append(a)
        return a

    pm = PatternMatcher([(UPat(Ops.MUL, src=(UPat.var("a"), UPat.const(1))), count)])
    shared = x * 1
    out = graph_rewrite((shared + 5) * (shared + 6), pm)
    assert out is (x + 5) * (x + 6)
    assert len(calls) == 1


def test_graph_rewrite_deep_chain():
    x = var("gid")
    e = x
    for _ in range(1000):
        e = (e * 1) + 1
    out = graph_rewrite(e, IDENTITIES)
    assert out.op is Ops.ADD and all(u.op is not Ops.MUL for u in out.toposort())
