"""Convolution, pooling and upsampling on the toony device (forward and backward), against CPU torch.

Every test but the CNN one runs with the CPU fallback off (TOONY_FALLBACK=0), so an op without a native
lowering fails loudly. Tolerances: float32 results are sums of up to a few hundred products accumulated in a
different order than torch's, so they may differ by a few units in the last place of the largest partial sum
(atol/rtol 2e-5 on values of order 1-20); half and bfloat16 accumulate in float32 on both sides and round
once, so they may differ by about one unit in the last place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_toony

DEV = "toony"
A = torch.ops.aten
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-12, atol=1e-12),
       torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


@pytest.fixture(autouse=True)
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOONY_FALLBACK", "0")


def rand(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def close(got: Any, want: Any, dtype: torch.dtype = torch.float32, **tol: float) -> None:
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            close(g, w, dtype, **tol)
        return
    if want is None:
        assert got is None
        return
    assert got.device.type == DEV
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    if not want.dtype.is_floating_point:
        tol = tol or dict(rtol=0, atol=0)
    torch.testing.assert_close(got.cpu(), want, equal_nan=True, **(tol or TOL[dtype]))


def with_grads(fn: Callable[..., torch.Tensor], *args: torch.Tensor, dtype: torch.dtype = torch.float32,
               **tol: float) -> None:
    """fn's output and the gradients of every floating argument, on the device and on the CPU."""
    def run(device: str) -> list[torch.Tensor]:
        xs = [a.detach().to(device).requires_grad_(a.is_floating_point()) for a in args]
        out = fn(*xs)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(rand(*out.shape, dtype=out.dtype, seed=7).to(device))
        return [out] + [x.grad for x in xs if x.requires_grad]

    got, want = run(DEV), run("cpu")
    close(got, want, dtype, **tol)


# ---------------------------------------------------------------- convolution

# (input shape, weight shape, conv kwargs): 1d/2d/3d, stride, padding, dilation, groups, odd sizes, batch 1
CONV = {
    "2d_basic": ((2, 3, 7, 6), (4, 3, 3, 3), {}),
    "2d_pad_stride": ((2, 4, 9, 8), (6, 4, 3, 3), dict(stride=2, padding=1)),
    "2d_asym": ((1, 3, 11, 7), (5, 3, 3, 2), dict(stride=(2, 3), padding=(2, 1), dilation=(2, 1))),
    "2d_groups": ((2, 4, 9, 8), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
    "2d_depthwise_dilated": ((1, 4, 10, 9), (8, 1, 3, 3), dict(padding=2, dilation=2, groups=4)),
    "2d_1x1": ((3, 5, 4, 4), (7, 5, 1, 1), {}),
    "2d_kernel_past_input": ((1, 2, 2, 3), (3, 2, 5, 5), dict(padding=3)),
    "1d": ((2, 4, 13), (6, 2, 3), dict(stride=2, padding=1, groups=2)),
    "3d": ((1, 2, 5, 6, 4), (3, 2, 3, 2, 3), dict(stride=(1, 2, 1), padding=(1, 0, 1))),
}

# transposed: (input shape, weight shape (Cin, Cout / groups, *K), kwargs incl. output_padding)
CONV_T = {
    "2d_basic": ((2, 4, 5, 6), (4, 3, 3, 3), {}),
    "2d_stride_outpad": ((2, 4, 5, 4), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "2d_groups_dilation": ((1, 4, 5, 4), (4, 2, 3, 2), dict(stride=(3, 2), padding=(0, 2), output_padding=(2, 0),
                                                             groups=2, dilation=(1, 2))),
    "2d_big_padding": ((1, 2, 3, 3), (2, 3, 1, 1), dict(stride=3, padding=2)),
    "1d": ((2, 2, 7), (2, 4, 4), dict(stride=3, padding=1, output_padding=2)),
    "3d": ((1, 2, 3, 4, 2), (2, 2, 2, 3, 2), dict(stride=2, padding=(1, 0, 0))),
}

CONV_FN = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}
CONV_T_FN = {3: F.conv_transpose1d, 4: F.conv_transpose2d, 5: F.conv_transpose3d}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", list(CONV))
def test_conv(case: str, bias: bool) -> None:
    xs, ws, kw = CONV[case]
    fn = CONV_FN[len(xs)]
    args = [rand(*xs), rand(*ws, seed=1)] + ([rand(ws[0], seed=2)] if bias else [])
    with_grads(lambda x, w, b=None: fn(x, w, b, **kw), *args)


@pytest.mark.parametrize("case", list(CONV_T))
def test_conv_transposed(case: str) -> None:
    xs, ws, kw = CONV_T[case]
    fn = CONV_T_FN[len(xs)]
    cout = ws[1] * kw.get("groups", 1)
    with_grads(lambda x, w, b: fn(x, w, b, **kw), rand(*xs), rand(*ws, seed=1), rand(cout, seed=2))


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True),
                                  (False, True, True)])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
