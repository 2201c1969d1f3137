"""Render a linearized kernel as OpenCL C. Each op is one entry of a string table; another C-like target
(C for a host compiler, CUDA C, Metal) would be another table and a different kernel preamble."""

from __future__ import annotations

import math
from collections.abc import Callable

from .dtype import DType, dtypes
from .linearize import AccDecl, AccUpdate, Loop, linearize
from .runtime import ToonyError, device
from .uop import LIBM, REDUCE_IDENTITY, Ops, UOp

# binary and unary ops: (a, b, dtype of the operands) -> C expression
_TANH_ONE = {"float": "9.1f", "double": "19.5"}  # |x| past which tanh(x) rounds to +-1
_FLOAT_MAX = "(({a}>{b}||{a}!={a})?{a}:{b})"  # propagates nan like numpy/torch (C's fmax does not)
_FLOAT_MIN = "(({a}<{b}||{a}!={a})?{a}:{b})"

_LIBM_NAMES = {op: op.name.lower() for op in LIBM}  # C's names: asin, lgamma, expm1, ...

ALU: dict[Ops, Callable[..., str]] = {
    Ops.NEG: lambda a, dt: f"(-{a})",
    Ops.EXP: lambda a, dt: f"exp({a})",
    Ops.EXP2: lambda a, dt: f"exp2({a})",
    Ops.LOG: lambda a, dt: f"log({a})",
    Ops.LOG2: lambda a, dt: f"log2({a})",
    Ops.SIN: lambda a, dt: f"sin({a})",
    Ops.COS: lambda a, dt: f"cos({a})",
    Ops.TAN: lambda a, dt: f"tan({a})",
    # tanh is exactly +-1 past the point where it rounds there (some OpenCL libraries stop at 1 - ulp)
    Ops.TANH: lambda a, dt: f"(fabs({a})>{_TANH_ONE[dt.cname]}?copysign(({dt.cname})1,{a}):tanh({a}))",
    Ops.ERF: lambda a, dt: f"erf({a})",
    **{op: (lambda a, dt, _f=_LIBM_NAMES[op]: f"{_f}({a})") for op in LIBM},
    Ops.SQRT: lambda a, dt: f"sqrt({a})",
    Ops.RSQRT: lambda a, dt: f"rsqrt({a})",
    Ops.RECIP: lambda a, dt: f"(({dt.cname})1/{a})",
    Ops.ABS: lambda a, dt: f"fabs({a})" if dt.is_float else f"(({dt.cname})abs({a}))",
    Ops.FLOOR: lambda a, dt: f"floor({a})",
    Ops.CEIL: lambda a, dt: f"ceil({a})",
    Ops.TRUNC: lambda a, dt: f"trunc({a})",
    Ops.NOT: lambda a, dt: f"(!{a})" if dt == dtypes.bool else f"(~{a})",
    Ops.ADD: lambda a, b, dt: f"({a}+{b})",
    Ops.SUB: lambda a, b, dt: f"({a}-{b})",
    Ops.MUL: lambda a, b, dt: f"({a}*{b})",
    Ops.FDIV: lambda a, b, dt: f"({a}/{b})",
    # integer division by 0 or INT_MIN/-1 trap on CPUs; the guards keep a bad input from killing the process
    Ops.IDIV: lambda a, b, dt: f"({a}/{b})",
    Ops.MOD: lambda a, b, dt: f"fmod({a},{b})" if dt.is_float else f"({a}%{b})",
    Ops.MAX: lambda a, b, dt: _FLOAT_MAX.format(a=a, b=b) if dt.is_float else f"({a}>{b}?{a}:{b})",
    Ops.MIN: lambda a, b, dt: _FLOAT_MIN.format(a=a, b=b) if dt.is_float else f"({a}<{b}?{a}:{b})",
    Ops.ATAN2: lambda a, b, dt: f"atan2({a},{b})",
    Ops.POW: lambda a, b, dt: f"pow({a},{b})" if dt.is_float else f"ipow_{dt.name}({a},{b})",
    Ops.CMPLT: lambda a, b, dt: f"({a}<{b})",
    Ops.CMPLE: lambda a, b, dt: f"({a}<={b})",
    Ops.CMPEQ: lambda a, b, dt: f"({a}=={b})",
    Ops.CMPNE: lambda a, b, dt: f"({a}!={b})",
    Ops.AND: lambda a, b, dt: f"({a}&{b})",
    Ops.OR: lambda a, b, dt: f"({a}|{b})",
    Ops.XOR: lambda a, b, dt: f"({a}^{b})",
    Ops.SHL: lambda a, b, dt: f"({a}<<{b})",
    Ops.SHR: lambda a, b, dt: f"({a}>>{b})",
    Ops.WHERE: lambda c, a, b, dt: f"({c}?{a}:{b})",
}

