"""linspace on toony against the CPU, bit for bit: 16-bit floats (rounded per operation), integers (ends
converted first, double step), float32/float64 (fused multiply-add), long ranges, errors."""

import pytest
import torch

import torch_toony  # noqa: F401

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.uint8, torch.int16,
          torch.int32, torch.int64]
CASES = [(-2.0, 3.7, 50), (0, 1, 1000), (3, -100.5, 257), (1e3, -7, 5), (-1, 1, 70001), (0, 255, 129),
         (4.3, 0, 50), (-3.3, 2.9, 2), (5, 5, 9), (2.5, 7, 1), (1, 2, 0)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("start,end,steps", CASES)
def test_linspace_matches_cpu(dtype: torch.dtype, start: float, end: float, steps: int) -> None:
    try:
        expected = torch.linspace(start, end, steps, dtype=dtype)
    except RuntimeError as err:  # an end the dtype cannot hold: toony must refuse it the same way
        with pytest.raises(RuntimeError, match=str(err)):
            torch.linspace(start, end, steps, dtype=dtype, device="toony")
        return
    got = torch.linspace(start, end, steps, dtype=dtype, device="toony").cpu()
    assert torch.equal(got, expected)


def test_linspace_out_noncontiguous_and_tensor_ends() -> None:
    out = torch.zeros(20, dtype=torch.float16, device="toony")[::2]
    torch.linspace(-1.3, 8.1, 10, out=out)
    assert torch.equal(out.cpu(), torch.linspace(-1.3, 8.1, 10, dtype=torch.float16))
    s, e = torch.tensor(-2.0), torch.tensor(3.0)
    got = torch.linspace(s.to("toony"), e.to("toony"), 33, dtype=torch.bfloat16, device="toony")
    assert torch.equal(got.cpu(), torch.linspace(s, e, 33, dtype=torch.bfloat16))


def test_linspace_negative_steps_raises() -> None:
    with pytest.raises(RuntimeError, match="non-negative"):
        torch.linspace(0, 1, -1, device="toony")
