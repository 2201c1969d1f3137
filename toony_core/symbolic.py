"""Symbolic simplification of integer and boolean UOps (index arithmetic and masks), as rewrite rules.

Index expressions come out of movement ops as sums of products, divisions and remainders of loop
variables. These rules fold constants, use value bounds (vmin/vmax) to drop divisions and remainders
that cannot matter, and keep sums in a flat canonical form so that `(i//4)*4 + i%4` collapses to `i`.
"""

from __future__ import annotations

from .dtype import DType, dtypes, min_max
from .uop import BINARY, COMMUTATIVE, COMPARE, Ops, PatternMatcher, UOp, UPat, normalize_const

INT_LIKE = {d for d in dtypes.ALL if d.is_int} | {dtypes.bool}


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


_INT_ALU = {
    Ops.NEG: lambda a: -a, Ops.ABS: abs, Ops.ADD: lambda a, b: a + b, Ops.SUB: lambda a, b: a - b,
    Ops.MUL: lambda a, b: a * b, Ops.MAX: max, Ops.MIN: min, Ops.CMPLT: lambda a, b: a < b,
    Ops.CMPLE: lambda a, b: a <= b, Ops.CMPEQ: lambda a, b: a == b, Ops.CMPNE: lambda a, b: a != b,
    Ops.AND: lambda a, b: a & b, Ops.OR: lambda a, b: a | b, Ops.XOR: lambda a, b: a ^ b,
    Ops.IDIV: lambda a, b: _c_div(a, b) if b else None,
    Ops.MOD: lambda a, b: a - b * _c_div(a, b) if b else None,
    Ops.WHERE: lambda c, a, b: a if c else b,
}


def exec_int_alu(op: Ops, dtype: DType, args: list[int]) -> int | bool | None:
    """Evaluate an integer/bool ALU op the way the C code would; None where C leaves it undefined."""
    bits = dtype.itemsize * 8
    if op is Ops.NOT:
        r = (not args[0]) if dtype == dtypes.bool else ~args[0]
    elif op in (Ops.SHL, Ops.SHR):
        a, b = args
        r = None if not 0 <= b < bits else (a << b if op is Ops.SHL else a >> b)
    elif op in _INT_ALU:
        r = _INT_ALU[op](*args)
    else:
        return None
    return None if r is None else normalize_const(r, dtypes.bool if op in COMPARE else dtype)


def _fold(x: UOp) -> UOp | None:
    if x.dtype not in INT_LIKE or any(s.dtype not in INT_LIKE for s in x.src):
        return None
    r = exec_int_alu(x.op, x.src[-1].dtype if x.op is Ops.WHERE else x.src[0].dtype, [s.arg for s in x.src])
    return None if r is None else UOp.const(r, x.dtype)


def _fold_bounds(x: UOp) -> UOp | None:
    """A value whose bounds pin it to one number is that number (e.g. i < 16 when i is in 0..15)."""
    if x.dtype in INT_LIKE and x.op is not Ops.CONST and x.vmin == x.vmax:
        return UOp.const(x.vmin, x.dtype)
    return None


# ---- flat sums: a sum is a list of (term, coefficient) plus a constant

def _terms(u: UOp, sign: int = 1) -> tuple[list[tuple[UOp, int]], int]:
    if u.op is Ops.ADD:
        (ta, ca), (tb, cb) = _terms(u.src[0], sign), _terms(u.src[1], sign)
        return ta + tb, ca + cb
    if u.op is Ops.SUB:
        (ta, ca), (tb, cb) = _terms(u.src[0], sign), _terms(u.src[1], -sign)
        return ta + tb, ca + cb
    if u.op is Ops.CONST:
        return [], sign * u.arg
    if u.op is Ops.MUL and u.src[1].op is Ops.CONST:
        return [(u.src[0], sign * u.src[1].arg)], 0
    return [(u, sign)], 0


def _quotient(y: UOp, c: UOp) -> UOp:
    """y // c in the form the nested-division rule leaves it: (x//a)//c is x//(a*c)."""
    if y.op is Ops.IDIV and y.src[1].op is Ops.CONST and y.src[1].arg > 0 and c.arg > 0 and y.src[0].vmin >= 0:
        return UOp(Ops.IDIV, y.dtype, (y.src[0], UOp.const(y.src[1].arg * c.arg, y.dtype)))
    return UOp(Ops.IDIV, y.dtype, (y, c))


