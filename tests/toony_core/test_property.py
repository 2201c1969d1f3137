"""Property tests: random op graphs over random shapes and random non-contiguous inputs, realized by toony_core
and compared with numpy.

Inputs are views built recursively (permute, flip, pad, shrink, expand, as_strided with offsets, over views of
views); graphs mix elementwise ops, reductions with keepdim (so they broadcast back), movement of computed
values, and forced materialization (contiguous), so fusion and multi-kernel schedules are both exercised.

* int32 graphs are compared exactly.
* float32 graphs carry a rigorous error bound alongside the float64 reference value: every op adds the error
  it may make (u = 2**-24 for correctly rounded ops, the measured ulp bound of test_ops.py for transcendental
  functions) and propagates its inputs' errors through its derivative bound; sums add the worst-case
  (n - 1) * u * sum(|terms|). Comparisons that pick branches only look at exact leaf values, so an
  error never flips a branch.

Examples are derandomized (the same graphs every run) so the compile cache makes reruns fast.
"""

from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from toony_core import Tensor, dtypes

U = 2.0 ** -24  # unit roundoff of float32
ULP = 2.0 ** -23  # one float32 ulp, relative to the value (an upper bound for normal numbers)
TINY = 1e-30  # absolute slack for values near zero (denormals may be flushed)

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Node:
    t: Tensor  # toony
    v: np.ndarray  # numpy reference (float64 for float graphs, exact ints for int graphs)
    e: np.ndarray | None  # float graphs: bound on |toony - v|, elementwise; None for int graphs
    desc: str  # how it was built, for the failure message


def np_as_strided(x: np.ndarray, shape, strides, offset) -> np.ndarray:
    flat = np.ascontiguousarray(x).reshape(-1)
    return np.lib.stride_tricks.as_strided(flat[offset:], shape, [s * flat.itemsize for s in strides]).copy()


# mostly 1-3 dims of sizes 1..5; a 0-d shape one time in eight, a size-0 dim one time in eleven
_dims = st.lists(st.sampled_from([2, 3, 5, 4, 1, 2, 3, 5, 4, 1, 0]), min_size=1, max_size=3).map(tuple)
shapes = st.integers(0, 7).flatmap(lambda k: st.just(()) if k == 0 else _dims)


# ---------------------------------------------------------------- inputs: random views of random data

