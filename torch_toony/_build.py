"""Builds (once) and loads the C++ half of the toony device.

The extension is compiled with torch.utils.cpp_extension into a cache folder
keyed by a hash of the sources, the torch version and the Python version. A
later import finds the finished library there and loads it directly, without
invoking ninja or the compiler. Set TOONY_CACHE_DIR to move the cache.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import torch

# Bump when the build recipe below changes in a way the sources do not show.
_RECIPE_VERSION = "1"
_EXTRA_CFLAGS = ["-O2", "-fvisibility=hidden"]


def _source_dir() -> Path:
    """The C++ sources: `csrc/` beside the package in a checkout or editable
    install, or the copy setup.py places inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "csrc", here / "_csrc"):
        if (candidate / "toony.h").is_file():
            return candidate
    raise FileNotFoundError(
        f"toony: cannot find the C++ sources (looked in {here.parent / 'csrc'} and {here / '_csrc'})"
    )


def cache_root() -> Path:
    base = os.environ.get("TOONY_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "toony"


def _build_key(sources: list[Path]) -> str:
    h = hashlib.sha256()
    for part in (_RECIPE_VERSION, torch.__version__, sys.version, " ".join(_EXTRA_CFLAGS)):
        h.update(part.encode())
        h.update(b"\0")
    for src in sources:
        h.update(src.name.encode())
        h.update(b"\0")
        h.update(src.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _import_library(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def load_extension() -> ModuleType:
    """Returns the loaded extension module, compiling it first if no build
    for these exact sources is cached."""
    src_dir = _source_dir()
    sources = sorted(src_dir.glob("*.cpp"))
    headers = sorted(src_dir.glob("*.h"))
    key = _build_key(sources + headers)
    name = f"toony_C_{key}"
    build_dir = cache_root() / "ext" / name
    library = build_dir / f"{name}.so"
    done_marker = build_dir / "BUILD_OK"
    # The marker is written only after a complete build, so a concurrent or
    # interrupted build is never mistaken for a finished one.
    if done_marker.is_file() and library.is_file():
        return _import_library(name, library)

    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    verbose = int(os.environ.get("TOONY_DEBUG", "0") or 0) >= 1
    module = cpp_extension.load(
        name=name,
        sources=[str(s) for s in sources],
        extra_cflags=_EXTRA_CFLAGS,
        extra_include_paths=[str(src_dir)],
        build_directory=str(build_dir),
        verbose=verbose,
    )
    done_marker.write_text(f"{name}\n")
    return module
