"""Symbolic simplification of index arithmetic: known identities, value bounds, and a randomized check that
simplify(expr) computes the same integers as expr (with C's truncating // and %) for every variable value."""

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from toony_core import Ops, UOp, dtypes
from toony_core.dtype import min_max
from toony_core.symbolic import simplify

# hypothesis reports a failing example with libcst, which warns on import
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

I32 = dtypes.int32
# the same examples every run; no "explain" phase (slow, and noisy when an example fails)
FAST = {"deadline": None, "derandomize": True, "database": None, "suppress_health_check": [HealthCheck.too_slow],
        "phases": (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)}


def special(name: str, size: int) -> UOp:
    return UOp(Ops.SPECIAL, I32, (), (name, size))


def rng(i: int, size: int) -> UOp:
    return UOp(Ops.RANGE, I32, (), (i, size))


def c(v: int, dt=I32) -> UOp:
    return UOp.const(v, dt)


# ---------------------------------------------------------------- a tiny evaluator (C semantics, as rendered)
# It evaluates a graph for every assignment of its variables at once: each variable is a numpy array over
# the grid of all assignments (int64, wrapped to each node's C type after every op).

def _cdiv(a, b):
    """C's truncating integer division."""
    return (np.abs(a) // np.abs(b)) * np.sign(a) * np.sign(b)


_EVAL = {
    Ops.ADD: lambda a, b: a + b,
    Ops.SUB: lambda a, b: a - b,
    Ops.MUL: lambda a, b: a * b,
    Ops.NEG: lambda a: -a,
    Ops.IDIV: _cdiv,
    Ops.MOD: lambda a, b: a - b * _cdiv(a, b),
    Ops.MAX: np.maximum,
    Ops.MIN: np.minimum,
    Ops.CMPLT: lambda a, b: a < b,
    Ops.CMPLE: lambda a, b: a <= b,
    Ops.CMPEQ: lambda a, b: a == b,
    Ops.CMPNE: lambda a, b: a != b,
    Ops.AND: lambda a, b: a & b,
    Ops.OR: lambda a, b: a | b,
    Ops.WHERE: np.where,
    Ops.CAST: lambda a: np.asarray(a, np.int64),
}


def wrap(v, dt):
    """The value a C integer of type dt holds (C computes char/short in int and converts back)."""
    lo, hi = min_max(dt)
    return (np.asarray(v, np.int64) - lo) % (hi - lo + 1) + lo


def evaluate_all(u: UOp, env: dict[UOp, np.ndarray]) -> dict[UOp, np.ndarray]:
    """The values of every node of u's graph, for the variable values in env (arrays of one shape)."""
    vals: dict[UOp, np.ndarray] = {}
    for n in u.toposort():
        if n.op is Ops.CONST:
            v = np.int64(n.arg)
        elif n.op in (Ops.SPECIAL, Ops.RANGE):
            v = env[n]
        elif n.op is Ops.NOT:
            v = ~vals[n.src[0]]
        else:
            v = _EVAL[n.op](*(vals[x] for x in n.src))
        vals[n] = np.asarray(v, bool) if n.dtype == dtypes.bool else wrap(v, n.dtype)
    return vals


def evaluate(u: UOp, env: dict[UOp, np.ndarray]) -> np.ndarray:
    return evaluate_all(u, env)[u]


def variables(u: UOp) -> list[UOp]:
    return [n for n in u.toposort() if n.op in (Ops.SPECIAL, Ops.RANGE)]


def all_assignments(*us: UOp) -> dict[UOp, np.ndarray]:
    """Every combination of values of the variables of us, as one array per variable."""
    vs = list(dict.fromkeys(v for u in us for v in variables(u)))
    grids = np.meshgrid(*(np.arange(v.arg[1]) for v in vs), indexing="ij") if vs else []
    return {v: g.reshape(-1).astype(np.int64) for v, g in zip(vs, grids, strict=True)}


def assert_same_values(a: UOp, b: UOp) -> None:
    env = all_assignments(a, b)
    va, vb = np.broadcast_arrays(evaluate(a, env), evaluate(b, env))
    if not np.array_equal(va, vb):
        i = int(np.argmax(va != vb))
        at = [(k.arg, int(x[i])) for k, x in env.items()]
        raise AssertionError(f"differ at {at}: {va[i]} vs {vb[i]}\n{a}\n->\n{b}")


# ---------------------------------------------------------------- known identities

G = special("gid", 24)


def test_unflatten_then_flatten_is_the_identity():
    # a (2, 3, 4) index taken apart and put back together is the flat index itself
    e = ((G // 12) % 2) * 12 + ((G // 4) % 3) * 4 + G % 4
    assert simplify(e) is G


def test_div_mod_of_linear_index():
    assert simplify((G * 4 + 3) // 4) is G
    assert simplify((G * 4 + 3) % 4) is c(3)
    assert simplify((G // 4) * 4 + G % 4) is G
    assert simplify(G % 4 + (G // 4) * 4) is G


def test_bounds_drop_div_and_mod():
    assert simplify(G % 24) is G
    assert simplify(G % 100) is G
    assert simplify(G // 24) is c(0)
    assert simplify(G // 100) is c(0)


def test_comparisons_decided_by_bounds():
    assert simplify(G < 30) is c(True, dtypes.bool)
    assert simplify(G < 24) is c(True, dtypes.bool)
    assert simplify(G < 0) is c(False, dtypes.bool)
    assert simplify(G.ge(0)) is c(True, dtypes.bool)
    undecided = G < 23
    assert simplify(undecided) is undecided


def test_constant_folding():
    assert simplify(c(3) + c(4)) is c(7)
    assert simplify(c(7) * c(6) - c(2)) is c(40)
    assert simplify(c(-7) // c(2)) is c(-3)  # C truncation, as the rendered code computes
    assert simplify(c(-7) % c(2)) is c(-1)
    assert simplify(c(100, dtypes.int8) + c(100, dtypes.int8)) is c(-56, dtypes.int8)  # wraps like C's char


def test_identities():
    assert simplify(G * 1) is G
    assert simplify(G * 0) is c(0)
    assert simplify(G + 0) is G
    assert simplify(G // 1) is G
    assert simplify(1 * G + 0) is G
    assert simplify(G - G) is c(0)
    assert simplify((G * 2) * 3) is G * 6
    assert simplify(G + 3 + 4) is G + 7


def test_nested_division():
    assert simplify((G // 2) // 3) is G // 6


def test_div_mod_pull_out_multiples():
    assert simplify((G + 8) % 4) is G % 4
    assert simplify((G + 8) // 4) is simplify(G // 4 + 2)


def test_negative_operands_keep_c_semantics():
    # (g-5)//4 is not g//4 - 1 with truncating division: these rules must not fire
    for e in [(G - 5) // 4, (G - 5) % 4, (G * -3 + 7) // 4, (G * -3 + 7) % 4]:
        assert_same_values(e, simplify(e))


def test_where_folding():
    t, f = c(True, dtypes.bool), c(False, dtypes.bool)
    assert simplify(t.where(G, c(5))) is G
    assert simplify(f.where(G, c(5))) is c(5)
    assert simplify((G < 5).where(G, G)) is G
    assert simplify((G < 30).where(G, c(5))) is G


def test_index_of_two_loops():
    r0, r1 = special("gid", 6), rng(1, 8)
    flat = r0 * 8 + r1
    assert simplify(flat // 8) is r0
    assert simplify(flat % 8) is r1
    assert simplify((flat // 4) % 2 * 4 + flat % 4) is r1


# ---------------------------------------------------------------- randomized equivalence and bounds soundness

VARS = [special("gid", 24), special("lid", 5), rng(1, 7), rng(2, 1)]


@st.composite
def int_exprs(draw, depth: int = 0) -> UOp:
    if depth >= 5 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            return draw(st.sampled_from(VARS))
        return c(draw(st.integers(-8, 30)))
    kind = draw(st.sampled_from(["add", "sub", "mul_c", "mul", "div", "mod", "max", "min", "where"]))
    a = draw(int_exprs(depth=depth + 1))
    if kind in ("add", "sub", "mul", "max", "min"):
        b = draw(int_exprs(depth=depth + 1))
        return {"add": a + b, "sub": a - b, "mul": a * b,
                "max": UOp(Ops.MAX, I32, (a, b)), "min": UOp(Ops.MIN, I32, (a, b))}[kind]
    if kind == "mul_c":
        return a * draw(st.integers(-4, 12))
    if kind in ("div", "mod"):
        d = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 12, 16, 24, -3]))
        return a // d if kind == "div" else a % d
    b, other = draw(int_exprs(depth=depth + 1)), draw(int_exprs(depth=depth + 1))
    cond = (a < b) if draw(st.booleans()) else a.ne(b)
    return cond.where(other, b)


@settings(max_examples=400, **FAST)
@given(int_exprs())
def test_simplify_preserves_values(e: UOp):
    s = simplify(e)
    assert set(variables(s)) <= set(variables(e)), "simplify invented a variable"
    assert_same_values(e, s)


@settings(max_examples=300, **FAST)
@given(int_exprs())
def test_bounds_contain_every_value(e: UOp):
    assert_bounds_hold(e, {I32})


def assert_bounds_hold(e: UOp, dts) -> None:
    vals = evaluate_all(e, all_assignments(e))
    for n in e.toposort():
        if n.dtype in dts:
            v = vals[n]
            assert n.vmin <= v.min() and v.max() <= n.vmax, f"[{v.min()}, {v.max()}] outside [{n.vmin}, {n.vmax}]:\n{n}"


def test_simplify_is_idempotent():
    e = ((G // 12) % 2) * 12 + ((G // 4) % 3) * 4 + (G + 5) % 4 + (G * 3 - 2) // 5
    s = simplify(e)
    assert simplify(s) is s


# ---------------------------------------------------------------- small types wrap around

SMALL = [dtypes.int8, dtypes.uint8, dtypes.int16, dtypes.uint16]


@st.composite
def small_int_exprs(draw, dt, divmod_: bool, depth: int = 0) -> UOp:
    if depth >= 4 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            v = draw(st.sampled_from([special("gid", 300), special("lid", 3)]))
            return v.cast(dt)  # 300 values wrap on the cast to 8-bit types
        return c(draw(st.integers(-130, 300)), dt)
    a, b = draw(small_int_exprs(dt, divmod_, depth + 1)), draw(small_int_exprs(dt, divmod_, depth + 1))
    kind = draw(st.sampled_from(["add", "sub", "mul", "lt", "max"] + (["div", "mod"] if divmod_ else [])))
    if kind in ("div", "mod"):  # the value wraps before it is divided: (x * 3 + 7) // 2 on uint8
        d = c(draw(st.sampled_from([2, 3, 4, 16])), dt)
        return a // d if kind == "div" else a % d
    if kind == "lt":
        return (a < b).where(a, b)
    if kind == "max":
        return UOp(Ops.MAX, dt, (a, b))
    return {"add": a + b, "sub": a - b, "mul": a * b}[kind]


@settings(max_examples=150, **FAST)
@given(st.sampled_from(SMALL).flatmap(lambda dt: small_int_exprs(dt, divmod_=False)))
def test_simplify_and_bounds_respect_wraparound(e: UOp):
    # uint8 x - 1 is x + 255: its bounds are not [255, 510] clamped to [255, 255]
    assert_same_values(e, simplify(e))
    assert_bounds_hold(e, set(SMALL))


def test_unsigned_minus_one_is_not_a_constant():
    x = special("gid", 256).cast(dtypes.uint8)
    e = x - c(1, dtypes.uint8)
    assert simplify(e).op is not Ops.CONST
    assert (e.vmin, e.vmax) == (0, 255)


@settings(max_examples=150, **FAST)
@given(st.sampled_from(SMALL).flatmap(lambda dt: small_int_exprs(dt, divmod_=True)))
def test_simplify_div_mod_respect_wraparound(e: UOp):
    assert_same_values(e, simplify(e))
