"""Installs toony_core and torch_toony.

No C++ is compiled here and torch is not needed to build: torch_toony compiles
its small C++ extension on first import, against the torch that is installed,
and caches it (see torch_toony/_build.py). `pip install -e .` therefore never
pulls another torch. For a non-editable install, csrc/ is copied into the
package so the first import can find it.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithCsrc(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # the package finds ../csrc itself
        target = Path(self.build_lib) / "torch_toony" / "_csrc"
        target.mkdir(parents=True, exist_ok=True)
        for src in (HERE / "csrc").iterdir():
            if src.suffix in (".h", ".cpp"):
                shutil.copy2(src, target / src.name)


setup(
    name="toony",
    version="0.1.0",
    description="A PyTorch device and torch.compile backend on a small OpenCL compiler",
    python_requires=">=3.11",
    packages=find_packages(include=["toony_core", "toony_core.*", "torch_toony", "torch_toony.*"]),
    # torch is pinned to the build this project is developed and tested against; never let pip pick another
    install_requires=["numpy", "pyopencl", "pocl-binary-distribution; platform_system == 'Linux'", "torch==2.13.0",
                      "safetensors"],
    extras_require={"dev": ["pytest", "expecttest", "hypothesis", "ruff"],
                    "bench": ["matplotlib"]},  # python -m benchmarks draws docs/benchmarks.png with it
    cmdclass={"build_py": BuildPyWithCsrc},
    entry_points={
        # `import torch` imports torch_toony, which registers the device.
        "torch.backends": ["toony = torch_toony:_autoload"],
        # torch.compile(model, backend="toony") with no import: dynamo finds the backend here
        "torch_dynamo_backends": ["toony = torch_toony.compile:toony_backend"],
    },
)
