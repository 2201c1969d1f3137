"""Writes the benchmark results: docs/benchmarks.md (tables) and docs/benchmarks.png (speedups over eager CPU)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .limits import Limits
from .machine import Machine
from .runner import BACKEND_LABELS, Result
from .workloads import Case, Workload

# hand-written, checked against the run it was written for: the reasons behind the numbers the tables show
WHY = """\
Causes, from the per-kernel table and the limits above (they hold for PoCL on this CPU; a GPU would move them):

- **The OpenCL device streams memory slower than the CPU code inductor writes.** toony's kernels are OpenCL C that
  PoCL compiles per work-item and packs into work-groups; inductor emits OpenMP C++ with explicit AVX-512
  vectorization. Memory-bound kernels are compared against the copy limits measured above, and the copy
  kernel itself is the ceiling toony can reach through this device.
- **Every toony call pays the OpenCL launch path.** Each kernel is one `clEnqueueNDRangeKernel` plus PoCL's
  scheduling of work-groups onto its pthreads, and a call ends with a queue finish; the `tiny` row is that cost.
- **Matrix products are a broadcast-multiply + sum kernel without tiling or packing**, against oneDNN/MKL
  through `extern_kernels.mm` in inductor and eager: the compute-bound rows (matmul, MLP, transformer, conv)
  are bounded by that kernel, not by fusion.
- **Reductions over a long contiguous axis (`sum_all`) and across rows (`sum_cols`)** depend on the work-group
  split the optimizer chooses; their kernels' fractions of the copy limit are in the per-kernel table.