HELPERS = """inline ushort f2bf(float f) { uint u = as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);
  return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); }
inline float bf2f(ushort b) { return as_float(((uint)b) << 16); }
inline ushort f2h(float f) { ushort h; vstore_half_rte(f, 0, (__private half*)&h); return h; }
inline float h2f(ushort h) { return vload_half(0, (__private const half*)&h); }
inline void atomic_add_float(volatile __global float* p, float v) {
  uint old = as_uint(*p), prev;
  do { prev = old; old = atomic_cmpxchg((volatile __global uint*)p, prev, as_uint(as_float(prev) + v)); }
  while (old != prev); }
"""
HELPERS_F64_ATOMIC = """inline void atomic_add_double(volatile __global double* p, double v) {
  ulong old = as_ulong(*p), prev;
  do { prev = old; old = atom_cmpxchg((volatile __global ulong*)p, prev, as_ulong(as_double(prev) + v)); }
  while (old != prev); }
"""


def _ipow(dt: DType) -> str:
    t = dt.cname
    return (f"inline {t} ipow_{dt.name}({t} b, {t} e) {{ {t} r = 1; "
            f"if (e < 0) return b == 1 ? 1 : (b == ({t})-1 ? ((e & 1) ? ({t})-1 : 1) : 0); "
            f"while (e) {{ if (e & 1) r *= b; b *= b; e >>= 1; }} return r; }}\n")


def render_const(value: bool | int | float, dt: DType) -> str:
    if dt == dtypes.bool:
        return "true" if value else "false"
    if dt.is_float:
        suffix = "" if dt == dtypes.float64 else "f"
        if math.isnan(value):
            return "NAN" if suffix else "(double)NAN"
        if math.isinf(value):
            inf = "INFINITY" if suffix else "(double)INFINITY"
            return inf if value > 0 else f"(-{inf})"
        text = repr(float(value)) if dt == dtypes.float64 else f"{value:.9g}"
        if "." not in text and "e" not in text:
            text += ".0"
        return f"({text}{suffix})" if text.startswith("-") else text + suffix  # never `x--1.0f`
    lo = -(2 ** (dt.itemsize * 8 - 1))
    if dt.kind == "i" and value == lo:
        return f"(({dt.cname})({value + 1}{'L' if dt.itemsize == 8 else ''}-1))"
    suffix = {dtypes.int64: "L", dtypes.uint64: "ul", dtypes.uint32: "u"}.get(dt, "")
    if dt.itemsize < 4:
        return f"(({dt.cname}){value})"
    return f"({value}{suffix})" if value < 0 else f"{value}{suffix}"


def _load_expr(ptr: str, idx: str, dt: DType) -> str:
    if dt == dtypes.float16:
        return f"vload_half({idx},{ptr})"
    if dt == dtypes.bfloat16:
        return f"bf2f({ptr}[{idx}])"
    if dt == dtypes.bool:
        return f"({ptr}[{idx}]!=0)"
    return f"{ptr}[{idx}]"


def _store_stmt(ptr: str, idx: str, val: str, dt: DType) -> str:
    if dt == dtypes.float16:
        return f"vstore_half_rte({val},{idx},{ptr});"
    if dt == dtypes.bfloat16:
        return f"{ptr}[{idx}] = f2bf({val});"
    if dt == dtypes.bool:
        return f"{ptr}[{idx}] = (uchar)({val});"
    return f"{ptr}[{idx}] = {val};"


