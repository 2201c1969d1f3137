"""`python -m benchmarks`: the workload suite on eager CPU, inductor, toony compile and toony eager, side by side.

Writes <out>/benchmarks.md and <out>/benchmarks.png (default out: docs/). --quick runs smoke-test sizes.
Compile caches are fresh temporary directories unless --warm-caches, so first-call times are cold compiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and short timings (a smoke run)")
    p.add_argument("--only", default="", help="comma-separated workload names (default: all)")
    p.add_argument("--backends", default="eager,inductor,toony,toony-eager", help="comma-separated backends")
    p.add_argument("--out", type=Path, default=DOCS, help="directory for benchmarks.md and benchmarks.png")
    p.add_argument("--warm-caches", action="store_true",
                   help="keep inductor's and toony's on-disk compile caches (first calls are then not cold compiles)")
    p.add_argument("--no-limits", action="store_true", help="skip measuring the machine's limits")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed calls per workload and backend (default 2, quick 0.3)")
    p.add_argument("--save", type=Path, default=None, help="also pickle the results here (for --report-from)")
    p.add_argument("--report-from", type=Path, default=None,
                   help="measure nothing: rewrite the report from results pickled by --save")
    p.add_argument("--limit", type=int, default=None,
                   help="seconds after which one workload on one backend is reported as a Timeout (default 300)")
    return p.parse_args(argv)


def _write(suite: object, out: Path, start: float) -> None:
    from . import report

    assert isinstance(suite, report.Suite)
    out.mkdir(parents=True, exist_ok=True)
    plotted = report.write_plot(suite, out / "benchmarks.png")
    if not plotted:
        print("matplotlib is missing: no plot (pip install -e '.[bench]')", flush=True)
    if start:
        suite.wall_s = time.perf_counter() - start
    report.write_markdown(suite, out / "benchmarks.md", "benchmarks.png" if plotted else None)
    print(f"wrote {out / 'benchmarks.md'}" + (f" and {out / 'benchmarks.png'}" if plotted else "")
          + f" (run took {suite.wall_s / 60:.1f} min)", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.report_from is not None:
        with open(args.report_from, "rb") as f:
            _write(pickle.load(f), args.out, 0.0)
        return 0
    start = time.perf_counter()
    cache_root = None
    if not args.warm_caches:  # before anything compiles: both caches read these variables when they compile
        cache_root = tempfile.mkdtemp(prefix="toony-bench-caches-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_root, "inductor")
        os.environ["TOONY_CACHE_DIR"] = os.path.join(cache_root, "toony")

    import torch

    from . import limits as limits_mod
    from . import machine, report, runner, toony_kernels
    from .workloads import WORKLOADS, by_name

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in runner.BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend(s) {unknown}; known: {', '.join(runner.BACKENDS)}")
    if "eager" not in backends:
        backends.insert(0, "eager")  # every speedup is relative to it
    backends = [b for b in runner.BACKENDS if b in backends]
    workloads = by_name(args.only.split(",")) if args.only else list(WORKLOADS)
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 2.0)
    limit = args.limit if args.limit is not None else (120 if args.quick else 300)

    warnings.filterwarnings("ignore", message="toony: .* runs on the CPU")  # counted per call in the table
    toony_kernels.install()
    info = machine.describe()
    print(f"{info.cpu}, {info.cores} cores; OpenCL: {info.opencl}; torch {info.torch_version}; "
          f"load {info.load_before[0]:.1f}", flush=True)
    lim = None
    if not args.no_limits:
        lim = limits_mod.measure(args.quick)
        print(f"limits: torch copy {lim.torch_copy_gbs:.2f} GB/s, toony copy kernel {lim.toony_copy_gbs:.2f} GB/s, "
              f"enqueue_copy {lim.cl_copy_gbs:.2f} GB/s, torch.mm {lim.torch_mm_gflops:.1f} GFLOP/s", flush=True)

    cases, results = {}, {}
    # compiled backends first: eager toony would otherwise compile, in this process, kernels toony compile reuses
    order = [b for b in ("inductor", "toony", "eager", "toony-eager") if b in backends]
    for w in workloads:
        torch.manual_seed(0)
        case = cases[w.name] = w.build(args.quick)
        ref = runner.reference(case)
        for b in order:
            r = results[(w.name, b)] = runner.run(case, w.name, b, ref, budget, limit)
            what = f"{r.median_s * 1e3:9.3f} ms x{r.reps:<3}" if r.ok else f"FAILED {r.error}"
            what += f"  first call {r.first_call_s:.2f} s" if r.first_call_s is not None else ""
            kern = f", {r.kernels} kernels" if r.kernels is not None else ""
            print(f"{w.name:<12} {runner.BACKEND_LABELS[b]:<14} {what}{kern}", flush=True)
        del ref
        # the report needs only the description and the work counts: drop inputs and model (memory, pickling)
        cases[w.name] = dataclasses.replace(case, inputs=(), model=None)
        del case

    info.load_after = os.getloadavg()
    command = "python -m benchmarks" + ("" if argv is None and len(sys.argv) <= 1 else
                                        " " + " ".join(argv if argv is not None else sys.argv[1:]))
    suite = report.Suite(workloads, cases, results, backends, lim, info, command, args.quick,
                         cache_root is not None, time.perf_counter() - start)
    _write(suite, args.out, start)
    if args.save is not None:
        with open(args.save, "wb") as f:
            pickle.dump(suite, f)
    if cache_root is not None:
        shutil.rmtree(cache_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
