"""Fixtures shared by the torch_toony tests."""

from collections.abc import Iterator

import pytest


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CPU fallback off: an op without a toony kernel raises instead of running on the CPU."""
    monkeypatch.setenv("TOONY_FALLBACK", "0")
    yield
