"""Random numbers on the device, from a counter-based generator.

The toony generator (csrc/generator.cpp) is a (seed, offset) pair, like CUDA's Philox state. A call that
needs n random 64-bit words takes words offset .. offset+n-1 of the seed's stream and advances the offset by
n, so results are reproducible under torch.manual_seed (or a generator's manual_seed / set_state) and
successive calls differ; they do not match the CPU stream. Word i of a stream is SplitMix64's output
mix(s + (offset + i) * gamma), s a scramble of the seed: a hash of (seed, offset, element index) in uint64
multiplies, xors and shifts that fuses into whatever consumes it. The host folds seed and offset into one
uint64 written to a tiny buffer per call, so the kernels read it instead of baking it in as a constant
(which would compile a new kernel for every call).

These kernels are eager-only: a compiled graph is replayed and draws its own words per call
(compile_ops.py), so none of them enters the shared lowering table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from toony_core import Tensor, dtypes
from toony_core.dtype import DType

from . import extra_kernels

_GAMMA = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
# bits of precision (mantissa + 1) per float dtype: torch's random_() default range is [0, 2**digits]
_DIGITS = {dtypes.float16: 11, dtypes.bfloat16: 8, dtypes.float32: 24, dtypes.float64: 53}
_TORCH_FLOAT = {dtypes.float16: torch.float16, dtypes.bfloat16: torch.bfloat16, dtypes.float32: torch.float32,
                dtypes.float64: torch.float64}


def _mix(z: int) -> int:
    """SplitMix64's finalizer on a Python int (to scramble the seed on the host)."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK
    return z ^ (z >> 31)


def _mix_lazy(z: Tensor) -> Tensor:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)


def generator(gen: torch.Generator | None) -> torch.Generator:
    if gen is None:
        from . import device_module
        return device_module.default_generators[0]
    if gen.device.type != "toony":
        raise RuntimeError(f"Expected a 'toony' device type for generator but found '{gen.device.type}'")
    return gen


def words(shape: Sequence[int], gen: torch.Generator | None, streams: int = 1) -> list[Tensor]:
    """`streams` tensors of uniformly random uint64 words of this shape; advances the generator."""
    shape = tuple(shape)
    n = math.prod(shape)
    if n == 0:
        return [Tensor.zeros(shape, dtypes.uint64) for _ in range(streams)]
    g = generator(gen)
    offset = g.get_offset()
    g.set_offset(offset + n * streams)
    base = (_mix(g.initial_seed() & _MASK) + offset * _GAMMA) & _MASK
    key = Tensor(np.array([base], dtype=np.uint64)).reshape(())
    i = Tensor.arange(n, dtype=dtypes.uint64)
    return [_mix_lazy(key + (i * streams + s) * _GAMMA).reshape(shape) for s in range(streams)]


def unit(w: Tensor, dt: DType) -> Tensor:
    """Uniform in [0, 1) from a word: 53 bits for float64, 24 (exact in float32) otherwise."""
    if dt == dtypes.float64:
        return (w >> 11).cast(dtypes.float64) * 2.0 ** -53
    return (w >> 40).cast(dtypes.float32) * 2.0 ** -24


def open_unit(w: Tensor, dt: DType) -> Tensor:
    """Uniform in (0, 1), never 0 or 1 (for logs): (k + 1/2) / 2**bits, exact in the compute type."""
    if dt == dtypes.float64:
        return ((w >> 12).cast(dtypes.float64) + 0.5) * 2.0 ** -52
    return ((w >> 41).cast(dtypes.float32) + 0.5) * 2.0 ** -23


def _acc(dt: DType) -> DType:
    return dtypes.float64 if dt == dtypes.float64 else dtypes.float32


def _need_float(x: Tensor, op: str) -> None:
    if not x.dtype.is_float:
        raise NotImplementedError(f"\"{op}\" not implemented for '{x.dtype.name}' on the toony device")


def standard_normal(shape: Sequence[int], dt: DType, gen: torch.Generator | None) -> Tensor:
    """N(0, 1) by Box-Muller (the cosine branch): one word per element for float32, two for float64."""
    acc = _acc(dt)
    if acc == dtypes.float64:
        w1, w2 = words(shape, gen, 2)
        u1, u2 = open_unit(w1, acc), unit(w2, acc)
    else:
        (w,) = words(shape, gen)
        u1 = open_unit(w, acc)  # the top 23 bits
        u2 = ((w >> 8) & 0xFFFFFF).cast(acc) * 2.0 ** -24  # 24 other bits of the same word
    return (u1.log() * -2).sqrt() * (u2 * (2 * math.pi)).cos()


# ---------------------------------------------------------------- the ops (lazy in, lazy out)


