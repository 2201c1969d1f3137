"""Symbolic simplification of index arithmetic: known identities, value bounds, and a randomized check that
simplify(expr) computes the same integers as expr (with C's truncating // and %) for every variable value."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toony_core import Ops, UOp, dtypes
from toony_core.symbolic import simplify

I32 = dtypes.int32


def special(name: str, size: int) -> UOp:
    return UOp(Ops.SPECIAL, I32, (), (name, size))


def rng(i: int, size: int) -> UOp:
    return UOp(Ops.RANGE, I32, (), (i, size))


def c(v: int, dt=I32) -> UOp:
    return UOp.const(v, dt)


# ---------------------------------------------------------------- a tiny evaluator (C semantics, as rendered)

def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


_EVAL = {
    Ops.ADD: lambda a, b: a + b,
    Ops.SUB: lambda a, b: a - b,
    Ops.MUL: lambda a, b: a * b,
    Ops.NEG: lambda a: -a,
    Ops.IDIV: _cdiv,
    Ops.MOD: lambda a, b: a - b * _cdiv(a, b),
    Ops.MAX: max,
    Ops.MIN: min,
    Ops.CMPLT: lambda a, b: a < b,
    Ops.CMPLE: lambda a, b: a <= b,
    Ops.CMPEQ: lambda a, b: a == b,
    Ops.CMPNE: lambda a, b: a != b,
    Ops.AND: lambda a, b: a & b,
    Ops.OR: lambda a, b: a | b,
    Ops.WHERE: lambda cond, a, b: a if cond else b,
    Ops.CAST: int,
}


def evaluate_all(u: UOp, env: dict[UOp, int]) -> dict[UOp, int | bool]:
    """The value of every node of u's graph for these values of its variables."""
    vals: dict[UOp, int | bool] = {}
    for n in u.toposort():
        if n.op is Ops.CONST:
            v = n.arg
        elif n.op in (Ops.SPECIAL, Ops.RANGE):
            v = env[n]
        elif n.op is Ops.NOT:
            v = not vals[n.src[0]] if n.dtype == dtypes.bool else ~vals[n.src[0]]
        else:
            v = _EVAL[n.op](*(vals[x] for x in n.src))
        vals[n] = bool(v) if n.dtype == dtypes.bool else v
    return vals


def evaluate(u: UOp, env: dict[UOp, int]) -> int | bool:
    return evaluate_all(u, env)[u]


def variables(u: UOp) -> list[UOp]:
    return [n for n in u.toposort() if n.op in (Ops.SPECIAL, Ops.RANGE)]


def assignments(u: UOp):
    vs = variables(u)
    for values in itertools.product(*(range(v.arg[1]) for v in vs)):
        yield dict(zip(vs, values, strict=True))


def assert_same_values(a: UOp, b: UOp) -> None:
    for env in assignments(a):
        assert evaluate(a, env) == evaluate(b, env), f"differ at {[(k.arg, x) for k, x in env.items()]}"


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

VARS = [special("gid", 12), special("lid", 3), rng(1, 5), rng(2, 1)]


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


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(int_exprs())
def test_simplify_preserves_values(e: UOp):
    s = simplify(e)
    env_vars = variables(e)
    assert set(variables(s)) <= set(env_vars), "simplify invented a variable"
    for env in assignments(e):
        assert evaluate(s, env) == evaluate(e, env), \
            f"simplify changed the value at {[(k.arg, x) for k, x in env.items()]}:\n{e}\n->\n{s}"


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(int_exprs())
def test_bounds_contain_every_value(e: UOp):
    nodes = [n for n in e.toposort() if n.dtype == I32]
    for env in assignments(e):
        vals = evaluate_all(e, env)
        for n in nodes:
            v = vals[n]
            assert n.vmin <= v <= n.vmax, f"{v} outside [{n.vmin}, {n.vmax}] for\n{n}"


def test_simplify_is_idempotent():
    e = ((G // 12) % 2) * 12 + ((G // 4) % 3) * 4 + (G + 5) % 4 + (G * 3 - 2) // 5
    s = simplify(e)
    assert simplify(s) is s