def test_convolution_backward_output_mask(mask: tuple[bool, bool, bool], transposed: bool) -> None:
    x, w = rand(2, 4, 7, 6), rand(4, 2, 3, 3, seed=1)
    args = [[4], [2, 1], [1, 1], [1, 2], transposed, [1, 0] if transposed else [0, 0], 2,
            list(mask)]
    out = A.convolution(x, w, None, *args[1:6], 2)
    go = rand(*out.shape, seed=3)
    got = A.convolution_backward(go.to(DEV), x.to(DEV), w.to(DEV), *args)
    want = A.convolution_backward(go, x, w, *args)
    for g, wnt, m in zip(got, want, mask):  # an unrequested output may be None (toony) or computed (the CPU)
        if m:
            close(g, wnt)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_conv_dtypes(dtype: torch.dtype) -> None:
    with_grads(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2), rand(2, 4, 7, 6, dtype=dtype),
               rand(6, 2, 3, 3, dtype=dtype, seed=1), rand(6, dtype=dtype, seed=2), dtype=dtype)
    with_grads(lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=1), rand(1, 4, 4, 3, dtype=dtype),
               rand(4, 3, 2, 3, dtype=dtype, seed=1), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_conv_integer(dtype: torch.dtype) -> None:
    """torch's CPU convolution takes integers (wrapping like integer arithmetic does)."""
    x = torch.randint(0, 5, (2, 3, 6, 5), dtype=dtype)
    w = torch.randint(0, 4, (4, 3, 3, 2), dtype=dtype)
    close(F.conv2d(x.to(DEV), w.to(DEV), padding=1), F.conv2d(x, w, padding=1))


def test_conv_noncontiguous() -> None:
    x, w = rand(2, 4, 9, 8), rand(6, 4, 3, 3, seed=1)
    cl = x.to(memory_format=torch.channels_last)
    with_grads(lambda x, w: F.conv2d(x, w, padding=1), cl, w.to(memory_format=torch.channels_last))
    with_grads(lambda x, w: F.conv2d(x[:, 1:, ::2, 1:], w[:, 1:], stride=(1, 2)), x, w)
    with_grads(lambda x, w: F.conv2d(x.transpose(2, 3), w), x, w)
    with_grads(lambda x, w: F.conv2d(x.expand(3, 4, 9, 8), w), x[:1], w)


def test_conv_gradients_as_accurate_as_cpu() -> None:
    """Weight and bias gradients sum batch x positions terms (4608 here); against a float64 reference toony's
    error stays within twice the CPU's own float32 error (blocked summation, see lowering_conv._blocked_sum)."""
    x, w, go = rand(8, 8, 24, 24), rand(8, 8, 3, 3, seed=1), rand(8, 8, 24, 24, seed=2)
    args = ([8], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True])
    exact = A.convolution_backward(go.double(), x.double(), w.double(), *args)
    cpu = A.convolution_backward(go, x, w, *args)
    got = A.convolution_backward(go.to(DEV), x.to(DEV), w.to(DEV), *args)
    for name, g, c, e in zip(("input", "weight", "bias"), got, cpu, exact):
        err, cpu_err = (g.cpu().double() - e).abs().max(), (c.double() - e).abs().max()
        assert err <= 2 * cpu_err, f"grad_{name}: toony error {err:.2e}, CPU error {cpu_err:.2e}"