def uniform(x: Tensor, low: float = 0.0, high: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
    _need_float(x, "uniform_")
    (w,) = words(x.shape, generator)
    v = (unit(w, _acc(x.dtype)) * (high - low) + low).cast(x.dtype)
    # a value that rounds up to `high` in the output type becomes `low` (as CUDA does): `to` stays excluded
    top = float(torch.tensor(high, dtype=torch.float64).to(_TORCH_FLOAT[x.dtype]))
    return (v.cast(_acc(x.dtype)) == top).where(Tensor(low, x.dtype), v)  # top is exact in the acc type


def normal_functional(x: Tensor, mean: float = 0.0, std: float = 1.0, *,
                      generator: torch.Generator | None = None) -> Tensor:
    _need_float(x, "normal_")
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    return standard_normal(x.shape, x.dtype, generator) * std + mean


def normal_tensor_float(mean: Tensor, std: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    return standard_normal(mean.shape, mean.dtype, generator) * std + mean


def normal_float_tensor(mean: float, std: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    return standard_normal(std.shape, std.dtype, generator) * std + mean


def normal_tensor_tensor(mean: Tensor, std: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    from toony_core.tensor import _broadcast_shape
    shape = _broadcast_shape(mean.shape, std.shape)
    dt = dtypes.float64 if dtypes.float64 in (mean.dtype, std.dtype) else mean.dtype
    return standard_normal(shape, dt, generator) * std + mean


def exponential(x: Tensor, lambd: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
    _need_float(x, "exponential_")
    (w,) = words(x.shape, generator)
    return open_unit(w, _acc(x.dtype)).log() * (-1.0 / lambd)  # > 0: the unit is never 1


def log_normal(x: Tensor, mean: float = 1.0, std: float = 2.0, *, generator: torch.Generator | None = None) \
        -> Tensor:
    _need_float(x, "log_normal_")
    if std <= 0:
        raise RuntimeError(f"log_normal_ expects std > 0.0, but found std={std}")
    return (standard_normal(x.shape, x.dtype, generator) * std + mean).exp()


def cauchy(x: Tensor, median: float = 0.0, sigma: float = 1.0, *, generator: torch.Generator | None = None) \
        -> Tensor:
    _need_float(x, "cauchy_")
    if sigma <= 0:
        raise RuntimeError(f"cauchy_ expects sigma > 0.0, but found sigma={sigma}")
    (w,) = words(x.shape, generator)
    return ((open_unit(w, _acc(x.dtype)) - 0.5) * math.pi).tan() * sigma + median


def geometric(x: Tensor, p: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Trials up to the first success: ceil(log(u) / log(1 - p)), at least 1."""
    if not 0 < p < 1:
        raise RuntimeError(f"geometric_ expects p to be in (0, 1), but got p={p}")
    (w,) = words(x.shape, generator)
    return (open_unit(w, _acc(x.dtype)).log() * (1 / math.log1p(-p))).ceil().maximum(1)


def multinomial(probs: Tensor, num_samples: int, replacement: bool = False, *,
                generator: torch.Generator | None = None) -> Tensor:
    """Gumbel-max: argmax(log p + Gumbel noise) draws a category with probability p / sum(p); the top
    num_samples of one noisy row draw without replacement. Zero probabilities (log 0 = -inf) are never drawn.
    The CPU's argument checks that need the values (negative, non-finite, all-zero rows, too few nonzero
    categories) are not made here: they would need a device round trip."""
    from .lowering_sort import sort_lazy
    rows = probs.reshape(1, probs.shape[0]) if probs.ndim == 1 else probs
    n, c = rows.shape
    logp = rows.cast(_acc(probs.dtype)).log()
    if replacement:
        (w,) = words((n, num_samples, c), generator)
        keys = logp.reshape(n, 1, c) - (-open_unit(w, logp.dtype).log()).log()
        best = keys.max(2, keepdim=True)
        pos = Tensor.arange(c).reshape(1, 1, c)
        out = (keys == best).where(pos, c).min(2)
    else:
        (w,) = words((n, c), generator)
        keys = logp - (-open_unit(w, logp.dtype).log()).log()
        out = sort_lazy(keys, 1, True)[1].shrink(((0, n), (0, num_samples)))
    return out.reshape(num_samples) if probs.ndim == 1 else out


def bernoulli_p(x: Tensor, p: float = 0.5, *, generator: torch.Generator | None = None) -> Tensor:
    (w,) = words(x.shape, generator)
    return (unit(w, _acc(x.dtype)) < p).cast(x.dtype)


def bernoulli_tensor(x: Tensor, p: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    (w,) = words(x.shape, generator)
    return (unit(w, _acc(p.dtype)) < p).cast(x.dtype)


def bernoulli(probs: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    return bernoulli_tensor(probs, probs, generator=generator)


def _uniform_ints(x: Tensor, low: int, span: int, gen: torch.Generator | None) -> Tensor:
    """Integers low + [0, span) (span up to 2**64) in x's shape, converted to x's dtype."""
    (w,) = words(x.shape, gen)
    r = w if span >= 1 << 64 else w % span  # modulo bias <= span / 2**64, as in torch
    return (r + (low & _MASK)).bitcast(dtypes.int64).cast(x.dtype)  # wrapping add, then two's complement


def _inclusive_max(dt: DType) -> int:
    if dt == dtypes.bool:
        return 1
    if dt.is_float:
        return 1 << _DIGITS[dt]
    return int(np.iinfo(dt.np).max)


def random_from(x: Tensor, low: int, high: int | None = None, *, generator: torch.Generator | None = None) \
        -> Tensor:
    top = _inclusive_max(x.dtype) + 1 if high is None else high
    if top <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={top}")
    return _uniform_ints(x, low, top - low, generator)


def random_to(x: Tensor, high: int, *, generator: torch.Generator | None = None) -> Tensor:
    return random_from(x, 0, high, generator=generator)


def random_default(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    return _uniform_ints(x, 0, _inclusive_max(x.dtype) + 1, generator)


def native_dropout(x: Tensor, p: float, train: bool | None) -> tuple[Tensor, Tensor]:
    if train is False or x.numel() == 0:
        return x, Tensor.full(x.shape, True, dtypes.bool)
    (w,) = words(x.shape, None)
    keep = unit(w, dtypes.float32) >= p  # kept with probability 1 - p
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return keep.where(x.cast(_acc(x.dtype)) * scale, 0).cast(x.dtype), keep


def native_dropout_backward(grad: Tensor, mask: Tensor, scale: float) -> Tensor:
    # in float (integer and bool gradients give float results, as on the CPU); the kernel casts to the result type
    return mask.where(grad.cast(_acc(grad.dtype)) * scale, 0)


def randperm_lazy(n: int, gen: torch.Generator | None) -> Tensor:
    """A uniformly random permutation of 0..n-1: sort random keys. A key is a random word whose low bits are
    replaced by the element's index (at least 32 random bits stay), so one packed column sorts, ties are
    broken by position, and the index comes back out of the sorted key."""
    from .lowering_sort import bitonic
    if n <= 1:
        return Tensor.arange(n, dtype=dtypes.int64)
    (w,) = words((1, n), gen)
    bits = (n - 1).bit_length()
    low = (1 << bits) - 1
    key = (w & (_MASK ^ low)) | Tensor.arange(n, dtype=dtypes.uint64).reshape(1, n)
    (out,) = bitonic([key.pad(((0, 0), (0, (1 << bits) - n)), _MASK)])  # padding sorts last
    return (out & low).shrink(((0, 1), (0, n))).cast(dtypes.int64).reshape(n)


def _randperm_out(n: int, *, generator: torch.Generator | None = None, out: torch.Tensor) -> torch.Tensor:
    from . import eager
    if n < 0:
        raise RuntimeError(f"n must be non-negative, got{n}")
    if n > 0 and not out.dtype.is_floating_point and out.dtype != torch.bool:
        if n - 1 > torch.iinfo(out.dtype).max:
            raise RuntimeError(f"n is too large for result tensor type: '{out.dtype}'")
    if tuple(out.shape) != (n,):
        out.resize_((n,))
    eager.write_into(out, randperm_lazy(n, generator), [out])
    return out


# eager kernels: functional forms, and in-place and out= forms through them
for _name, _fn in [("uniform.default", uniform), ("normal_functional.default", normal_functional),
                   ("normal.Tensor_float", normal_tensor_float), ("normal.float_Tensor", normal_float_tensor),
                   ("normal.Tensor_Tensor", normal_tensor_tensor), ("exponential.default", exponential),
                   ("log_normal.default", log_normal), ("cauchy.default", cauchy),
                   ("geometric.default", geometric), ("multinomial.default", multinomial),
                   ("bernoulli.p", bernoulli_p), ("bernoulli.default", bernoulli),
                   ("bernoulli.Tensor", bernoulli_tensor), ("random.from", random_from),
                   ("random.to", random_to), ("random.default", random_default),
                   ("native_dropout.default", native_dropout)]:
    extra_kernels.functional(_name, _fn)
extra_kernels.functional("native_dropout_backward.default", native_dropout_backward)
for _name, _functional, _fn in [("uniform_.default", "uniform.default", uniform),
                                ("normal_.default", "normal_functional.default", normal_functional),
                                ("exponential_.default", "exponential.default", exponential),
                                ("log_normal_.default", "log_normal.default", log_normal),
                                ("cauchy_.default", "cauchy.default", cauchy),
                                ("geometric_.default", "geometric.default", geometric),
                                ("bernoulli_.float", "bernoulli.p", bernoulli_p),
                                ("bernoulli_.Tensor", "bernoulli.Tensor", bernoulli_tensor),
                                ("random_.from", "random.from", random_from),
                                ("random_.to", "random.to", random_to),
                                ("random_.default", "random.default", random_default)]:
    extra_kernels.inplace(_name, _functional, _fn)
for _name, _functional, _fn in [("normal.Tensor_float_out", "normal.Tensor_float", normal_tensor_float),
                                ("normal.float_Tensor_out", "normal.float_Tensor", normal_float_tensor),
                                ("normal.Tensor_Tensor_out", "normal.Tensor_Tensor", normal_tensor_tensor),
                                ("bernoulli.out", "bernoulli.default", bernoulli),
                                ("multinomial.out", "multinomial.default", multinomial),
                                ("native_dropout_backward.out", "native_dropout_backward.default",
                                 native_dropout_backward)]:
    extra_kernels.out(_name, _functional, _fn)
extra_kernels.kernel("randperm.generator_out", _randperm_out)
