"""The main demo: a small transformer-style model compiled with backend="toony", run on the toony device,
checked against CPU, with its speed next to eager CPU.

Run: python -m torch_toony.demo
"""

from __future__ import annotations

import time

import torch
from torch import nn

import torch_toony


class Block(nn.Module):
    """LayerNorm -> causal self-attention -> LayerNorm -> GELU MLP, with residuals."""

    def __init__(self, dim: int = 64, heads: int = 4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


def timed(fn, x: torch.Tensor, runs: int = 20) -> float:  # noqa: ANN001
    fn(x)
    torch.toony.synchronize()
    start = time.perf_counter()
    for _ in range(runs):
        out = fn(x)
    out.cpu()
    return (time.perf_counter() - start) / runs * 1e3


def main() -> None:
    torch.manual_seed(0)
    model = Block().eval()
    x = torch.randn(8, 32, 64)
    with torch.no_grad():
        ref = model(x)
        dev_model = Block().eval()
        dev_model.load_state_dict(model.state_dict())
        dev_model = dev_model.to("toony")
        compiled = torch.compile(dev_model, backend="toony")
        xd = x.to("toony")
        torch_toony.reset_metrics()
        start = time.perf_counter()
        out = compiled(xd)
        compile_s = time.perf_counter() - start
        err = (out.cpu() - ref).abs().max().item()
        print(f"device: {torch.toony.get_device_name() if hasattr(torch.toony, 'get_device_name') else 'toony'}")
        print(f"compiled a transformer block with backend='toony' in {compile_s:.1f} s")
        print(f"max abs error vs CPU: {err:.2e}")
        if err > 1e-4:
            raise SystemExit("toony disagrees with CPU")
        before = torch_toony.metrics()["kernels"]
        compiled(xd).cpu()
        kernels = torch_toony.metrics()["kernels"] - before
        t_toony = timed(compiled, xd)
        t_cpu = timed(model, x)
    print(f"toony compiled: {t_toony:.2f} ms per forward ({kernels} kernels per call); eager CPU: {t_cpu:.2f} ms")


if __name__ == "__main__":
    main()