@st.composite
def leaf(draw, shape: tuple[int, ...], is_float: bool, depth: int = 2) -> Node:
    nd = len(shape)
    kinds = ["plain"] + (["permute", "flip", "pad", "shrink", "expand", "strided"] if depth > 0 else [])
    if nd == 0:
        kinds = [k for k in kinds if k in ("plain", "strided")]
    kind = draw(st.sampled_from(kinds))
    if kind == "plain":
        seed = draw(st.integers(0, 2 ** 16))
        r = np.random.default_rng(seed)
        if is_float:
            x = r.uniform(-2, 2, shape).astype(np.float32)
            return Node(Tensor(x), x.astype(np.float64), np.zeros(shape), f"x{shape}")
        x = r.integers(-9, 10, shape).astype(np.int32)
        return Node(Tensor(x), x, None, f"i{shape}")
    if kind == "permute":
        perm = tuple(draw(st.permutations(range(nd))))
        inner_shape = [0] * nd
        for i, p in enumerate(perm):
            inner_shape[p] = shape[i]
        n = draw(leaf(tuple(inner_shape), is_float, depth - 1))
        return Node(n.t.permute(perm), n.v.transpose(perm), None if n.e is None else n.e.transpose(perm),
                    f"{n.desc}.permute{perm}")
    if kind == "flip":
        axes = tuple(sorted(draw(st.sets(st.integers(0, nd - 1), min_size=1))))
        n = draw(leaf(shape, is_float, depth - 1))
        return Node(n.t.flip(axes), np.flip(n.v, axes), None if n.e is None else np.flip(n.e, axes),
                    f"{n.desc}.flip{axes}")
    if kind == "pad":
        pads = []
        for s in shape:
            b = draw(st.integers(0, s))
            pads.append((b, draw(st.integers(0, s - b))))
        inner = tuple(s - b - a for s, (b, a) in zip(shape, pads, strict=True))
        n = draw(leaf(inner, is_float, depth - 1))
        value = draw(st.sampled_from([0.0, 1.5, -0.25])) if is_float else draw(st.sampled_from([0, 3, -7]))
        pads = tuple(pads)
        v = np.pad(n.v, pads, constant_values=value)
        e = None if n.e is None else np.pad(n.e, pads)
        return Node(n.t.pad(pads, value), v, e, f"{n.desc}.pad({pads}, {value})")
    if kind == "shrink":
        extra = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape]
        inner = tuple(s + b + a for s, (b, a) in zip(shape, extra, strict=True))
        n = draw(leaf(inner, is_float, depth - 1))
        bounds = tuple((b, b + s) for s, (b, _) in zip(shape, extra, strict=True))
        sl = tuple(slice(b, e) for b, e in bounds)
        return Node(n.t.shrink(bounds), n.v[sl], None if n.e is None else n.e[sl], f"{n.desc}.shrink({bounds})")
    if kind == "expand":
        ones = draw(st.sets(st.integers(0, nd - 1), min_size=1))
        inner = tuple(1 if i in ones else s for i, s in enumerate(shape))
        n = draw(leaf(inner, is_float, depth - 1))
        e = None if n.e is None else np.broadcast_to(n.e, shape)
        return Node(n.t.expand(shape), np.broadcast_to(n.v, shape), e, f"{n.desc}.expand({shape})")
    # strided: an as_strided view (element strides >= 0, an offset) over a 1-D input that may itself be a view
    strides = tuple(draw(st.integers(0, 3)) for _ in shape)
    offset = draw(st.integers(0, 5))
    span = offset + sum((s - 1) * st_ for s, st_ in zip(shape, strides, strict=True) if s > 0) + 1
    n = draw(leaf((span + draw(st.integers(0, 3)),), is_float, depth - 1))
    v = np_as_strided(n.v, shape, strides, offset)
    e = None if n.e is None else np_as_strided(n.e, shape, strides, offset)
    return Node(n.t.as_strided(shape, strides, offset), v, e, f"{n.desc}.as_strided({shape}, {strides}, {offset})")


# ---------------------------------------------------------------- float32 graphs with error bounds

