"""The IR: hash-consed UOps, patterns over them, and the one rewrite engine every pass uses."""

from __future__ import annotations

import functools
import inspect
import math
import sys
import weakref
from collections.abc import Callable, Iterator
from enum import Enum, auto
from typing import Any

from .dtype import DType, dtypes, min_max

sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))  # graphs of long op chains are deep


class Ops(Enum):
    # leaves
    BUFFER = auto()  # arg=(Buffer, numel, version): the contents of a device buffer, shape (numel,)
    CONST = auto()  # arg=python scalar, shape ()
    IOTA = auto()  # arg=n: the values 0..n-1, shape (n,); lowers to the loop index itself
    # movement: front end only, lowered to index arithmetic
    RESHAPE = auto()
    PERMUTE = auto()
    EXPAND = auto()
    PAD = auto()  # arg=((before, after), ...), fills with 0 (front end wraps a WHERE for other values)
    SHRINK = auto()  # arg=((start, end), ...)
    FLIP = auto()  # arg=tuple of flipped axes
    STRIDED = auto()  # arg=(shape, strides, offset) over a 1-D source: a torch-style strided view
    # unary
    NEG = auto()
    EXP = auto()
    EXP2 = auto()
    LOG = auto()
    LOG2 = auto()
    SIN = auto()
    COS = auto()
    TAN = auto()
    TANH = auto()
    ERF = auto()
    # the rest of C's math library, as built-ins (inverse trigonometric and hyperbolic functions, lgamma,
    # and the forms exact near 0: expm1, log1p)
    ASIN = auto()
    ACOS = auto()
    ATAN = auto()
    SINH = auto()
    COSH = auto()
    ASINH = auto()
    ACOSH = auto()
    ATANH = auto()
    LGAMMA = auto()
    EXPM1 = auto()
    LOG1P = auto()
    SQRT = auto()
    RSQRT = auto()
    RECIP = auto()
    ABS = auto()
    FLOOR = auto()
    CEIL = auto()
    TRUNC = auto()
    NOT = auto()  # bitwise not (logical not on bool)
    # binary
    ADD = auto()
    SUB = auto()
    MUL = auto()
    FDIV = auto()  # float division
    IDIV = auto()  # integer division truncating toward zero, as C
    MOD = auto()  # integer remainder with the sign of the dividend, as C
    MAX = auto()
    MIN = auto()
    POW = auto()
    ATAN2 = auto()
    CMPLT = auto()
    CMPLE = auto()
    CMPEQ = auto()
    CMPNE = auto()
    AND = auto()
    OR = auto()
    XOR = auto()
    SHL = auto()
    SHR = auto()
    # ternary
    WHERE = auto()
    # dtype
    CAST = auto()
    BITCAST = auto()
    # front end compound
    REDUCE = auto()  # arg=(Ops.ADD|MUL|MAX|MIN, axes); keeps reduced axes as size 1
    GATHER = auto()  # src=(source, flat_index): source.flatten()[flat_index], shape of flat_index
    ASSIGN = auto()  # src=(target BUFFER, value[, flat_index]); arg=(view, accumulate op or None)
    CONTIGUOUS = auto()  # materialize here; arg=None, or a unique token for a scatter's private copy
    # kernel level
    INDEX = auto()  # lowering helper: src=(node, valid, *idxs), "node at these indices"
    SPECIAL = auto()  # arg=("gid"|"lid"|"group", size)
    RANGE = auto()  # arg=(id, size): a serial loop variable
    LOAD = auto()  # src=(buffer DEFINE, idx, valid)
    STORE = auto()  # src=(buffer DEFINE, idx, value, valid); arg=accumulate op or None
    DEFINE_GLOBAL = auto()  # arg=(param number, numel): kernel parameter, acts like a BUFFER of that size
    ACC = auto()  # src=(value, *ranges), arg=op: reduce value over the ranges (serial loop)
    GROUP_REDUCE = auto()  # src=(partial, lid), arg=(op, local size): combine partials over a work-group
    SINK = auto()