def _combine(terms: list[tuple[UOp, int]]) -> dict[UOp, int]:
    out: dict[UOp, int] = {}
    for t, c in terms:
        out[t] = out.get(t, 0) + c
    # (y//c)*c*m + (y%c)*m is y*m: the identity C's truncating division and remainder always satisfy
    changed = True
    while changed:
        changed = False
        for rem, m in list(out.items()):
            if rem.op is not Ops.MOD or rem.src[1].op is not Ops.CONST or rem not in out:
                continue
            y, c = rem.src
            quo = _quotient(y, c)
            if out.get(quo) == c.arg * m:
                del out[quo], out[rem]
                out[y] = out.get(y, 0) + m
                changed = True
                continue
            # ((y//c) % b)*c*m + (y%c)*m is (y % (c*b))*m for y >= 0: an unflatten followed by a flatten
            for outer, k in list(out.items()):
                if outer.op is Ops.MOD and outer.src[1].op is Ops.CONST and k == c.arg * m and y.vmin >= 0 \
                        and outer.src[0] is _quotient(y, c) and c.arg > 0:
                    del out[outer], out[rem]
                    merged = UOp(Ops.MOD, y.dtype, (y, UOp.const(c.arg * outer.src[1].arg, y.dtype)))
                    out[merged] = out.get(merged, 0) + m
                    changed = True
                    break
    return {t: c for t, c in out.items() if c != 0}


def _build(dtype: DType, terms: dict[UOp, int], const: int) -> UOp:
    acc: UOp | None = None
    for t, c in terms.items():
        term = t if c == 1 else UOp(Ops.MUL, dtype, (t, UOp.const(c, dtype)))
        acc = term if acc is None else UOp(Ops.ADD, dtype, (acc, term))
    if acc is None:
        return UOp.const(const, dtype)
    return acc if const == 0 else UOp(Ops.ADD, dtype, (acc, UOp.const(const, dtype)))


def _canonical_sum(x: UOp) -> UOp | None:
    if x.dtype not in INT_LIKE or x.dtype == dtypes.bool:
        return None
    terms, const = _terms(x)
    out = _build(x.dtype, _combine(terms), const)
    return None if out is x else out