def _round(v: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Error bound after a correctly rounded op whose exact result is v, computed from operands off by e."""
    return e * (1 + U) + U * (np.abs(v) + e)


@st.composite
def float_graph(draw, shape: tuple[int, ...], depth: int, root: bool = False) -> Node:
    if depth == 0 or (not root and draw(st.integers(0, 4)) == 0):
        return draw(leaf(shape, True))
    op = draw(st.sampled_from(["add", "sub", "mul", "max", "min", "where", "scale", "shift_const", "neg_abs",
                               "tanh", "sigmoid", "sin", "exp", "sum", "rmax", "flip", "roll", "contiguous"]))
    a = draw(float_graph(shape, depth - 1))
    if op in ("add", "sub", "mul", "max", "min", "where"):
        b = draw(float_graph(shape, depth - 1))
        if op == "add":
            v = a.v + b.v
            return Node(a.t + b.t, v, _round(v, a.e + b.e), f"({a.desc} + {b.desc})")
        if op == "sub":
            v = a.v - b.v
            return Node(a.t - b.t, v, _round(v, a.e + b.e), f"({a.desc} - {b.desc})")
        if op == "mul":
            v = a.v * b.v
            e = a.e * np.abs(b.v) + b.e * np.abs(a.v) + a.e * b.e
            return Node(a.t * b.t, v, _round(v, e), f"({a.desc} * {b.desc})")
        if op in ("max", "min"):
            fn = np.maximum if op == "max" else np.minimum
            t = a.t.maximum(b.t) if op == "max" else a.t.minimum(b.t)
            return Node(t, fn(a.v, b.v), np.maximum(a.e, b.e) * np.ones_like(fn(a.v, b.v)),
                        f"{op}({a.desc}, {b.desc})")
        c = draw(leaf(shape, True, depth=1))  # an exact condition: its comparison cannot flip
        cond_t, cond_v = c.t > 0.5, c.v > 0.5
        v = np.where(cond_v, a.v, b.v)
        return Node(cond_t.where(a.t, b.t), v, np.where(cond_v, a.e, b.e), f"where({c.desc} > 0.5, {a.desc}, "
                                                                           f"{b.desc})")
    if op == "scale":
        k = draw(st.sampled_from([0.5, -1.5, 3.0, 0.25]))
        v = a.v * k
        return Node(a.t * k, v, _round(v, a.e * abs(k)), f"({a.desc} * {k})")
    if op == "shift_const":
        k = draw(st.sampled_from([1.0, -0.75, 2.5]))
        v = a.v + k
        return Node(a.t + k, v, _round(v, a.e), f"({a.desc} + {k})")
    if op == "neg_abs":
        return Node((-a.t).abs(), np.abs(a.v), a.e, f"abs(-{a.desc})")
    if op == "tanh":  # |tanh'| <= 1; 1.5 ulp measured bound
        v = np.tanh(a.v)
        return Node(a.t.tanh(), v, a.e + 1.5 * ULP * np.abs(v) + TINY, f"tanh({a.desc})")
    if op == "sigmoid":  # |sigmoid'| <= 1/4; 2.5 ulp measured bound
        v = 1 / (1 + np.exp(-a.v))
        return Node(a.t.sigmoid(), v, a.e / 4 + 2.5 * ULP * np.abs(v) + TINY, f"sigmoid({a.desc})")
    if op == "sin":  # |sin'| <= 1; 2 ulp measured bound
        v = np.sin(a.v)
        return Node(a.t.sin(), v, a.e + 2 * ULP * np.abs(v) + TINY, f"sin({a.desc})")
    if op == "exp":  # exp(clip(x, -4, 4)): clip is exact; exp(x + d) = exp(x) * exp(d); 1 ulp measured bound
        v = np.exp(np.clip(a.v, -4, 4))
        return Node(a.t.clip(-4.0, 4.0).exp(), v, v * np.expm1(a.e) + ULP * v, f"exp(clip({a.desc}))")
    if op in ("sum", "rmax") and len(shape) > 0:
        axis = draw(st.integers(0, len(shape) - 1))
        if op == "sum":
            n = shape[axis]
            v = a.v.sum(axis, keepdims=True)
            mag = (np.abs(a.v) + a.e).sum(axis, keepdims=True)
            e = a.e.sum(axis, keepdims=True) + max(n - 1, 0) * U * mag
            return Node(a.t.sum(axis, keepdim=True), v, e, f"{a.desc}.sum({axis}, keepdim)")
        if shape[axis] > 0:
            return Node(a.t.max(axis, keepdim=True), a.v.max(axis, keepdims=True),
                        a.e.max(axis, keepdims=True), f"{a.desc}.max({axis}, keepdim)")
    if op == "flip" and len(a.v.shape) > 0:
        return Node(a.t.flip(0), np.flip(a.v, 0), np.flip(a.e, 0), f"{a.desc}.flip(0)")
    if op == "roll" and len(a.v.shape) > 0 and a.v.shape[-1] > 1:  # pad then shrink a computed value
        n = a.v.shape[-1]
        pads = ((0, 0),) * (a.v.ndim - 1) + ((1, 0),)
        bounds = tuple((0, s) for s in a.v.shape[:-1]) + ((0, n),)
        sl = (Ellipsis, slice(0, n))
        return Node(a.t.pad(pads).shrink(bounds), np.pad(a.v, pads)[sl], np.pad(a.e, pads)[sl],
                    f"{a.desc}.pad(1 before, last).shrink")
    if op == "contiguous":
        return Node(a.t.contiguous(), a.v, a.e, f"{a.desc}.contiguous()")
    return a


@SETTINGS
@given(shape=shapes, data=st.data())
def test_random_float32_graphs(shape, data):
    g = data.draw(float_graph(shape, depth=4, root=True))
    got = g.t.numpy()
    assert got.dtype == np.float32
    assert got.shape == g.v.shape, g.desc
    err = np.abs(got.astype(np.float64) - g.v)
    bound = g.e * 1.001 + TINY
    bad = ~(err <= bound)
    assert not bad.any(), (f"{g.desc}\nmax excess at {np.argwhere(bad)[0]}: got {got[bad][0]!r}, "
                           f"want {g.v[bad][0]!r}, bound {bound[bad][0]!r}")


# ---------------------------------------------------------------- int32 graphs, exact

def _clip(t: Tensor, v: np.ndarray) -> tuple[Tensor, np.ndarray]:
    return t.clip(-10_000, 10_000), np.clip(v, -10_000, 10_000)


@st.composite
def int_graph(draw, shape: tuple[int, ...], depth: int, root: bool = False) -> Node:
    if depth == 0 or (not root and draw(st.integers(0, 4)) == 0):
        return draw(leaf(shape, False))
    op = draw(st.sampled_from(["add", "sub", "mul", "max", "min", "where", "floordiv", "mod", "and", "xor",
                               "shl", "neg_abs", "sum", "rmax", "flip", "contiguous"]))
    a = draw(int_graph(shape, depth - 1))
    if op in ("add", "sub", "mul", "max", "min", "where", "and", "xor"):
        b = draw(int_graph(shape, depth - 1))
        if op == "where":
            return Node((a.t < b.t).where(a.t, b.t - 1), np.where(a.v < b.v, a.v, b.v - 1), None,
                        f"where({a.desc} < {b.desc}, ., . - 1)")
        t, v = {"add": (a.t + b.t, a.v + b.v), "sub": (a.t - b.t, a.v - b.v), "mul": (a.t * b.t, a.v * b.v),
                "max": (a.t.maximum(b.t), np.maximum(a.v, b.v)), "min": (a.t.minimum(b.t), np.minimum(a.v, b.v)),
                "and": (a.t & b.t, a.v & b.v), "xor": (a.t ^ b.t, a.v ^ b.v)}[op]
        t, v = _clip(t, v)
        return Node(t, v, None, f"clip({op}({a.desc}, {b.desc}))")
    if op in ("floordiv", "mod"):
        k = draw(st.sampled_from([3, -4, 7, 1]))
        t, v = (a.t // k, a.v // k) if op == "floordiv" else (a.t % k, a.v % k)
        return Node(t, v, None, f"({a.desc} {'//' if op == 'floordiv' else '%'} {k})")
    if op == "shl":
        t, v = _clip(a.t << 2, a.v << 2)
        return Node(t, v, None, f"clip({a.desc} << 2)")
    if op == "neg_abs":
        return Node((-a.t).abs(), np.abs(-a.v), None, f"abs(-{a.desc})")
    if op in ("sum", "rmax") and len(shape) > 0:
        axis = draw(st.integers(0, len(shape) - 1))
        if op == "sum":  # sums of int32 are int64, as in torch
            t, v = _clip(a.t.sum(axis, keepdim=True), a.v.sum(axis, keepdims=True, dtype=np.int64))
            return Node(t, v, None, f"clip({a.desc}.sum({axis}, keepdim))")
        if shape[axis] > 0:
            return Node(a.t.max(axis, keepdim=True), a.v.max(axis, keepdims=True), None,
                        f"{a.desc}.max({axis}, keepdim)")
    if op == "flip" and a.v.ndim > 0:
        return Node(a.t.flip(0), np.flip(a.v, 0), None, f"{a.desc}.flip(0)")
    if op == "contiguous":
        return Node(a.t.contiguous(), a.v, None, f"{a.desc}.contiguous()")
    return a


@SETTINGS
@given(shape=shapes, data=st.data())
def test_random_int_graphs(shape, data):
    g = data.draw(int_graph(shape, depth=4, root=True))
    got = g.t.numpy()
    assert got.dtype == g.v.dtype, (got.dtype, g.v.dtype, g.desc)
    assert got.shape == g.v.shape, g.desc
    assert np.array_equal(got, g.v), f"{g.desc}\ngot\n{got}\nwant\n{g.v}"


def test_dtypes_of_int_graph_results():
    # int32 stays int32 through elementwise ops; a sum makes int64 and mixing promotes to it (as numpy)
    a = Tensor(np.ones((2, 3), np.int32))
    assert (a * 2 + a).dtype == dtypes.int32
    assert (a.sum(1, keepdim=True) + a).dtype == dtypes.int64