LIBM = {Ops.ASIN, Ops.ACOS, Ops.ATAN, Ops.SINH, Ops.COSH, Ops.ASINH, Ops.ACOSH, Ops.ATANH, Ops.LGAMMA, Ops.EXPM1,
        Ops.LOG1P}
UNARY = {Ops.NEG, Ops.EXP, Ops.EXP2, Ops.LOG, Ops.LOG2, Ops.SIN, Ops.COS, Ops.TAN, Ops.TANH, Ops.ERF, Ops.SQRT,
         Ops.RSQRT, Ops.RECIP, Ops.ABS, Ops.FLOOR, Ops.CEIL, Ops.TRUNC, Ops.NOT} | LIBM
BINARY = {Ops.ADD, Ops.SUB, Ops.MUL, Ops.FDIV, Ops.IDIV, Ops.MOD, Ops.MAX, Ops.MIN, Ops.POW, Ops.ATAN2, Ops.CMPLT,
          Ops.CMPLE, Ops.CMPEQ, Ops.CMPNE, Ops.AND, Ops.OR, Ops.XOR, Ops.SHL, Ops.SHR}
COMPARE = {Ops.CMPLT, Ops.CMPLE, Ops.CMPEQ, Ops.CMPNE}
ALU = UNARY | BINARY | {Ops.WHERE}
ELEMENTWISE = ALU | {Ops.CAST, Ops.BITCAST}
MOVEMENT = {Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK, Ops.FLIP, Ops.STRIDED}
COMMUTATIVE = {Ops.ADD, Ops.MUL, Ops.MAX, Ops.MIN, Ops.CMPEQ, Ops.CMPNE, Ops.AND, Ops.OR, Ops.XOR}
REDUCE_IDENTITY: dict[Ops, Callable[[DType], Any]] = {
    Ops.ADD: lambda dt: 0,
    Ops.MUL: lambda dt: 1,
    Ops.MAX: lambda dt: min_max(dt)[0],
    Ops.MIN: lambda dt: min_max(dt)[1],
    Ops.XOR: lambda dt: 0,  # (a hash of the bits: torch.hash_tensor)
}


def _arg_key(arg: Any) -> Any:
    """Floats are keyed by their bits so 0.0 and -0.0 stay distinct and nan finds itself."""
    t = type(arg)
    if t is float:
        return ("f", arg.hex())
    if t is tuple and any(type(a) in (float, tuple) for a in arg):
        return tuple(_arg_key(a) for a in arg)
    return arg


def normalize_const(value: Any, dtype: DType) -> bool | int | float:
    if dtype == dtypes.bool:
        return bool(value)
    if dtype.is_int:
        lo, hi = min_max(dtype)
        v = int(value)
        return (v - lo) % (hi - lo + 1) + lo  # wrap around like the C type does
    return float(value)