def test_conv_double_backward() -> None:
    """Gradients of gradients (torch's _convolution_double_backward composes convolutions)."""
    def run(device: str, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        x = rand(2, 4, 7, 6, dtype=dtype).to(device).requires_grad_()
        w = rand(6, 2, 3, 3, dtype=dtype, seed=1).to(device).requires_grad_()
        y = F.conv2d(x, w, stride=2, padding=1, groups=2)
        gx, gw = torch.autograd.grad((y * y).sum(), (x, w), create_graph=True)
        (gx.pow(2).sum() + gw.sum()).backward()
        return [t.detach().cpu().double() for t in (gx, gw, x.grad, w.grad)]

    # second-order terms cancel (values ~1e2 from much larger partial sums), so the fair bar is the CPU's own
    # float32 error against a float64 reference: toony may be off by a few times that, not more
    exact = run("cpu", torch.float64)
    for got, cpu, ref in zip(run(DEV), run("cpu"), exact):
        assert (got - ref).abs().max() <= 4 * (cpu - ref).abs().max() + 1e-5 * ref.abs().max()


def test_private_convolution_hook() -> None:
    """torch._convolution reaches a backend through convolution_overrideable and its backward hook."""
    with_grads(lambda x, w, b: torch._convolution(x, w, b, [2, 1], [1, 1], [1, 1], False, [0, 0], 1, False, False,
                                                  True, True), rand(1, 2, 5, 5), rand(3, 2, 3, 3, seed=1),
               rand(3, seed=2))


def test_conv_empty_batch() -> None:
    x, w = rand(0, 3, 6, 5), rand(4, 3, 3, 3)
    with_grads(lambda x, w: F.conv2d(x, w, padding=1), x, w)


@pytest.mark.parametrize("bad", ["channels", "kernel_too_big", "pool_padding"])
def test_bad_arguments_raise_like_cpu(bad: str) -> None:
    """torch's own shape checks (its meta kernels) reject what the CPU rejects, before anything runs."""
    x = rand(1, 3, 6, 5)
    fn = {"channels": lambda x: F.conv2d(x, torch.zeros(4, 2, 3, 3, device=x.device)),
          "kernel_too_big": lambda x: F.conv2d(x, torch.zeros(4, 3, 7, 3, device=x.device)),
          "pool_padding": lambda x: F.max_pool2d(x, 2, padding=2)}[bad]
    with pytest.raises(RuntimeError):
        fn(x)
    with pytest.raises(RuntimeError):
        fn(x.to(DEV))


def realize_count(fn: Callable[[], Any]) -> int:
    torch.toony.synchronize()
    before = torch_toony.metrics()["kernels"]
    out = fn()
    torch.toony.synchronize()
    del out
    return torch_toony.metrics()["kernels"] - before


def test_conv_kernel_counts() -> None:
    """A convolution (with its bias) is one kernel: the window view and the weight product fuse into the
    reduction, with no im2col buffer; so is the input gradient of a stride-1 convolution and a pool. The weight
    gradient is two: partial sums over blocks of the batch and rows, then their sum (blocked summation, for
    accuracy)."""
    x, w, b = (t.to(DEV) for t in (rand(2, 4, 9, 8), rand(6, 4, 3, 3, seed=1), rand(6, seed=2)))
    torch.toony.synchronize()
    assert realize_count(lambda: F.conv2d(x, w, b, padding=1)) == 1
    go = rand(2, 6, 9, 8, seed=3).to(DEV)
    args = ([6], [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    assert realize_count(lambda: A.convolution_backward(go, x, w, *args, [True, False, False])[0]) == 1
    assert realize_count(lambda: A.convolution_backward(go, x, w, *args, [False, True, False])[1]) == 2
    assert realize_count(lambda: F.max_pool2d(x, 2)) == 1
    assert realize_count(lambda: F.avg_pool2d(x, 3, 2, 1)) == 1


# ---------------------------------------------------------------- max pooling

MAX_POOL = {
    "k2": (2, None, 0, 1, False),
    "k3_s2_p1": (3, 2, 1, 1, False),
    "k3_s2_ceil": (3, 2, 0, 1, True),
    "k3_s2_p1_dil2_ceil": (3, 2, 1, 2, True),
    "asym": ((3, 2), (1, 2), (1, 0), (1, 2), False),
}


@pytest.mark.parametrize("case", list(MAX_POOL))
def test_max_pool2d(case: str) -> None:
    k, s, p, d, ceil = MAX_POOL[case]
    fn = lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)  # noqa: E731
    x = rand(2, 3, 9, 8)
    close(fn(x.to(DEV)), fn(x))
    with_grads(fn, x)


def test_max_pool_1d_3d_unbatched() -> None:
    with_grads(lambda x: F.max_pool1d(x, 3, 2, 1, ceil_mode=True, return_indices=True), rand(2, 3, 10))
    with_grads(lambda x: F.max_pool3d(x, (1, 3, 2), 2, (0, 1, 1), ceil_mode=True, return_indices=True),
               rand(1, 2, 3, 7, 6))
    with_grads(lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True), rand(3, 7, 7))
    x = rand(2, 3, 9, 8)
    fn = lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)  # noqa: E731
    close(fn(x.to(DEV).to(memory_format=torch.channels_last)), fn(x))
    close(fn(x.to(DEV)[..., 1:, ::2]), fn(x[..., 1:, ::2]))


