"""Lowerings for convolution (1d/2d/3d, strided, padded, dilated, grouped, transposed) and its backward.

A convolution is the window view of its padded input (windows.windows, pure index arithmetic) times the
weight, summed over (channels / groups, kernel): one reduction kernel, no im2col buffer. A transposed
convolution, and the input gradient of a convolution, reduce over the transposed window view of their input
instead (a gather, so deterministic). The weight gradient is a correlation of the input windows with the
output gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from toony_core import Tensor
from toony_core.dtype import DType

from .lowering import META_LIB, lowers
from .windows import Ints, acc_dtype, expand, gather_windows, pad_crop, transposed_taps, windows, zeros_if_empty


def _kept(n: int, o: int, out: Ints) -> tuple[int, ...]:
    """The shape of _contract's result: (N, O, 1, *out, 1 per spatial dim)."""
    return (n, o, 1, *out, *([1] * len(out)))


def _contract(win: Tensor, weight: Tensor, groups: int, d: int) -> Tensor:
    """win (N, C, *out, *K) with weight (O, C/groups, *K), or (O, C/groups, *out, *K) when the weight tap depends
    on the position -> (N, O, 1, *out, 1, ...) in the accumulation dtype.

    The reduced axes are kept (see _kept): elementwise work after a reduction fuses into its kernel only
    while the reduced unit axes are still there, so callers add the bias and cast first, then reshape."""
    n = win.shape[0]
    out_sp, k = win.shape[2:2 + d], win.shape[2 + d:]
    o, cg = weight.shape[0], weight.shape[1]
    acc = acc_dtype(win.dtype)
    # the group split is done before the reduction (the window's channel follows o through an expand), so the
    # reduction's own output is already (N, O, *out) and a bias or activation fuses into the same kernel
    w = win.cast(acc).reshape(n, groups, 1, cg, *out_sp, *k).expand(n, groups, o // groups, cg, *out_sp, *k)
    w = w.reshape(n, o, cg, *out_sp, *k)
    wt = weight.cast(acc).reshape(1, o, cg, *(weight.shape[2:2 + d] if weight.ndim == 2 + 2 * d else [1] * d), *k)
    return (w * wt).sum((2, *range(3 + d, 3 + 2 * d)), True, acc)


def _conv_out(size: Ints, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints) -> list[int]:
    return [(n + 2 * p - dl * (k - 1) - 1) // s + 1 for n, k, s, p, dl in zip(size, kernel, stride, padding, dilation)]


def _conv(x: Tensor, weight: Tensor, stride: Ints, padding: Ints, dilation: Ints, groups: int) -> Tensor:
    d = x.ndim - 2
    kernel = weight.shape[2:]
    out = _conv_out(x.shape[2:], kernel, stride, padding, dilation)
    shape = _kept(x.shape[0], weight.shape[0], out)
    if (z := zeros_if_empty(shape, acc_dtype(x.dtype), x, weight)) is not None:
        return z
    xp = pad_crop(x, padding, padding)
    return _contract(windows(xp, kernel, stride, dilation, out), weight, groups, d)


def _conv_transposed(x: Tensor, weight: Tensor, stride: Ints, padding: Ints, dilation: Ints, groups: int,
                     out: Ints) -> Tensor:
    """The transposed convolution of x (N, Cin, *S) with weight (Cin, O/groups, *K), cut to spatial size `out`
    (output_padding only decides that size)."""
    d = x.ndim - 2
    cin, og, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
    shape = _kept(x.shape[0], og * groups, out)
    if (z := zeros_if_empty(shape, acc_dtype(x.dtype), x, weight)) is not None:
        return z
    taps = transposed_taps(x, out, kernel, stride, padding, dilation)  # (N, Cin, *out, *T)
    # as a plain convolution weight: (groups, Cin/g, O/g, K) -> (O, Cin/g, K)
    w = weight.reshape(groups, cin // groups, og, *kernel).permute(0, 2, 1, *range(3, 3 + d))
    w = w.reshape(og * groups, cin // groups, *kernel)
    if taps.kernel_index is None:  # all taps, reversed
        w = w.flip(tuple(range(2, 2 + d)))
    else:  # the real taps of each position: the weight taps they stand for, (O, Cin/g, *out, *T)
        w = gather_windows(w, taps.kernel_index)
    return _contract(taps.view, w, groups, d)


@lowers("convolution.default", "convolution_overrideable.default")
def convolution(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Ints, padding: Ints, dilation: Ints,
                transposed: bool, output_padding: Ints, groups: int) -> Tensor:
    d = x.ndim - 2
    stride, padding, dilation = expand(stride, d), expand(padding, d), expand(dilation, d)
    if transposed:
        output_padding = expand(output_padding, d)
        out = [(n - 1) * s - 2 * p + dl * (k - 1) + op + 1 for n, k, s, p, dl, op in
               zip(x.shape[2:], weight.shape[2:], stride, padding, dilation, output_padding)]
        y = _conv_transposed(x, weight, stride, padding, dilation, groups, out)
    else:
        y = _conv(x, weight, stride, padding, dilation, groups)
    if bias is not None:
        y = y + bias.cast(y.dtype).reshape(1, -1, *([1] * (1 + 2 * d)))
    return y.cast(x.dtype).reshape(y.shape[0], y.shape[1], *y.shape[3:3 + d])


@lowers("convolution_backward.default")
def convolution_backward(grad_output: Tensor, x: Tensor, weight: Tensor, bias_sizes: Ints | None, stride: Ints,
                         padding: Ints, dilation: Ints, transposed: bool, output_padding: Ints, groups: int,
                         output_mask: Sequence[bool]) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    d = x.ndim - 2
    stride, padding, dilation = expand(stride, d), expand(padding, d), expand(dilation, d)
    go = grad_output
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        if transposed:
            gi = _conv(go, weight, stride, padding, dilation, groups)
            if gi.shape[3:3 + d] != x.shape[2:]:  # output_padding >= stride (allowed when < dilation)
                gi = gi.shrink([(0, n) for n in gi.shape[:3]] + [(0, n) for n in x.shape[2:]] + [(0, 1)] * d)
        else:
            gi = _conv_transposed(go, weight, stride, padding, dilation, groups, x.shape[2:])
        grad_input = gi.cast(x.dtype).reshape(x.shape)
    if output_mask[1]:
        grad_weight = (_conv_weight_grad_transposed if transposed else _conv_weight_grad)(
            go, x, weight, stride, padding, dilation, groups).cast(weight.dtype).reshape(weight.shape)
    if output_mask[2]:
        acc = acc_dtype(go.dtype)
        grad_bias = _blocked_sum(go.cast(acc), tuple(range(2, go.ndim)), acc).cast(go.dtype).reshape(go.shape[1])
    return grad_input, grad_weight, grad_bias


Grads = tuple[Tensor | None, Tensor | None, Tensor | None]


@lowers("convolution_backward_overrideable.default")
def convolution_backward_overrideable(grad_output: Tensor, x: Tensor, weight: Tensor, stride: Ints, padding: Ints,
                                      dilation: Ints, transposed: bool, output_padding: Ints, groups: int,
                                      output_mask: Sequence[bool]) -> Grads:
    """The backend hook torch._convolution (and its autograd formula) calls on devices it does not know."""
    return convolution_backward(grad_output, x, weight, None, stride, padding, dilation, transposed, output_padding,
                                groups, output_mask)


def _register_overrideable_meta() -> None:
    """torch has no meta kernels for the *_overrideable hooks (their default raises); the eager layer takes
    output shapes from meta kernels, so they get the ones of the ops they stand for."""
    aten = torch.ops.aten

    def conv_meta(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, *args: Any) -> torch.Tensor:
        return aten.convolution(x, w, b, *args)

    def conv_backward_meta(go: torch.Tensor, x: torch.Tensor, w: torch.Tensor, *args: Any) -> Any:
        return aten.convolution_backward(go, x, w, None, *args)

    META_LIB.impl("convolution_overrideable", conv_meta, "Meta")
    META_LIB.impl("convolution_backward_overrideable", conv_backward_meta, "Meta")


_register_overrideable_meta()


# elements of partial sums a weight or bias gradient may keep (16 MiB of float32), and how many partial sums
# each output gets at most
PARTIALS_BUDGET = 1 << 22
MAX_PARTIALS = 64


def _blocked_sum(t: Tensor, spatial: tuple[int, ...], acc: DType) -> Tensor:
    """t summed over the batch (axis 0) and the (adjacent) spatial axes, keeping them. A float sum of
    batch * positions terms in one loop loses accuracy as it grows (twice torch's error at 8 x 32 x 32), so it
    is blocked: partial sums over blocks of the batch, and of the first spatial axis when the batch is small,
    then their sum (one more small kernel)."""
    n, a0 = t.shape[0], spatial[0]
    s0 = t.shape[a0]
    out_numel = t.numel() // (n * math.prod(t.shape[a] for a in spatial))
    most = min(MAX_PARTIALS, PARTIALS_BUDGET // max(out_numel, 1))
    b1 = min(n, most)
    b2 = min(s0, most // max(b1, 1))
    if b1 * b2 <= 1 or not acc.is_float:
        return t.sum((0, *spatial), True, acc)
    per1, per2 = -(-n // b1), -(-s0 // b2)
    b1, b2 = -(-n // per1), -(-s0 // per2)
    pads = [(0, 0)] * t.ndim
    pads[0], pads[a0] = (0, b1 * per1 - n), (0, b2 * per2 - s0)
    # axis 0 -> (b1, per1) and axis a0 -> (b2, per2): sum the within-block axes with the other spatial axes,
    # then the block axes
    shape = [b1, per1, *t.shape[1:a0], b2, per2, *t.shape[a0 + 1:]]
    blocked = t.pad(pads).reshape(shape)
    partial = blocked.sum((1, a0 + 2, *(a + 2 for a in spatial[1:])), True, acc)
    total = partial.sum((0, a0 + 1), True, acc)
    return total.reshape([m for a, m in enumerate(total.shape) if a not in (0, a0 + 1)])


def _conv_weight_grad(go: Tensor, x: Tensor, weight: Tensor, stride: Ints, padding: Ints, dilation: Ints,
                      groups: int) -> Tensor:
    """dL/dw[o, c, k] = sum over (n, out) of go[n, o, out] * xpad[n, g(o) * C/g + c, out * stride + k * dilation]."""
    d = x.ndim - 2
    n, out, kernel = x.shape[0], go.shape[2:], weight.shape[2:]
    o, cg = weight.shape[0], weight.shape[1]
    if (z := zeros_if_empty(weight.shape, acc_dtype(x.dtype), x, go)) is not None:
        return z
    acc = acc_dtype(x.dtype)
    win = windows(pad_crop(x, padding, padding), kernel, stride, dilation, out).cast(acc)
    win = win.reshape(n, groups, 1, cg, *out, *kernel)
    g = go.cast(acc).reshape(n, groups, o // groups, 1, *out, *([1] * d))
    return _blocked_sum(win * g, tuple(range(4, 4 + d)), acc)


def _conv_weight_grad_transposed(go: Tensor, x: Tensor, weight: Tensor, stride: Ints, padding: Ints,
                                 dilation: Ints, groups: int) -> Tensor:
    """For y = conv_transpose(x, w): dL/dw[ci, o, k] = sum over (n, i) of x[n, ci, i] * go[n, o, i * stride - pad
    + k * dilation]: the windows of the padded grad_output at the input positions."""
    d = x.ndim - 2
    n, size, kernel = x.shape[0], x.shape[2:], weight.shape[2:]
    cin, og = weight.shape[0], weight.shape[1]
    if (z := zeros_if_empty(weight.shape, acc_dtype(x.dtype), x, go)) is not None:
        return z
    acc = acc_dtype(x.dtype)
    need = [(s - 1) * st + (k - 1) * dl + 1 for s, st, k, dl in zip(size, stride, kernel, dilation)]
    after = [m - p - o for m, p, o in zip(need, padding, go.shape[2:])]
    win = windows(pad_crop(go, padding, after), kernel, stride, dilation, size).cast(acc)
    win = win.reshape(n, groups, 1, og, *size, *kernel)
    xs = x.cast(acc).reshape(n, groups, cin // groups, 1, *size, *([1] * d))
    return _blocked_sum(win * xs, tuple(range(4, 4 + d)), acc)


# the pooling and resampling lowerings register themselves on import
from . import lowering_pool, lowering_upsample  # noqa: E402, F401
