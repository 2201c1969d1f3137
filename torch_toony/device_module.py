"""`torch.toony`: the device module PyTorch looks up by the backend's name.

torch.manual_seed, torch.random.fork_rng, autocast, the accelerator API and
the device-generic test utilities call into it. There is one toony device.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from . import storage

_ext: ModuleType | None = None
default_generators: tuple[torch.Generator, ...] = ()


def bind(ext: ModuleType) -> None:
    global _ext, default_generators
    _ext = ext
    default_generators = (ext.default_generator(0),)


def _check_device(device: torch.device | str | int | None) -> None:
    if device is None:
        return
    if isinstance(device, int):
        index = device
    else:
        d = torch.device(device)
        if d.type != "toony":
            raise ValueError(f"expected a toony device, got {d}")
        index = 0 if d.index is None else d.index
    if index not in (0, -1):
        raise ValueError(f"toony: invalid device index {index}; there is one toony device (index 0)")


@functools.cache
def _runtime_device():
    from toony_core.runtime import device

    return device()


def is_available() -> bool:
    """True when an OpenCL device can be opened."""
    try:
        _runtime_device()
    except Exception:
        return False
    return True


def is_initialized() -> bool:
    return _ext is not None


def _lazy_init() -> None:
    pass


def _is_in_bad_fork() -> bool:
    # torch.manual_seed seeds a custom device only if its module has this. No OpenCL state is created
    # at import, so a forked child can use the device (it opens its own context on first use).
    return False


def device_count() -> int:
    return 1 if is_available() else 0


def current_device() -> int:
    return 0


def set_device(device: torch.device | str | int) -> None:
    _check_device(device)


def _get_device_index(device: torch.device | str | int | None, optional: bool = False) -> int:
    _check_device(device)
    return 0


class device:
    """Context manager selecting a toony device; there is one, so it only validates the argument."""

    def __init__(self, device: torch.device | str | int | None) -> None:
        _check_device(device)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def current_stream(device: torch.device | str | int | None = None) -> torch.Stream:
    """The device's only stream: one in-order queue."""
    _check_device(device)
    return torch.Stream(device=torch.device("toony", 0))


def default_stream(device: torch.device | str | int | None = None) -> torch.Stream:
    return current_stream(device)


class stream:
    """Context manager for a stream; every toony stream is the one queue, so there is nothing to switch."""

    def __init__(self, stream: torch.Stream | None) -> None:
        pass

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def get_device_name(device: torch.device | str | int | None = None) -> str:
    _check_device(device)
    return _runtime_device().name


def synchronize(device: torch.device | str | int | None = None) -> None:
    """Wait for all queued device work (and run pending lazy values' kernels)."""
    _check_device(device)
    storage.drain_freed()
    storage.realize_all()
    from toony_core.runtime import synchronize as runtime_synchronize

    runtime_synchronize()


# --- random numbers ------------------------------------------------------------


def manual_seed(seed: int) -> None:
    default_generators[0].manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    manual_seed(seed)


def seed() -> None:
    default_generators[0].seed()


def seed_all() -> None:
    seed()


def initial_seed() -> int:
    return default_generators[0].initial_seed()


def get_rng_state(device: torch.device | str | int = "toony") -> torch.Tensor:
    _check_device(device)
    return default_generators[0].get_state()


def get_rng_state_all() -> list[torch.Tensor]:
    return [get_rng_state()]


def set_rng_state(new_state: torch.Tensor, device: torch.device | str | int = "toony") -> None:
    _check_device(device)
    default_generators[0].set_state(new_state)


def set_rng_state_all(new_states: list[torch.Tensor]) -> None:
    set_rng_state(new_states[0])


# --- memory --------------------------------------------------------------------


def memory_allocated(device: torch.device | str | int | None = None) -> int:
    """Bytes of toony storages PyTorch holds right now."""
    _check_device(device)
    assert _ext is not None
    return _ext.memory_allocated()


def max_memory_allocated(device: torch.device | str | int | None = None) -> int:
    _check_device(device)
    assert _ext is not None
    return _ext.max_memory_allocated()


def reset_peak_memory_stats(device: torch.device | str | int | None = None) -> None:
    _check_device(device)
    assert _ext is not None
    _ext.reset_peak_memory_stats()


def memory_reserved(device: torch.device | str | int | None = None) -> int:
    return memory_allocated(device)


def max_memory_reserved(device: torch.device | str | int | None = None) -> int:
    return max_memory_allocated(device)


def memory_stats(device: torch.device | str | int | None = None) -> dict[str, int]:
    cur, peak = memory_allocated(device), max_memory_allocated(device)
    return {
        "allocated_bytes.all.current": cur,
        "allocated_bytes.all.peak": peak,
        "reserved_bytes.all.current": cur,
        "reserved_bytes.all.peak": peak,
    }


def empty_cache() -> None:
    """Release the buffers of freed storages now."""
    storage.drain_freed()


# --- autocast --------------------------------------------------------------------


def get_amp_supported_dtype() -> list[torch.dtype]:
    return [torch.float16, torch.bfloat16]


def is_bf16_supported(including_emulation: bool = True) -> bool:
    return True