def test_max_pool_ties_nan_inf() -> None:
    """torch keeps the first maximum of a window, a nan wins (the last one), and an all -inf window points at
    its first in-bounds element."""
    fn = lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)  # noqa: E731
    ties = torch.randint(0, 3, (2, 2, 8, 8)).float()
    close(fn(ties.to(DEV)), fn(ties))
    nans = torch.where(torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.2, float("nan"),
                       rand(2, 2, 8, 8))
    close(fn(nans.to(DEV)), fn(nans))
    ninf = torch.full((1, 1, 5, 5), float("-inf"))
    close(fn(ninf.to(DEV)), fn(ninf))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                                   torch.uint8])
def test_max_pool_dtypes(dtype: torch.dtype) -> None:
    fn = lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)  # noqa: E731
    x = (rand(2, 3, 7, 6) * 20).to(dtype) if dtype.is_floating_point else torch.randint(0, 50, (2, 3, 7, 6)).to(dtype)
    close(fn(x.to(DEV)), fn(x), dtype)
    if dtype.is_floating_point:
        with_grads(fn, x, dtype=dtype)


# ---------------------------------------------------------------- average pooling

AVG_POOL = {
    "k2": dict(kernel_size=2),
    "k3_s2_p1": dict(kernel_size=3, stride=2, padding=1),
    "ceil_exclude_pad": dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    "ceil_include_pad": dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True),
    "divisor_override": dict(kernel_size=3, stride=1, padding=1, divisor_override=4),
}


@pytest.mark.parametrize("case", list(AVG_POOL))
def test_avg_pool2d(case: str) -> None:
    with_grads(lambda x: F.avg_pool2d(x, **AVG_POOL[case]), rand(2, 3, 9, 8))


def test_avg_pool_1d_3d_unbatched_noncontiguous() -> None:
    with_grads(lambda x: F.avg_pool1d(x, 3, 2, 1, ceil_mode=True), rand(2, 3, 10))
    with_grads(lambda x: F.avg_pool3d(x, (1, 3, 2), 2, (0, 1, 1), ceil_mode=True, count_include_pad=False),
               rand(1, 2, 3, 7, 6))
    with_grads(lambda x: F.avg_pool2d(x, 3, 2, 1), rand(3, 7, 7))
    x = rand(2, 3, 9, 8)
    with_grads(lambda x: F.avg_pool2d(x[..., 1:, ::2], 2), x)
    with_grads(lambda x: F.avg_pool2d(x, 3, 2, 1), x.to(memory_format=torch.channels_last))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64])
def test_avg_pool_dtypes(dtype: torch.dtype) -> None:
    fn = lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)  # noqa: E731
    if dtype.is_floating_point:
        with_grads(fn, rand(2, 3, 7, 6, dtype=dtype), dtype=dtype)
    else:  # integer averages truncate, as torch's do
        x = torch.randint(-50, 50, (2, 3, 7, 6), dtype=dtype)
        close(fn(x.to(DEV)), fn(x))


# ---------------------------------------------------------------- adaptive pooling

@pytest.mark.parametrize("out", [(3, 4), (5, 3), (1, 1), (7, 7)], ids=["divides", "uneven", "global", "upscale"])
def test_adaptive_avg_pool2d(out: tuple[int, int]) -> None:
    with_grads(lambda x: F.adaptive_avg_pool2d(x, out), rand(2, 3, 9, 8))


def test_adaptive_pool_1d_3d_max() -> None:
    with_grads(lambda x: F.adaptive_avg_pool1d(x, 4), rand(2, 3, 10))
    with_grads(lambda x: F.adaptive_avg_pool3d(x, (2, 3, 4)), rand(1, 2, 3, 7, 6))
    with_grads(lambda x: F.adaptive_avg_pool2d(x, (4, 3)), rand(2, 3, 9, 8).to(memory_format=torch.channels_last))
    with_grads(lambda x: F.adaptive_avg_pool2d(x, (5, 3)), rand(2, 9, 8, dtype=torch.float16), dtype=torch.float16)
    for out in [(3, 4), (5, 3)]:
        fn = lambda x, out=out: F.adaptive_max_pool2d(x, out, return_indices=True)  # noqa: E731
        x = rand(2, 3, 9, 8)
        close(fn(x.to(DEV)), fn(x))
        with_grads(fn, x)
    with_grads(lambda x: F.adaptive_max_pool3d(x, (2, 3, 4), return_indices=True), rand(1, 2, 3, 7, 6))