class UOp:
    """An immutable node (op, dtype, src, arg). Equal parts give the same object, so `is` is equality."""

    _cache: weakref.WeakValueDictionary[tuple, UOp] = weakref.WeakValueDictionary()
    __slots__ = ("op", "dtype", "src", "arg", "__weakref__", "__dict__")

    def __new__(cls, op: Ops, dtype: DType | None = None, src: tuple[UOp, ...] = (), arg: Any = None) -> UOp:
        key = (op, dtype, src, _arg_key(arg))
        if (hit := cls._cache.get(key)) is not None:
            return hit
        self = super().__new__(cls)
        self.op, self.dtype, self.src, self.arg = op, dtype, src, arg
        cls._cache[key] = self
        return self

    def __reduce__(self):  # pickling rebuilds through the cache
        return UOp, (self.op, self.dtype, self.src, self.arg)

    def replace(self, **kw: Any) -> UOp:
        return UOp(kw.get("op", self.op), kw.get("dtype", self.dtype), kw.get("src", self.src), kw.get("arg", self.arg))

    def __repr__(self) -> str:
        return pretty(self)

    # ---- graph walks ----
    def toposort(self) -> list[UOp]:
        """Every node reachable from self, sources before users (iterative: graphs can be deep)."""
        order: list[UOp] = []
        seen: set[UOp] = set()
        stack: list[tuple[UOp, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            stack.extend((s, False) for s in reversed(node.src) if s not in seen)
        return order

    # ---- constructors ----
    @staticmethod
    def const(value: Any, dtype: DType) -> UOp:
        return UOp(Ops.CONST, dtype, (), normalize_const(value, dtype))

    def alu(self, op: Ops, *others: UOp | int | float) -> UOp:
        srcs = (self, *(o if isinstance(o, UOp) else UOp.const(o, self.dtype) for o in others))
        dtype = dtypes.bool if op in COMPARE else (srcs[-1].dtype if op is Ops.WHERE else self.dtype)
        return UOp(op, dtype, srcs)

    def cast(self, dtype: DType) -> UOp:
        return self if dtype == self.dtype else UOp(Ops.CAST, dtype, (self,))

    # index arithmetic sugar (never __eq__: identity is equality)
    def __add__(self, o: UOp | int) -> UOp: return self.alu(Ops.ADD, o)
    def __radd__(self, o: int) -> UOp: return UOp.const(o, self.dtype).alu(Ops.ADD, self)
    def __sub__(self, o: UOp | int) -> UOp: return self.alu(Ops.SUB, o)
    def __rsub__(self, o: int) -> UOp: return UOp.const(o, self.dtype).alu(Ops.SUB, self)
    def __mul__(self, o: UOp | int) -> UOp: return self.alu(Ops.MUL, o)
    def __rmul__(self, o: int) -> UOp: return UOp.const(o, self.dtype).alu(Ops.MUL, self)
    def __floordiv__(self, o: UOp | int) -> UOp: return self.alu(Ops.IDIV, o)
    def __mod__(self, o: UOp | int) -> UOp: return self.alu(Ops.MOD, o)
    def __lt__(self, o: UOp | int) -> UOp: return self.alu(Ops.CMPLT, o)  # type: ignore[override]
    def __and__(self, o: UOp | bool) -> UOp: return self.alu(Ops.AND, o)
    def eq(self, o: UOp | int) -> UOp: return self.alu(Ops.CMPEQ, o)
    def ne(self, o: UOp | int) -> UOp: return self.alu(Ops.CMPNE, o)
    def ge(self, o: UOp | int) -> UOp:
        lhs = o if isinstance(o, UOp) else UOp.const(o, self.dtype)
        return lhs.alu(Ops.CMPLE, self)
    def where(self, a: UOp | int | float, b: UOp | int | float) -> UOp:
        ref = a if isinstance(a, UOp) else b
        assert isinstance(ref, UOp), "where needs one UOp branch to take the dtype from"
        a = a if isinstance(a, UOp) else UOp.const(a, ref.dtype)
        b = b if isinstance(b, UOp) else UOp.const(b, ref.dtype)
        return UOp(Ops.WHERE, ref.dtype, (self, a, b))

    # ---- front-end shape ----
    @functools.cached_property
    def shape(self) -> tuple[int, ...]:
        op, arg = self.op, self.arg
        if op in (Ops.BUFFER, Ops.DEFINE_GLOBAL):
            return (arg[1],)
        if op is Ops.CONST:
            return ()
        if op is Ops.IOTA:
            return (arg,)
        if op in (Ops.RESHAPE, Ops.EXPAND):
            return arg
        if op is Ops.PERMUTE:
            return tuple(self.src[0].shape[i] for i in arg)
        if op is Ops.PAD:
            return tuple(s + b + a for s, (b, a) in zip(self.src[0].shape, arg))
        if op is Ops.SHRINK:
            return tuple(e - s for s, e in arg)
        if op is Ops.STRIDED:
            return arg[0]
        if op is Ops.REDUCE:
            return tuple(1 if i in arg[1] else s for i, s in enumerate(self.src[0].shape))
        if op is Ops.GATHER:
            return self.src[1].shape
        if op is Ops.WHERE:
            return self.src[1].shape
        return self.src[0].shape if self.src else ()

    @functools.cached_property
    def numel(self) -> int:
        return math.prod(self.shape)

    # ---- value bounds, for index simplification ----
    @functools.cached_property
    def bounds(self) -> tuple[int | float, int | float]:
        return _bounds(self)

    @property
    def vmin(self) -> int | float:
        return self.bounds[0]

    @property
    def vmax(self) -> int | float:
        return self.bounds[1]


def _bounds(u: UOp) -> tuple[int | float, int | float]:
    dt_lo, dt_hi = min_max(u.dtype) if u.dtype is not None else (-math.inf, math.inf)
    if u.op is Ops.CONST:
        return (u.arg, u.arg) if not isinstance(u.arg, float) or not math.isnan(u.arg) else (dt_lo, dt_hi)
    if u.op is Ops.SPECIAL:
        return 0, u.arg[1] - 1
    if u.op is Ops.RANGE:
        return 0, u.arg[1] - 1
    if u.dtype is None or not (u.dtype.is_int or u.dtype == dtypes.bool):
        return dt_lo, dt_hi
    s = [x.bounds for x in u.src]
    if u.op is Ops.ADD:
        lo, hi = s[0][0] + s[1][0], s[0][1] + s[1][1]
    elif u.op is Ops.SUB:
        lo, hi = s[0][0] - s[1][1], s[0][1] - s[1][0]
    elif u.op is Ops.MUL:
        c = [a * b for a in s[0] for b in s[1]]
        lo, hi = min(c), max(c)
    elif u.op is Ops.IDIV and s[1][0] == s[1][1] and s[1][0] > 0 and s[0][0] >= 0:
        lo, hi = s[0][0] // s[1][0], s[0][1] // s[1][0]
    elif u.op is Ops.MOD and s[1][0] == s[1][1] and s[1][0] > 0 and s[0][0] >= 0:
        lo, hi = (s[0][0], s[0][1]) if s[0][1] < s[1][0] else (0, s[1][0] - 1)
    elif u.op is Ops.MAX:
        lo, hi = max(s[0][0], s[1][0]), max(s[0][1], s[1][1])
    elif u.op is Ops.MIN:
        lo, hi = min(s[0][0], s[1][0]), min(s[0][1], s[1][1])
    elif u.op is Ops.CMPLT:
        lo, hi = int(s[0][1] < s[1][0]), int(s[0][0] < s[1][1])
    elif u.op is Ops.CMPLE:
        lo, hi = int(s[0][1] <= s[1][0]), int(s[0][0] <= s[1][1])
    elif u.op is Ops.WHERE:
        lo, hi = min(s[1][0], s[2][0]), max(s[1][1], s[2][1])
    elif u.op is Ops.CAST and u.src[0].dtype is not None and (u.src[0].dtype.is_int or u.src[0].dtype == dtypes.bool):
        lo, hi = s[0]
    else:
        return dt_lo, dt_hi
    if lo < dt_lo or hi > dt_hi:  # the C type wraps around: any value is possible
        return dt_lo, dt_hi
    return lo, hi


def pretty(u: UOp, limit: int = 40) -> str:
    """A readable multi-line listing of a graph: one numbered line per node."""
    nodes = u.toposort()
    names = {n: f"%{i}" for i, n in enumerate(nodes)}
    lines = []
    for n in nodes[-limit:]:
        arg = "" if n.arg is None else f" {n.arg!r}"[:80]
        src = ", ".join(names[s] for s in n.src)
        lines.append(f"{names[n]:>5} = {n.op.name} {n.dtype}{arg} ({src})")
    return "\n".join(lines)


# ---------------------------------------------------------------- patterns

class UPat:
    """A pattern over UOps: op(s), dtype(s), sources, arg, and a name to bind the match to."""

    def __init__(self, op: Ops | set[Ops] | None = None, dtype: DType | set[DType] | None = None,
                 src: tuple[UPat, ...] | UPat | None = None, arg: Any = None, name: str | None = None,
                 predicate: Callable[[UOp], bool] | None = None):
        self.ops = None if op is None else ({op} if isinstance(op, Ops) else set(op))
        self.dtypes = None if dtype is None else ({dtype} if isinstance(dtype, DType) else set(dtype))
        self.src, self.arg, self.name, self.predicate = src, arg, name, predicate

    @staticmethod
    def var(name: str | None = None, dtype: DType | set[DType] | None = None) -> UPat:
        return UPat(dtype=dtype, name=name)

    @staticmethod
    def cvar(name: str | None = None, dtype: DType | set[DType] | None = None) -> UPat:
        return UPat(Ops.CONST, dtype=dtype, name=name)

    @staticmethod
    def const(value: Any) -> UPat:
        return UPat(Ops.CONST, predicate=lambda u: u.arg == value)

    def match(self, u: UOp, store: dict[str, UOp]) -> bool:
        if self.ops is not None and u.op not in self.ops:
            return False
        if self.dtypes is not None and u.dtype not in self.dtypes:
            return False
        if self.arg is not None and u.arg != self.arg:
            return False
        if self.predicate is not None and not self.predicate(u):
            return False
        if self.name is not None:
            if self.name in store and store[self.name] is not u:
                return False
            store[self.name] = u
        if self.src is None:
            return True
        if isinstance(self.src, UPat):  # every source matches the same pattern
            return all(self.src.match(s, store) for s in u.src)
        if len(self.src) != len(u.src):
            return False
        return all(p.match(s, store) for p, s in zip(self.src, u.src))

    # pattern-building sugar mirroring UOp's
    def _bin(self, op: Ops, other: UPat | int) -> UPat:
        return UPat(op, src=(self, other if isinstance(other, UPat) else UPat.const(other)))
    def __add__(self, o: UPat | int) -> UPat: return self._bin(Ops.ADD, o)
    def __mul__(self, o: UPat | int) -> UPat: return self._bin(Ops.MUL, o)
    def __floordiv__(self, o: UPat | int) -> UPat: return self._bin(Ops.IDIV, o)
    def __mod__(self, o: UPat | int) -> UPat: return self._bin(Ops.MOD, o)


Rule = tuple[UPat, Callable[..., UOp | None]]


class PatternMatcher:
    """An ordered list of (pattern, function) rules; the first rule whose pattern matches and whose
    function returns a UOp wins. Rules are bucketed by op so a rewrite only tries relevant rules."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        self.by_op: dict[Ops | None, list[tuple[UPat, Callable, bool]]] = {}
        for pat, fn in rules:
            wants_ctx = "ctx" in inspect.signature(fn).parameters
            for op in (pat.ops or [None]):
                self.by_op.setdefault(op, []).append((pat, fn, wants_ctx))
        for op, lst in self.by_op.items():
            if op is not None:
                lst.extend(self.by_op.get(None, []))

    def __add__(self, other: PatternMatcher) -> PatternMatcher:
        return PatternMatcher(self.rules + other.rules)

    def rewrite(self, u: UOp, ctx: Any = None) -> UOp | None:
        for pat, fn, wants_ctx in self.by_op.get(u.op, self.by_op.get(None, [])):
            store: dict[str, UOp] = {}
            if pat.match(u, store):
                out = fn(ctx=ctx, **store) if wants_ctx else fn(**store)
                if out is not None and out is not u:
                    return out
        return None


def graph_rewrite(root: UOp, pm: PatternMatcher, ctx: Any = None) -> UOp:
    """Rewrite a graph to a fixed point: a node is rewritten until no rule matches, then its sources are,
    then the node rebuilt from new sources is tried again (a child change can enable a parent rule)."""
    memo: dict[UOp, UOp] = {}

    def rewrite(u: UOp) -> UOp:
        if (done := memo.get(u)) is not None:
            return done
        chain = [u]  # every intermediate form maps to the result too: another path may reach it directly
        node = u
        while (out := pm.rewrite(node, ctx)) is not None:
            if (done := memo.get(out)) is not None:
                node = done
                break
            node = out
            chain.append(node)
        else:
            new_src = tuple(recurse[0](s) for s in node.src)
            if any(a is not b for a, b in zip(new_src, node.src)):
                node = recurse[0](node.replace(src=new_src))
        for c in chain:
            memo[c] = node
        return node

    # rewrite calls itself through this list, which is emptied at the end: a function naming itself in its own
    # closure is a cycle only gc frees, and it would keep the graph, the rules (and the buffers their functions
    # hold) alive until then
    recurse = [rewrite]
    try:
        return rewrite(root)
    finally:
        recurse.clear()


def walk(u: UOp) -> Iterator[UOp]:
    yield from u.toposort()
