"""Eager dispatch cost on the toony device: microseconds per ATen op on small tensors, next to CPU eager.

Run: python -m benchmarks.eager_dispatch
"dispatch" is the op alone (toony records a lazy value, no kernel runs); "+realize" also runs the fused
kernel and reads one element back, so it includes a launch and a device-to-host copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

import torch_toony  # noqa: F401 - registers the device (import torch alone also does, through autoload)


def per_call_us(fn: Callable[[], object], n: int = 2000) -> float:
    for _ in range(min(n, 100)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def measure(name: str, fn: Callable[[torch.Tensor, torch.Tensor], object], shape: tuple[int, int]) \
        -> tuple[float, float, float]:
    """(CPU eager, toony dispatch only, toony including realize and a one-element read back), in us."""
    cpu = [torch.randn(shape), torch.randn(shape)]
    dev = [t.to("toony") for t in cpu]
    t_cpu = per_call_us(lambda: fn(*cpu))
    t_lazy = per_call_us(lambda: fn(*dev))
    torch.toony.synchronize()

    def realized() -> object:
        out = fn(*dev)
        return (out if name != "add_ (in place)" else dev[0]).reshape(-1)[0].item()

    return t_cpu, t_lazy, per_call_us(realized, n=200)


def main() -> None:
    shape = (32, 32)
    cases: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        "add": lambda a, b: a + b,
        "mul scalar": lambda a, b: a * 2.0,
        "relu": lambda a, b: a.relu(),
        "exp": lambda a, b: a.exp(),
        "sum(dim)": lambda a, b: a.sum(1),
        "mm": lambda a, b: a @ b,
        "add_ (in place)": lambda a, b: a.add_(b),
        "view + add": lambda a, b: a.t() + b,
    }
    rows = [(name, *measure(name, fn, shape)) for name, fn in cases.items()]
    print(f"eager dispatch on {torch.toony.get_device_name() if hasattr(torch.toony, 'get_device_name') else 'toony'}"
          f", tensors {shape} float32, microseconds per op")
    print("| op | CPU eager | toony dispatch | toony +realize |\n|---|---|---|---|")
    for name, c, lz, r in rows:
        print(f"| {name} | {c:.1f} | {lz:.1f} | {r:.1f} |")


if __name__ == "__main__":
    main()