"""


@dataclass
class Suite:
    workloads: list[Workload]
    cases: dict[str, Case]
    results: dict[tuple[str, str], Result]  # (workload, backend)
    backends: list[str]
    limits: Limits | None
    machine: Machine
    command: str
    quick: bool
    fresh_caches: bool
    wall_s: float


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e3:.3f}"
    return f"{s * 1e3:.2f}" if s < 1 else f"{s * 1e3:.0f}"


def _sec(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}"


def _err(e: float | None) -> str:
    return "-" if e is None else f"{e:.1e}"


def speedup(suite: Suite, workload: str, backend: str) -> float | None:
    base = suite.results.get((workload, "eager"))
    r = suite.results.get((workload, backend))
    if base is None or r is None or not base.ok or not r.ok or not base.median_s or not r.median_s:
        return None
    return base.median_s / r.median_s


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _cell_failed(r: Result) -> str:
    return f"**failed** ({r.error})"


def _kernels(r: Result) -> str:
    if r.kernels is None:
        return "-"
    return f"{r.kernels} ({r.kernels_note})" if r.kernels_note else str(r.kernels)


def _main_table(suite: Suite) -> list[str]:
    lines = ["| workload | backend | median ms | speedup vs eager CPU | first call s | kernels / call | "
             "max abs err vs fp64 | CPU fallbacks / call |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for w in suite.workloads:
        for b in suite.backends:
            r = suite.results.get((w.name, b))
            if r is None:
                continue
            if not r.ok:
                lines.append(f"| {w.name} | {BACKEND_LABELS[b]} | {_cell_failed(r)} | | {_sec(r.first_call_s)} | "
                             f"{_kernels(r)} | {_err(r.max_err)} | |")
                continue
            fb = str(r.fallbacks) if b.startswith("toony") else "-"
            lines.append(f"| {w.name} | {BACKEND_LABELS[b]} | {_ms(r.median_s)} | {_x(speedup(suite, w.name, b))} | "
                         f"{_sec(r.first_call_s)} | {_kernels(r)} | {_err(r.max_err)} | {fb} |")
    return lines


def _speedup_table(suite: Suite) -> list[str]:
    others = [b for b in suite.backends if b != "eager"]
    head = "| workload | " + " | ".join(BACKEND_LABELS[b] for b in others)
    lines = [head + " | toony compile / inductor |" if {"toony", "inductor"} <= set(others) else head + " |"]
    lines.append("|---|" + "---:|" * (len(lines[0].split("|")) - 3))
    for w in suite.workloads:
        cells = []
        for b in others:
            r = suite.results.get((w.name, b))
            cells.append("failed" if r is not None and not r.ok else _x(speedup(suite, w.name, b)))
        row = f"| {w.name} | " + " | ".join(cells)
        if {"toony", "inductor"} <= set(others):
            t, i = suite.results.get((w.name, "toony")), suite.results.get((w.name, "inductor"))
            ratio = i.median_s / t.median_s if t and i and t.ok and i.ok and t.median_s and i.median_s else None
            row += f" | {_x(ratio)}"
        lines.append(row + " |")
    means = [geomean([v for w in suite.workloads if (v := speedup(suite, w.name, b)) is not None]) for b in others]
    lines.append("| *geometric mean* | " + " | ".join(_x(v) for v in means) +
                 (" | |" if {"toony", "inductor"} <= set(others) else " |"))
    return lines


def _throughput_table(suite: Suite) -> list[str]:
    lim = suite.limits
    lines = ["| workload | measure | " + " | ".join(BACKEND_LABELS[b] for b in suite.backends) + " |",
             "|---|---|" + "---:|" * len(suite.backends)]
    for w in suite.workloads:
        case = suite.cases[w.name]
        if case.min_bytes:
            unit, amount = "GB/s", case.min_bytes / 1e9
        elif case.flops:
            unit, amount = "GFLOP/s", case.flops / 1e9
        else:
            continue
        cells = []
        for b in suite.backends:
            r = suite.results.get((w.name, b))
            if r is None or not r.ok or not r.median_s:
                cells.append("failed" if r is not None and not r.ok else "-")
                continue
            value = amount / r.median_s
            ref = None
            if lim is not None:
                if unit == "GB/s":
                    ref = lim.device_copy_gbs if b.startswith("toony") else lim.torch_copy_gbs
                else:
                    ref = lim.torch_mm_gflops
            cells.append(f"{value:.1f}" + (f" ({100 * value / ref:.0f}%)" if ref else ""))
        lines.append(f"| {w.name} | {unit} | " + " | ".join(cells) + " |")
    return lines


def _profile_rows(suite: Suite, backend: str) -> tuple[list[str], list[str]]:
    lim = suite.limits
    copy = lim.device_copy_gbs if lim else None
    summary = ["| workload | kernels profiled | kernel time ms | call time ms | kernels' share of call | "
               "GB/s over all kernels | % of device copy | slowest kernel |",
               "|---|---:|---:|---:|---:|---:|---:|---|"]
    details: list[str] = []
    for w in suite.workloads:
        r = suite.results.get((w.name, backend))
        if r is None or not r.ok or not r.profile:
            continue
        ktime = sum(k.seconds for k in r.profile)
        known = [k for k in r.profile if k.nbytes is not None]
        gbs = sum(k.nbytes for k in known) / sum(k.seconds for k in known) / 1e9 \
            if known and sum(k.seconds for k in known) > 0 else None
        slow = max(r.profile, key=lambda k: k.seconds)
        slow_txt = f"`{slow.name}` {slow.seconds * 1e6:.0f} us"
        if slow.gbs is not None:
            slow_txt += f", {slow.gbs:.2f} GB/s" + (f" ({100 * slow.gbs / copy:.0f}%)" if copy else "")
        share = f"{100 * ktime / r.median_s:.0f}%" if r.median_s else "-"
        frac = f"{100 * gbs / copy:.0f}%" if gbs is not None and copy else "-"
        summary.append(f"| {w.name} | {len(r.profile)} | {_ms(ktime)} | {_ms(r.median_s)} | {share} | "
                       f"{'-' if gbs is None else f'{gbs:.2f}'} | {frac} | {slow_txt} |")
        details += [f"**{w.name}**", "", "| # | kernel | us | MB moved | GB/s | % of device copy |",
                    "|---:|---|---:|---:|---:|---:|"]
        for i, k in enumerate(r.profile):
            mb = "?" if k.nbytes is None else f"{k.nbytes / 1e6:.2f}"
            g = "?" if k.gbs is None else f"{k.gbs:.2f}"
            pct = f"{100 * k.gbs / copy:.0f}%" if k.gbs is not None and copy else "?"
            details.append(f"| {i} | `{k.name}` | {k.seconds * 1e6:.1f} | {mb} | {g} | {pct} |")
        details.append("")
    return summary, details


def _targets(suite: Suite) -> list[str]:
    lines = []
    res = suite.results
    if {"toony", "inductor"} <= set(suite.backends):
        rows = []
        for w in suite.workloads:
            t, i = res.get((w.name, "toony")), res.get((w.name, "inductor"))
            if t is None or i is None:
                continue
            if not t.ok or not i.ok or t.kernels is None or i.kernels is None:
                rows.append(f"{w.name}: not comparable (a backend failed)")
                continue
            mark = "met" if t.kernels <= i.kernels else "**missed**"
            rows.append(f"{w.name} {t.kernels} vs {i.kernels} {mark}")
        lines.append("- **Kernels per call <= inductor's** (toony compile vs inductor, inductor's extern calls "
                     "counted as kernels): " + "; ".join(rows) + ".")
        t, i = res.get(("tiny", "toony")), res.get(("tiny", "inductor"))
        if t is not None and t.ok and t.median_s is not None:
            mark = "met" if t.median_s <= 100e-6 else "**missed**"
            extra = f" (inductor: {i.median_s * 1e6:.0f} us)" if i is not None and i.ok and i.median_s else ""
            lines.append(f"- **Compiled-call overhead <= 100 us on a tiny graph** (`tiny`, 10x10 sin(x)+cos(y), "
                         f"inputs on the toony device, call + synchronize): {t.median_s * 1e6:.0f} us {mark}{extra}.")
        rows = []
        for w in suite.workloads:
            if not w.memory_bound:
                continue
            t, i = res.get((w.name, "toony")), res.get((w.name, "inductor"))
            if t is None or i is None or not t.ok or not i.ok or not t.median_s or not i.median_s:
                rows.append(f"{w.name}: not comparable")
                continue
            ratio = i.median_s / t.median_s
            rows.append(f"{w.name} {ratio:.2f}x {'met' if ratio >= 1 else '**missed**'}")
        lines.append("- **Memory-bound workloads at least at inductor's speed** (inductor time / toony time, >= 1 "
                     "meets it): " + "; ".join(rows) + ".")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _behind(suite: Suite) -> list[str]:
    """One line per workload where toony compile is slower than inductor, with the facts that explain it."""
    lines = []
    copy = suite.limits.device_copy_gbs if suite.limits else None
    for w in suite.workloads:
        t, i = suite.results.get((w.name, "toony")), suite.results.get((w.name, "inductor"))
        if t is None or i is None:
            continue
        if not t.ok:
            lines.append(f"- `{w.name}`: toony compile failed ({t.error}).")
            continue
        if not i.ok or not t.median_s or not i.median_s or t.median_s <= i.median_s:
            continue
        facts = [f"{t.median_s / i.median_s:.1f}x slower than inductor ({_ms(t.median_s)} vs {_ms(i.median_s)} ms)"]
        if t.kernels is not None and i.kernels is not None:
            facts.append(f"{_plural(t.kernels, 'kernel')} vs {i.kernels}")
        case = suite.cases[w.name]
        if t.profile:
            ktime = sum(k.seconds for k in t.profile)
            facts.append(f"device time of the kernels {100 * ktime / t.median_s:.0f}% of the call")
            known = [k for k in t.profile if k.nbytes is not None]
            if case.flops and ktime > 0:
                slow = max(t.profile, key=lambda k: k.seconds)
                mm = f" (torch.mm: {suite.limits.torch_mm_gflops:.1f})" if suite.limits else ""
                facts.append(f"they reach {case.flops / ktime / 1e9:.2f} GFLOP/s{mm}; the slowest, `{slow.name}`, "
                             f"takes {100 * slow.seconds / ktime:.0f}% of the kernel time")
            elif known and copy:
                gbs = sum(k.nbytes for k in known) / max(sum(k.seconds for k in known), 1e-12) / 1e9
                facts.append(f"they move {gbs:.2f} GB/s, {100 * gbs / copy:.0f}% of the device copy limit")
        if t.fallbacks:
            facts.append(f"{t.fallbacks} CPU fallbacks per call")
        lines.append(f"- `{w.name}`: " + ", ".join(facts) + ".")
    return lines or ["- toony compile is at or ahead of inductor on every workload in this run."]


def write_markdown(suite: Suite, path: Path, plot_name: str | None) -> None:
    m = suite.machine
    lim = suite.limits
    caches = ("with empty compile caches: inductor and toony compile from scratch" if suite.fresh_caches
              else "with whatever inductor and toony kept in their on-disk caches")
    out = ["# Benchmarks", "",
           f"Generated by `{suite.command}` on {m.date} in {suite.wall_s / 60:.1f} min; rerun it to refresh "
           "this page (do not edit it by hand).", "",
           "One process runs every workload on each backend: **eager CPU** (torch eager), **inductor CPU** "
           "(`torch.compile(backend=\"inductor\")`), **toony compile** (`torch.compile(backend=\"toony\")`, model "
           "and inputs on the toony device) and **toony eager** (eager ops on the toony device). A toony call "
           "ends with `torch.toony.synchronize()`, so its time includes all its kernels. Times are medians of "
           "at least 3 calls after the first call (the warm-up call counts as one, except on toony backends, "
           "where it is profiled kernel by kernel instead); *first call* includes compilation "
           f"({caches}). toony eager forgets toony_core's memo of realized graphs before each call (it would "
           "otherwise hand back the previous call's buffer for the same graph on the same inputs), so every call "
           "computes. "
           "Errors are the max absolute difference from the same computation in float64 on the CPU, over every "
           "output (training steps: the loss and every parameter gradient). Kernels per call: toony's from "
           "`torch_toony.metrics()`, inductor's counted in its generated wrapper code (generated C++ kernels + "
           "extern calls such as `mm`).", "",
           "## Machine", "",
           f"- CPU: {m.cpu}, {m.cores} cores, {m.memory_gib:.0f} GiB; torch uses {m.torch_threads} threads",
           f"- OpenCL device (toony): {m.opencl}",
           f"- torch {m.torch_version}, pyopencl {m.pyopencl_version}, Python {m.python}",
           f"- Load average (1/5/15 min) at start: {'/'.join(f'{x:.1f}' for x in m.load_before)}, at end: "
           f"{'/'.join(f'{x:.1f}' for x in m.load_after)} (on {m.cores} cores; other work on the machine makes every "
           "number noisier and slower)",
           f"- Sizes: {'--quick (smoke-test sizes)' if suite.quick else 'full'}", ""]
    if lim is not None:
        n = lim.copy_floats
        out += ["## Machine limits (this run)", "",
                "| limit | value |", "|---|---:|",
                f"| torch CPU copy, {n // 2 ** 20}M floats (`dst.copy_(src)`, read + write) | "
                f"{lim.torch_copy_gbs:.2f} GB/s |",
                f"| toony_core copy kernel through OpenCL, {n // 2 ** 20}M floats, device time | "
                f"{lim.toony_copy_gbs:.2f} GB/s |",
                f"| the same, wall clock (launch + wait) | {lim.toony_copy_wall_gbs:.2f} GB/s |",
                f"| pyopencl `enqueue_copy` device to device, {4 * n // 2 ** 20} MB | {lim.cl_copy_gbs:.2f} GB/s |",
                f"| torch.mm float32 on the CPU, {lim.mm_n}^3 | {lim.torch_mm_gflops:.1f} GFLOP/s |", "",
                "*Device copy limit* below is the better of the two OpenCL copies "
                f"({lim.device_copy_gbs:.2f} GB/s); CPU backends are compared with torch's CPU copy.", ""]
    out += ["## Workloads", "", "| workload | computation |", "|---|---|"]
    out += [f"| {w.name} | {suite.cases[w.name].what} |" for w in suite.workloads]
    out += ["", "## Speedup over eager CPU", ""] + _speedup_table(suite)
    if plot_name:
        out += ["", f"![speedup over eager CPU per workload]({plot_name})"]
    out += ["", "## Results", ""] + _main_table(suite)
    out += ["", "## Throughput against the machine's limits", "",
            "Memory-bound workloads: the bytes any implementation must read and write, per second of a call "
            "(% of the device copy limit for toony, of torch's CPU copy for the CPU backends). Compute-bound "
            "workloads: useful GFLOP/s (% of torch.mm's).", ""] + _throughput_table(suite)
    out += ["", "## toony, per kernel", "",
            "The warm-up call of each toony backend ran at `TOONY_DEBUG=2` (OpenCL event times, one wait per "
            "kernel; that call is not one of the timed calls). Bytes are each kernel's buffers (read once, written "
            "once): a lower bound on its traffic, so GB/s is what the kernel achieves on the unique data it "
            "touches, and *% of device copy* is that against the device copy limit. *Kernels' share of call* "
            "is the kernels' device time over the median call time; the rest is host work (launches, Python, "
            "the CPU fallbacks, synchronization); above 100% means the profiled call ran slower than the median. "
            "Kernels whose buffers fit in the CPU caches can beat the copy limit, which is measured on "
            f"{4 * lim.copy_floats // 2 ** 20 if lim else '?'} MB buffers.", ""]
    for b in ("toony", "toony-eager"):
        if b not in suite.backends:
            continue
        summary, details = _profile_rows(suite, b)
        out += [f"### {BACKEND_LABELS[b]}", ""] + summary
        if details:
            out += ["", "<details><summary>every kernel</summary>", ""] + details + ["</details>"]
        out.append("")
    out += ["", "## Targets (issue 4)", ""] + _targets(suite)
    out += ["", "## Where toony is behind and why", ""] + _behind(suite) + ["", WHY]
    path.write_text("\n".join(out).rstrip() + "\n")


def write_plot(suite: Suite, path: Path) -> bool:
    """The speedup chart; False when matplotlib is missing (install the `bench` extra)."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [b for b in suite.backends if b != "eager"]
    names = [w.name for w in suite.workloads]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(names) + 2), 4.8))
    width = 0.8 / max(len(others), 1)
    colors = {"inductor": "#4c72b0", "toony": "#dd8452", "toony-eager": "#55a868"}
    for j, b in enumerate(others):
        xs, ys = [], []
        for i, name in enumerate(names):
            x = i + (j - (len(others) - 1) / 2) * width
            s = speedup(suite, name, b)
            r = suite.results.get((name, b))
            if s is not None:
                xs.append(x)
                ys.append(s)
            elif r is not None and not r.ok:
                ax.annotate("failed", (x, 1.0), rotation=90, ha="center", va="bottom", fontsize=7, color="red")
        ax.bar(xs, ys, width, label=BACKEND_LABELS[b], color=colors.get(b))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("speedup over eager CPU (log)")
    ax.set_title(f"toony benchmarks ({'quick sizes' if suite.quick else 'full sizes'}), {suite.machine.date}")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def geomean(values: list[float]) -> float | None:
    vals = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None
