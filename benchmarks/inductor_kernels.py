"""Kernels per call of inductor-compiled code, read from the wrapper code inductor generated.

`torch._inductor.metrics.generated_kernel_count` counts kernels generated during compilation (it also counts
kernels of fusion candidates that are never called), and extern calls (mm, conv through ATen or oneDNN) are
not in it. So we count what each generated module's `call` function launches: generated kernels (their
names are bound at module level to `async_compile.cpp*(...)`), and extern / ATen calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torch._inductor.codecache import PyCodeCache

_KERNEL_DEF = re.compile(r"^(\w+) = async_compile\.\w+\(", re.M)
_EXTERN = re.compile(r"^\s+(?:[\w, ]+ = )?(extern_kernels\.\w+|torch\.ops\.\w+\.\w+(?:\.\w+)?|aten\.\w+(?:\.\w+)?)\(")


@dataclass
class InductorKernels:
    generated: int = 0
    extern: int = 0

    @property
    def total(self) -> int:
        return self.generated + self.extern


def loaded_modules() -> set[int]:
    """Ids of the generated modules loaded so far (take before compiling, pass to `count_since`)."""
    return {id(m) for m in PyCodeCache.modules}


def count_since(before: set[int]) -> InductorKernels:
    counts = InductorKernels()
    for mod in PyCodeCache.modules:
        if id(mod) in before or not getattr(mod, "__file__", None):
            continue
        source = Path(mod.__file__).read_text()
        start = source.find("def call(")
        if start < 0:
            continue
        body = source[start:]
        first_nl = body.find("\n") + 1
        end = re.search(r"^\S", body[first_nl:], re.M)  # the first line back at module level ends call()
        body = body if end is None else body[:first_nl + end.start()]
        names = set(_KERNEL_DEF.findall(source))
        for line in body.splitlines():
            call = re.match(r"^\s+(\w+)\(", line)
            if call and call[1] in names:
                counts.generated += 1
            elif _EXTERN.match(line):
                counts.extern += 1
    return counts