# the read-modify-write a scatter with an accumulate op does per element; names the atomic helper
_ACCUMULATE = {Ops.ADD: "add", Ops.MUL: "mul", Ops.MAX: "max", Ops.MIN: "min"}


def _combine(op: Ops, cur: str, v: str, dt: DType) -> str:
    """op(cur, v) in dt's compute type. On bool, add is `or` and mul is `and` (C++'s bool += and *= do that),
    and integer products multiply as unsigned: the low bits are the same, and unsigned wraps without UB."""
    if dt == dtypes.bool:
        return f"({cur}|{v})" if op in (Ops.ADD, Ops.MAX) else f"({cur}&{v})"
    if op is Ops.MUL and dt.is_int:
        word = "ulong" if dt.itemsize == 8 else "uint"
        return f"(({word}){cur}*({word}){v})"
    return ALU[op](cur, v, dt)


def _atomic_narrow(op: Ops, dt: DType) -> str:
    """An atomic accumulate for a 1- or 2-byte element: compare-and-swap on the aligned 32-bit word holding it
    (buffers are allocated in whole words, so the word never leaves the buffer)."""
    bits, st = dt.itemsize * 8, dt.storage_cname
    mask = f"{(1 << bits) - 1}u"
    decode = {"float16": "h2f(cur)", "bfloat16": "bf2f(cur)", "bool": "(cur!=0)"}.get(dt.name, "cur")
    nxt = _combine(op, decode, "v", dt)
    encode = {"float16": f"f2h({nxt})", "bfloat16": f"f2bf({nxt})", "bool": f"(uchar)({nxt})"}.get(
        dt.name, f"({st})({nxt})")
    raw = "ushort" if dt.name in ("float16", "bfloat16") else "uchar" if dt == dtypes.bool else st
    return (f"inline void atomic_{_ACCUMULATE[op]}_{dt.name}(__global {st}* p, {dt.cname} v) {{\n"
            f"  volatile __global uint* w = (volatile __global uint*)((size_t)p & ~(size_t)3);\n"
            f"  uint sh = (uint)((size_t)p & 3) * 8, old = *w, prev;\n"
            f"  do {{ prev = old; {raw} cur = ({raw})((prev >> sh) & {mask}); {raw} nxt = {encode};\n"
            f"       old = atomic_cmpxchg(w, prev, (prev & ~({mask} << sh)) | ((((uint)nxt) & {mask}) << sh)); }}\n"
            f"  while (old != prev); }}\n")


def _atomic_wide(op: Ops, dt: DType) -> str:
    """An atomic accumulate for a 4- or 8-byte element with no native atomic (mul, max, min; float add has its
    own helpers above): compare-and-swap on the element's bits."""
    word, cas = ("uint", "atomic_cmpxchg") if dt.itemsize == 4 else ("ulong", "atom_cmpxchg")
    ct = dt.cname
    nxt = f"as_{word}(({ct}){_combine(op, f'as_{ct}(prev)', 'v', dt)})"
    return (f"inline void atomic_{_ACCUMULATE[op]}_{dt.name}(volatile __global {ct}* p, {ct} v) {{\n"
            f"  volatile __global {word}* w = (volatile __global {word}*)p;\n"
            f"  {word} old = *w, prev;\n"
            f"  do {{ prev = old; old = {cas}(w, prev, {nxt}); }} while (old != prev); }}\n")


def _atomic_stmt(op: Ops, ptr: str, idx: str, val: str, dt: DType) -> tuple[str, str | None]:
    """The statement that accumulates val into ptr[idx] with op, and the helper it needs (or None)."""
    if op is Ops.ADD and dt in (dtypes.int32, dtypes.uint32):
        return f"atomic_add(&{ptr}[{idx}],{val});", None
    if op is Ops.ADD and dt in (dtypes.int64, dtypes.uint64):
        return f"atom_add(&{ptr}[{idx}],{val});", None
    if op is Ops.ADD and dt == dtypes.float32:
        return f"atomic_add_float(&{ptr}[{idx}],{val});", None
    if op is Ops.ADD and dt == dtypes.float64:
        return f"atomic_add_double(&{ptr}[{idx}],{val});", HELPERS_F64_ATOMIC
    helper = _atomic_narrow(op, dt) if dt.itemsize < 4 else _atomic_wide(op, dt)
    return f"atomic_{_ACCUMULATE[op]}_{dt.name}(&{ptr}[{idx}],{val});", helper