# ---------------------------------------------------------------- max unpooling

def test_max_unpool() -> None:
    def unpool2d(x: torch.Tensor) -> torch.Tensor:
        return F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2, output_size=(9, 8))

    with_grads(unpool2d, rand(2, 3, 9, 8))
    with_grads(lambda x: F.max_unpool1d(*F.max_pool1d(x, 3, return_indices=True), 3), rand(2, 3, 10))
    with_grads(lambda x: F.max_unpool3d(*F.max_pool3d(x, 2, return_indices=True), 2), rand(1, 2, 4, 6, 4))


# ---------------------------------------------------------------- upsampling

UPSAMPLE = {
    "nearest_x2": dict(scale_factor=2, mode="nearest"),
    "nearest_size": dict(size=(13, 5), mode="nearest"),
    "nearest_scale": dict(scale_factor=(1.7, 0.6), mode="nearest"),
    "nearest_exact": dict(size=(13, 5), mode="nearest-exact"),
    "bilinear_x2": dict(scale_factor=2, mode="bilinear"),
    "bilinear_size": dict(size=(13, 5), mode="bilinear"),
    "bilinear_align": dict(size=(13, 5), mode="bilinear", align_corners=True),
    "bilinear_scale": dict(scale_factor=(1.7, 0.6), mode="bilinear"),
    "bilinear_large": dict(size=(70, 61), mode="bilinear"),  # torch's other bilinear kernel (h + w > 128)
    "bicubic_size": dict(size=(13, 5), mode="bicubic"),
    "bicubic_align": dict(scale_factor=1.7, mode="bicubic", align_corners=True),
}


@pytest.mark.parametrize("case", list(UPSAMPLE))
def test_upsample2d(case: str) -> None:
    with_grads(lambda x: F.interpolate(x, **UPSAMPLE[case]), rand(2, 3, 6, 7))


def test_upsample_1d_3d_dtypes() -> None:
    with_grads(lambda x: F.interpolate(x, size=13, mode="linear"), rand(2, 3, 6))
    with_grads(lambda x: F.interpolate(x, size=13, mode="nearest"), rand(2, 3, 6))
    with_grads(lambda x: F.interpolate(x, size=(3, 6, 9), mode="trilinear"), rand(1, 2, 2, 4, 5))
    with_grads(lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), rand(1, 2, 2, 4, 5))
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        with_grads(lambda x: F.interpolate(x, size=(9, 13), mode="bilinear"), rand(2, 3, 6, 7, dtype=dt), dtype=dt)
        with_grads(lambda x: F.interpolate(x, size=(9, 13), mode="bicubic"), rand(2, 3, 6, 7, dtype=dt), dtype=dt)
        with_grads(lambda x: F.interpolate(x, size=13, mode="linear"), rand(2, 3, 6, dtype=dt), dtype=dt)
    x = torch.randint(0, 256, (2, 3, 6, 7), dtype=torch.uint8)
    close(F.interpolate(x.to(DEV), size=(9, 13)), F.interpolate(x, size=(9, 13)))
    # torch's uint8 bilinear kernel uses fixed-point weights; toony rounds the float result: within one step
    close(F.interpolate(x.to(DEV), size=(9, 13), mode="bilinear"), F.interpolate(x, size=(9, 13), mode="bilinear"),
          rtol=0, atol=1)


# ---------------------------------------------------------------- a small CNN

class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv1(x))), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(F.adaptive_avg_pool2d(x, 2).flatten(1))


def test_small_cnn_forward_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    """conv-bn-relu-pool-linear, forward and backward on the device vs the CPU. Other ops may fall back to the
    CPU here; convolution and pooling must not."""
    monkeypatch.setenv("TOONY_FALLBACK", "1")
    torch.manual_seed(0)
    cpu = SmallCNN()
    dev = SmallCNN().to(DEV)
    dev.load_state_dict(cpu.state_dict())
    x, y = rand(4, 3, 16, 16), torch.tensor([0, 3, 1, 4])
    torch_toony.reset_metrics()
    losses = []
    for model, device in ((cpu, "cpu"), (dev, DEV)):
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        loss.backward()
        losses.append(loss)
    close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(cpu.named_parameters(), dev.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    fallbacks = torch_toony.metrics()["fallbacks"]
    assert not [op for op in fallbacks if "conv" in op or "pool" in op], fallbacks