def _div_mod(x: UOp, c: UOp) -> tuple[dict[UOp, int], UOp, int] | None:
    """Pull multiples of c out of a non-negative sum under // and % (valid because C truncation equals
    floor division for non-negative operands)."""
    d = c.arg
    if d <= 0 or x.vmin < 0:
        return None
    if x.op is Ops.IDIV and x.src[1].op is Ops.CONST and x.src[1].arg > 0 and x.src[0].vmin >= 0:
        return None  # handled by the nested-division rule
    terms, const = _terms(x)
    if any(c < 0 for _, c in terms) or const < 0:
        return None
    # the identities hold for true sums only: a sum that can wrap around its C type (small ints) is left alone
    lo, hi = min_max(x.dtype)
    if sum(c * t.vmin for t, c in terms) + const < lo or sum(c * t.vmax for t, c in terms) + const > hi:
        return None
    combined = _combine(terms)
    pulled = {t: k // d for t, k in combined.items() if k % d == 0}
    rest = {t: k for t, k in combined.items() if k % d != 0}
    return pulled, _build(x.dtype, rest, const % d), const // d


def _idiv(x: UOp, c: UOp) -> UOp | None:
    if (split := _div_mod(x, c)) is None:
        return None
    pulled, rest, const_q = split
    if not pulled and const_q == 0 and not (0 <= rest.vmin and rest.vmax < c.arg):
        return None
    q = _build(x.dtype, pulled, const_q)
    if 0 <= rest.vmin and rest.vmax < c.arg:
        return q
    return UOp(Ops.ADD, x.dtype, (q, UOp(Ops.IDIV, x.dtype, (rest, c))))


def _mod(x: UOp, c: UOp) -> UOp | None:
    if 0 <= x.vmin and x.vmax < c.arg:
        return x
    if (split := _div_mod(x, c)) is None:
        return None
    pulled, rest, const_q = split
    if not pulled and const_q == 0:
        return None
    return rest if 0 <= rest.vmin and rest.vmax < c.arg else UOp(Ops.MOD, x.dtype, (rest, c))


def _nested_div(x: UOp, a: UOp, b: UOp) -> UOp | None:
    if x.vmin >= 0 and a.arg > 0 and b.arg > 0:
        return UOp(Ops.IDIV, x.dtype, (x, UOp.const(a.arg * b.arg, x.dtype)))
    return None


def _const_right(x: UOp) -> UOp | None:
    if x.op in COMMUTATIVE and x.src[0].op is Ops.CONST and x.src[1].op is not Ops.CONST:
        return x.replace(src=(x.src[1], x.src[0]))
    return None


_int = UPat.var("x", INT_LIKE - {dtypes.bool})
_cpos = UPat(Ops.CONST, predicate=lambda u: u.dtype in INT_LIKE and u.arg > 0, name="c")

symbolic = PatternMatcher([
    (UPat(BINARY | {Ops.WHERE, Ops.NEG, Ops.NOT, Ops.ABS}, src=UPat(Ops.CONST), name="x"), _fold),
    (UPat(BINARY | {Ops.NEG, Ops.NOT, Ops.CAST}, name="x"), _fold_bounds),
    (UPat(COMMUTATIVE, name="x"), _const_right),
    # identities
    (UPat(Ops.MUL, src=(UPat.var("x"), UPat.const(1))), lambda x: x),
    (UPat(Ops.MUL, src=(_int, UPat.const(0)), name="z"), lambda x, z: z.src[1]),
    (UPat(Ops.IDIV, src=(UPat.var("x"), UPat.const(1))), lambda x: x),
    (UPat(Ops.AND, src=(UPat.var("x", dtypes.bool), UPat.const(True))), lambda x: x),
    (UPat(Ops.AND, src=(UPat.var("x", dtypes.bool), UPat.const(False)), name="f"), lambda x, f: f.src[1]),
    (UPat(Ops.OR, src=(UPat.var("x", dtypes.bool), UPat.const(False))), lambda x: x),
    (UPat(Ops.AND, src=(UPat.var("x"), UPat.var("x"))), lambda x: x),
    (UPat(Ops.WHERE, src=(UPat.cvar("c"), UPat.var("a"), UPat.var("b"))), lambda c, a, b: a if c.arg else b),
    (UPat(Ops.WHERE, src=(UPat.var(), UPat.var("a"), UPat.var("a"))), lambda a: a),
    (UPat(Ops.NOT, src=(UPat(Ops.NOT, src=(UPat.var("x"),)),)), lambda x: x),
    (UPat(Ops.CAST, src=(UPat.cvar("c"),), name="x"),
     lambda x, c: UOp.const(c.arg, x.dtype) if x.dtype in INT_LIKE and c.dtype in INT_LIKE else None),
    (UPat(Ops.CAST, name="x", predicate=lambda u: u.src[0].dtype == u.dtype), lambda x: x.src[0]),
    # sums in canonical flat form
    (UPat({Ops.ADD, Ops.SUB}, dtype=INT_LIKE - {dtypes.bool}, name="x"), _canonical_sum),
    (UPat(Ops.MUL, src=(UPat(Ops.ADD), UPat.cvar()), dtype=INT_LIKE - {dtypes.bool}, name="x"), _canonical_sum),
    (UPat(Ops.MUL, src=(UPat(Ops.MUL, src=(UPat.var("x"), UPat.cvar("a"))), UPat.cvar("b"))),
     lambda x, a, b: x * (a.arg * b.arg)),
    # division and remainder
    (UPat(Ops.IDIV, src=(UPat(Ops.IDIV, src=(UPat.var("x"), UPat.cvar("a"))),
                         UPat.cvar("b"))), _nested_div),
    (UPat(Ops.IDIV, src=(_int, _cpos)), _idiv),
    (UPat(Ops.MOD, src=(_int, _cpos)), _mod),
])


def simplify(u: UOp) -> UOp:
    from .uop import graph_rewrite
    return graph_rewrite(u, symbolic)
