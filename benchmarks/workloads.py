"""The benchmark workloads: what each computes, at full and at --quick sizes.

A workload builds a `Case`: float32 CPU inputs, an optional model, and the function every backend runs. The
runner moves model and inputs to each backend's device and dtype (float64 on the CPU for the reference), so a
workload never says where it runs. A training case's function returns a scalar loss; a call of it runs
forward and backward and returns the loss and every parameter's gradient (no optimizer step: the optimizer
would run eagerly outside the compiled graph for every backend and measure nothing about the compilers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn


@dataclass
class Case:
    what: str  # one line: the computation and its sizes
    inputs: tuple[torch.Tensor, ...]  # float32 (or integer) CPU tensors
    forward: Callable[..., Any]  # forward(model, *inputs) when model is set, else forward(*inputs)
    model: nn.Module | None = None
    train: bool = False  # forward returns a scalar loss; a call also runs backward and returns the gradients
    flops: float = 0.0  # useful floating-point operations per call (0: not a compute-bound workload)
    min_bytes: float = 0.0  # bytes any implementation must read and write per call (0: not memory-bound)


@dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[[bool], Case]  # build(quick)
    memory_bound: bool = False  # a memory-bound workload: toony's target is inductor's speed


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float32)


# ---------------------------------------------------------------- memory-bound


def _chain(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * y + 1.0) * torch.sigmoid(x) - 0.5 * y


def elementwise(quick: bool) -> Case:
    n = 1 << (16 if quick else 24)
    return Case(f"relu(x*y+1)*sigmoid(x)-0.5*y, x,y: {n} floats", (_randn(n), _randn(n)), _chain,
                min_bytes=3 * 4 * n)


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def softmax(quick: bool) -> Case:
    n = 256 if quick else 4096
    return Case(f"softmax(x, -1), x: {n}x{n}", (_randn(n, n),), _softmax, min_bytes=2 * 4 * n * n)


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


def layernorm(quick: bool) -> Case:
    n = 256 if quick else 4096
    return Case(f"layer_norm(x) with weight and bias, x: {n}x{n}", (_randn(n, n), _randn(n), _randn(n)),
                _layer_norm, min_bytes=2 * 4 * n * n)


def _sum_all(x: torch.Tensor) -> torch.Tensor:
    return x.sum()


def sum_all(quick: bool) -> Case:
    n = 1 << (20 if quick else 26)
    return Case(f"x.sum(), x: {n} floats", (_randn(n),), _sum_all, min_bytes=4 * n)


def _sum_cols(x: torch.Tensor) -> torch.Tensor:
    return x.sum(dim=0)


def sum_cols(quick: bool) -> Case:
    n = 256 if quick else 4096
    return Case(f"x.sum(0) (across rows), x: {n}x{n}", (_randn(n, n),), _sum_cols, min_bytes=4 * n * n)


def _amax_rows(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=-1)


def amax_rows(quick: bool) -> Case:
    n = 256 if quick else 4096
    return Case(f"x.amax(-1), x: {n}x{n}", (_randn(n, n),), _amax_rows, min_bytes=4 * n * n)


def _tiny(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) + torch.cos(y)


def tiny(quick: bool) -> Case:
    return Case("sin(x)+cos(y), x,y: 10x10 (per-call overhead)", (_randn(10, 10), _randn(10, 10)), _tiny)


# ---------------------------------------------------------------- compute-bound


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def matmul(quick: bool) -> Case:
    n = 128 if quick else 1024
    return Case(f"a @ b, {n}x{n}x{n}", (_randn(n, n), _randn(n, n)), _mm, flops=2.0 * n ** 3)


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _mlp_sizes(quick: bool) -> tuple[int, int, int]:
    return (32, 64, 256) if quick else (256, 512, 2048)


def _apply(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _mse_loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(model(x), target)


def mlp_forward(quick: bool) -> Case:
    batch, d, hidden = _mlp_sizes(quick)
    torch.manual_seed(0)
    return Case(f"Linear({d},{hidden})-GELU-Linear({hidden},{d}), batch {batch}", (_randn(batch, d),), _apply,
                MLP(d, hidden), flops=2.0 * 2 * batch * d * hidden)


def mlp_train(quick: bool) -> Case:
    batch, d, hidden = _mlp_sizes(quick)
    torch.manual_seed(0)
    return Case(f"MLP forward + MSE loss + backward, batch {batch}, {d}-{hidden}-{d}",
                (_randn(batch, d), _randn(batch, d)), _mse_loss, MLP(d, hidden), train=True,
                flops=3 * 2.0 * 2 * batch * d * hidden)


class Block(nn.Module):
    """A pre-norm GPT block: causal multi-head attention and a GELU MLP, each with a residual."""

    def __init__(self, d: int, heads: int, ff: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ff)
        self.fc2 = nn.Linear(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def _block_sizes(quick: bool) -> tuple[int, int, int, int, int]:
    return (2, 16, 32, 2, 64) if quick else (4, 256, 256, 4, 1024)  # batch, seq, d, heads, ff


def _block_flops(b: int, t: int, d: int, ff: int) -> float:
    linear = 2.0 * b * t * (d * 3 * d + d * d + 2 * d * ff)
    attention = 2.0 * 2 * b * t * t * d  # scores and weighted sum, the full square (causal skips half at best)
    return linear + attention


def block_forward(quick: bool) -> Case:
    b, t, d, h, ff = _block_sizes(quick)
    torch.manual_seed(0)
    return Case(f"transformer block (LN, causal SDPA, {h} heads, GELU MLP {ff}), x: {b}x{t}x{d}",
                (_randn(b, t, d),), _apply, Block(d, h, ff), flops=_block_flops(b, t, d, ff))


def block_train(quick: bool) -> Case:
    b, t, d, h, ff = _block_sizes(quick)
    torch.manual_seed(0)
    return Case(f"transformer block forward + MSE loss + backward, x: {b}x{t}x{d}",
                (_randn(b, t, d), _randn(b, t, d)), _mse_loss, Block(d, h, ff), train=True,
                flops=3 * _block_flops(b, t, d, ff))


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)


def conv_block(quick: bool) -> Case:
    n, cin, cout, hw = (2, 4, 8, 16) if quick else (8, 16, 32, 64)
    torch.manual_seed(0)
    return Case(f"Conv2d({cin},{cout},3,pad 1)-BatchNorm2d (train mode)-ReLU-MaxPool2d(2), x: {n}x{cin}x{hw}x{hw}",
                (_randn(n, cin, hw, hw),), _apply, ConvBlock(cin, cout), flops=2.0 * n * cout * hw * hw * cin * 9)


WORKLOADS: list[Workload] = [
    Workload("elementwise", elementwise, memory_bound=True),
    Workload("softmax", softmax, memory_bound=True),
    Workload("layernorm", layernorm, memory_bound=True),
    Workload("sum_all", sum_all, memory_bound=True),
    Workload("sum_cols", sum_cols, memory_bound=True),
    Workload("amax_rows", amax_rows, memory_bound=True),
    Workload("matmul", matmul),
    Workload("mlp_fwd", mlp_forward),
    Workload("mlp_train", mlp_train),
    Workload("block_fwd", block_forward),
    Workload("block_train", block_train),
    Workload("conv_block", conv_block),
    Workload("tiny", tiny),
]


def by_name(names: list[str]) -> list[Workload]:
    """The workloads named, in suite order; an unknown name is an error listing the known ones."""
    known = {w.name: w for w in WORKLOADS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(known)}")
    return [w for w in WORKLOADS if w.name in names]