def _cast_expr(x: str, src: DType, dst: DType) -> str:
    if dst == dtypes.bool:
        return f"({x}!=0)"
    if dst == dtypes.float16:
        return f"h2f(f2h((float)({x})))"  # compute in float, but round to a representable half
    if dst == dtypes.bfloat16:
        return f"bf2f(f2bf((float)({x})))"
    return f"(({dst.cname})({x}))"


def _bitcast_expr(x: str, src: DType, dst: DType) -> str:
    bits = f"f2h({x})" if src == dtypes.float16 else f"f2bf({x})" if src == dtypes.bfloat16 else x
    if dst == dtypes.float16:
        return f"h2f(as_ushort({bits}))"
    if dst == dtypes.bfloat16:
        return f"bf2f(as_ushort({bits}))"
    return f"as_{dst.cname}({bits})"


def render(sink: UOp, name: str, param_dtypes: dict[int, DType] | None = None) -> str:
    """OpenCL C source of a lowered kernel. param_dtypes names every parameter's element type: lowering may
    have dropped all reads of one (a pad whose source is never in bounds), but the kernel still takes it."""
    dev = device()
    names: dict[UOp, str] = {}
    params: dict[int, UOp] = {}
    lines: list[str] = []
    local_decls: list[str] = []
    helpers = {HELPERS}
    counter = [0]
    uses_double = False

    for u in sink.toposort():
        if u.dtype == dtypes.float64 or (u.op is Ops.DEFINE_GLOBAL and u.dtype == dtypes.float64):
            uses_double = True
        if u.op is Ops.DEFINE_GLOBAL:
            params.setdefault(u.arg[0], u)
        if u.op is Ops.POW and u.dtype.is_int:
            helpers.add(_ipow(u.dtype))
    types = {i: g.dtype for i, g in params.items()} | (param_dtypes or {})
    if uses_double and not dev.supports_fp64:
        raise ToonyError(f"the device {dev.name} has no float64 support; use float32")

    def var(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def ref(u: UOp) -> str:
        if u.op is Ops.CONST:
            return render_const(u.arg, u.dtype)
        if u.op is Ops.RANGE:
            return f"r{u.arg[0]}"
        return names[u]

    def ptr(g: UOp) -> str:
        p = f"data{g.arg[0]}"
        return p if types[g.arg[0]] == g.dtype else f"((__global {g.dtype.storage_cname}*){p})"

    def emit(block: list, depth: int) -> None:
        ind = "  " * depth
        for it in block:
            if isinstance(it, Loop):
                r = ref(it.range)
                lines.append(f"{ind}for ({it.range.dtype.cname} {r} = 0; {r} < {it.range.arg[1]}; {r}++) {{")
                emit(it.body, depth + 1)
                lines.append(f"{ind}}}")
                continue
            if isinstance(it, AccDecl):
                acc = it.acc
                names[acc] = var("acc")
                identity = render_const(REDUCE_IDENTITY[acc.arg](acc.dtype), acc.dtype)
                lines.append(f"{ind}{acc.dtype.cname} {names[acc]} = {identity};")
                continue
            if isinstance(it, AccUpdate):
                acc = it.acc
                op = ALU[acc.arg](names[acc], ref(acc.src[0]), acc.dtype)
                lines.append(f"{ind}{names[acc]} = {op};")
                continue
            if text := line(it):
                lines.extend(ind + t for t in text.split("\n"))

    def line(u: UOp) -> str:
        dt = u.dtype
        if u.op is Ops.SPECIAL:
            names[u] = {"gid": "gidx", "lid": "lidx", "group": "grp"}[u.arg[0]]
            fn = {"gid": "get_global_id", "lid": "get_local_id", "group": "get_group_id"}[u.arg[0]]
            return f"{dt.cname} {names[u]} = ({dt.cname}){fn}(0);"
        if u.op is Ops.ACC:
            return ""  # its accumulator was declared before the loop and is final after it
        names[u] = var("v")
        if u.op is Ops.LOAD:
            g, idx, valid = u.src
            load = _load_expr(ptr(g), ref(idx), dt)
            if valid.op is Ops.CONST:
                expr = load if valid.arg else render_const(0, dt)
            else:
                expr = f"({ref(valid)}?{load}:{render_const(0, dt)})"
            return f"{dt.cname} {names[u]} = {expr};"
        if u.op is Ops.STORE:
            g, idx, val, valid = u.src
            if u.arg is not None:  # a scatter that accumulates: duplicate indices combine atomically
                stmt, helper = _atomic_stmt(u.arg, ptr(g), ref(idx), ref(val), g.dtype)
                if helper:
                    helpers.add(helper)
            else:
                stmt = _store_stmt(ptr(g), ref(idx), ref(val), g.dtype)
            if valid.op is Ops.CONST:
                return stmt if valid.arg else "/* store masked off */"
            return f"if ({ref(valid)}) {{ {stmt} }}"
        if u.op is Ops.CAST:
            return f"{dt.cname} {names[u]} = {_cast_expr(ref(u.src[0]), u.src[0].dtype, dt)};"
        if u.op is Ops.BITCAST:
            return f"{dt.cname} {names[u]} = {_bitcast_expr(ref(u.src[0]), u.src[0].dtype, dt)};"
        if u.op is Ops.GROUP_REDUCE:
            op, size = u.arg
            buf = var("lbuf")
            local_decls.append(f"  __local {dt.cname} {buf}[{size}];")
            combine = ALU[op](f"{buf}[lidx]", f"{buf}[lidx+s]", dt)
            # a tree in local memory; every work-item of the group reaches these barriers (never inside a branch)
            return (f"{buf}[lidx] = {ref(u.src[0])}; barrier(CLK_LOCAL_MEM_FENCE);\n"
                    f"for (int s = {size // 2}; s > 0; s >>= 1) {{ if (lidx < s) {buf}[lidx] = {combine}; "
                    f"barrier(CLK_LOCAL_MEM_FENCE); }}\n"
                    f"{dt.cname} {names[u]} = {buf}[0];")
        if u.op in (Ops.IDIV, Ops.MOD) and dt.is_int and (u.src[1].op is not Ops.CONST or u.src[1].arg in (0, -1)):
            # integer division by 0 (and INT_MIN / -1) traps on CPUs: a bad input must not kill the process
            a, b = ref(u.src[0]), ref(u.src[1])
            safe = f"(({b}==0{'' if dt.is_unsigned else f'||{b}==-1'})?1:{b})"
            fix = "" if dt.is_unsigned else f"{b}==-1?{'-' + a if u.op is Ops.IDIV else '0'}:"
            return f"{dt.cname} {names[u]} = ({b}==0?0:{fix}{ALU[u.op](a, safe, dt)});"
        if u.op in ALU:
            operand_dt = u.src[-1].dtype if u.op is Ops.WHERE else u.src[0].dtype
            expr = ALU[u.op](*(ref(s) for s in u.src), operand_dt)
            if dt in (dtypes.float16, dtypes.bfloat16) and u.op is not Ops.WHERE:
                # 16-bit floats compute in float but every op's result is rounded, as eager torch does per op
                expr = _cast_expr(expr, dtypes.float32, dt)
            return f"{dt.cname} {names[u]} = {expr};"
        raise ToonyError(f"render: no OpenCL for {u.op}")

    emit(linearize(sink), 1)
    args = ", ".join(f"__global {types[i].storage_cname}* data{i}" for i in sorted(types))
    pragmas = []
    if uses_double:
        pragmas.append("#pragma OPENCL EXTENSION cl_khr_fp64 : enable")
    if any(u.op is Ops.STORE and u.arg is not None and u.src[0].dtype.itemsize == 8 for u in sink.toposort()):
        pragmas.append("#pragma OPENCL EXTENSION cl_khr_int64_base_atomics : enable")
    head = "\n".join(pragmas + sorted(helpers))
    body = "\n".join(local_decls + lines)
    return f"{head}\n__kernel void {name}({args}) {{\n{body}\n}}\n"
