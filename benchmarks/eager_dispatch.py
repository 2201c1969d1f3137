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
    rows = []
    for name, fn in cases.items():
        cpu = [torch.randn(shape), torch.randn(shape)]
        dev = [t.to("toony") for t in cpu]
        t_cpu = per_call_us(lambda: fn(*cpu))
        t_lazy = per_call_us(lambda: fn(*dev))
        torch.toony.synchronize()
        t_real = per_call_us(lambda: fn(*dev).reshape(-1)[0].item() if name != "add_ (in place)"
                             else (fn(*dev), dev[0][0, 0].item()), n=200)
        rows.append((name, t_cpu, t_lazy, t_real))
    print(f"eager dispatch on {torch.toony.get_device_name() if hasattr(torch.toony, 'get_device_name') else 'toony'}"
          f", tensors {shape} float32, microseconds per op")
    print(f"| op | CPU eager | toony dispatch | toony +realize |\n|---|---|---|---|")
    for name, c, lz, r in rows:
        print(f"| {name} | {c:.1f} | {lz:.1f} | {r:.1f} |")


if __name__ == "__main__":
    main()
