"""PyTorch's OpInfo database on the toony device, with the CPU fallback off: the full coverage sweep.

Run: python -m benchmarks.op_coverage            (writes docs/op_coverage.md)
     python -m benchmarks.op_coverage --ops '^(add|mul)$' --dtypes float32 --out /tmp/x.md   (a subset)

Every (OpInfo, dtype) pair the OpInfo supports runs the five checks of tests/torch_toony/opinfo_driver.py
(reference samples, non-contiguous samples, out=, in-place, float32 gradients) against the CPU. Pairs run in
worker subprocesses fed one case at a time, so a crash or a hang costs one case, not the sweep: a worker that
dies is replaced, and a case that runs past --timeout is killed and recorded as a timeout. A pair that fails for
a missing kernel is run once more with the fallback on, to list every ATen op it would fall back for.
Raw results go to build/op_coverage.jsonl (one JSON object per pair).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "torch_toony"))

MAGIC = "@@opcov "
# Samples per check in the sweep: fewer than the driver's defaults, because on a cold kernel cache every new
# shape is an OpenCL compile (about half a second on PoCL) and the sweep has ~6000 pairs.
SWEEP_CAPS = {"sample": 12, "noncontig": 4, "out": 2, "inplace": 4, "grad": 4}
# A worker process is replaced after this many cases, so leaks and caches of one op never pile up.
CASES_PER_WORKER = 150


# ---------------------------------------------------------------------------------------------------------
# worker side


def _worker(caps: dict[str, int]) -> None:
    import warnings

    import opinfo_driver as drv
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    warnings.simplefilter("ignore")
    out = sys.stdout
    sys.stdout = sys.stderr  # anything an op prints must not garble the protocol
    for line in sys.stdin:
        index, dtype_name = line.split()
        op, dtype = op_db[int(index)], getattr(torch, dtype_name)
        t0 = time.perf_counter()
        outcomes = [drv.run_check(op, dtype, check, caps) for check in drv.CHECKS]
        rec: dict[str, Any] = {
            "index": int(index),
            "op": op.full_name,
            "dtype": dtype_name,
            "checks": {o.check: {"status": o.status, "kind": o.kind, "detail": o.detail, "samples": o.samples,
                                 "seconds": round(o.seconds, 3)} for o in outcomes},
        }
        failed = [o for o in outcomes if o.status == "fail"]
        if any(o.kind.startswith("no kernel") for o in failed):
            first = next(o for o in failed if o.kind.startswith("no kernel"))
            ok, ops = drv.fallback_ops(op, dtype, first.check, caps)
            rec["with_fallback"] = {"check": first.check, "passes": ok, "fallbacks": ops}
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        out.write(MAGIC + json.dumps(rec) + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------------------
# parent side


class Worker:
    def __init__(self, caps: dict[str, int]) -> None:
        env = dict(os.environ, TOONY_FALLBACK="0", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.op_coverage", "--worker", "--caps", json.dumps(caps)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1, start_new_session=True,
        )
        self.case: tuple[int, str] | None = None
        self.started = 0.0
        self.done = 0

    def send(self, case: tuple[int, str]) -> None:
        self.case, self.started = case, time.monotonic()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{case[0]} {case[1]}\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)  # the worker's own session: it and anything it started
        except ProcessLookupError:
            pass
        self.proc.wait()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def _dead_record(case: tuple[int, str], names: list[str], kind: str) -> dict[str, Any]:
    return {"index": case[0], "op": names[case[0]], "dtype": case[1], "seconds": None,
            "checks": {"sample": {"status": "fail", "kind": kind, "detail": kind, "samples": 0, "seconds": 0}}}


def run_sweep(cases: list[tuple[int, str]], names: list[str], workers: int, timeout: float,
              caps: dict[str, int], log: Any, sink: Any) -> list[dict[str, Any]]:
    """Run cases on `workers` worker processes; every record also goes to sink (as soon as it arrives)."""
    pending = collections.deque(cases)
    results: list[dict[str, Any]] = []

    def record(rec: dict[str, Any]) -> None:
        results.append(rec)
        sink(rec)

    sel = selectors.DefaultSelector()
    pool: list[Worker] = []

    def start() -> None:
        w = Worker(caps)
        pool.append(w)
        assert w.proc.stdout is not None
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        feed(w)

    def feed(w: Worker) -> None:
        if pending and w.done < CASES_PER_WORKER:
            w.send(pending.popleft())
        else:
            w.case = None

    def retire(w: Worker, kill: bool) -> None:
        assert w.proc.stdout is not None
        sel.unregister(w.proc.stdout)
        pool.remove(w)
        w.kill() if kill else w.close()
        if pending:
            start()

    t0 = time.monotonic()
    for _ in range(min(workers, len(pending))):
        start()
    while pool:
        for key, _ in sel.select(timeout=1.0):
            w: Worker = key.data
            line = w.proc.stdout.readline()  # type: ignore[union-attr]
            if not line:  # the worker died (a crash in native code): its case is the culprit
                code = w.proc.poll()
                if w.case is not None:
                    record(_dead_record(w.case, names, f"crash (exit {code})"))
                retire(w, kill=True)
                continue
            if not line.startswith(MAGIC):
                continue
            record(json.loads(line[len(MAGIC):]))
            w.done += 1
            n = len(results)
            if n % 50 == 0:
                rate = (time.monotonic() - t0) / n
                log(f"{n}/{len(cases)} pairs, {rate:.2f} s/pair, ~{rate * (len(cases) - n) / 60:.0f} min left")
            feed(w)
            if w.case is None:
                retire(w, kill=False)
        now = time.monotonic()
        for w in list(pool):
            if w.case is not None and now - w.started > timeout:
                record(_dead_record(w.case, names, f"timeout (> {timeout:.0f} s)"))
                retire(w, kill=True)
    return results


# ---------------------------------------------------------------------------------------------------------
# report

_ABBREV = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16", "complex32": "c32",
           "complex64": "c64", "complex128": "c128", "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
           "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "b8"}


def pair_status(rec: dict[str, Any]) -> tuple[str, str]:
    """(status, kind) of a pair: fail if any check fails (kind = the first failing check's), else pass if
    any check passed, else skip (values not comparable, or no check applied)."""
    checks = rec["checks"]
    for name, c in checks.items():
        if c["status"] == "fail":
            return "fail", f"{name}: {c['kind']}"
    if any(c["status"] == "pass" for c in checks.values()):
        return "pass", ""
    reasons = [c["kind"] for c in checks.values() if c["status"] == "skip"]
    return "skip", reasons[0] if reasons else "no check applies (no samples)"


def _rate(c: collections.Counter) -> str:
    graded = c["pass"] + c["fail"]
    pct = 100.0 * c["pass"] / graded if graded else 0.0
    return f"{c['pass']} | {c['fail']} | {c['skip']} | **{pct:.1f}%**"


def _cause(kind: str) -> str:
    """The failure kind without the check name, for grouping causes."""
    return kind.split(": ", 1)[1] if ": " in kind else kind


def render(results: list[dict[str, Any]], meta: dict[str, str]) -> str:
    import opinfo_driver as drv

    results = sorted(results, key=lambda r: (r["op"], r["dtype"]))
    status = {(r["op"], r["dtype"]): pair_status(r) for r in results}
    total: collections.Counter = collections.Counter()
    f32: collections.Counter = collections.Counter()
    no_complex: collections.Counter = collections.Counter()
    by_dtype: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (_, dt), (st, _) in status.items():
        total[st] += 1
        by_dtype[dt][st] += 1
        if dt == "float32":
            f32[st] += 1
        if not dt.startswith("complex"):
            no_complex[st] += 1

    lines = [
        "# toony op coverage: PyTorch's OpInfo database on the toony device",
        "",
        "Generated by `python -m benchmarks.op_coverage` (do not edit by hand). "
        f"{meta['date']}, commit `{meta['commit']}`, torch {meta['torch']}, OpenCL device: {meta['device']}. "
        f"Sweep wall time {meta['wall']} with {meta['workers']} workers.",
        "",
        "Each (OpInfo, dtype) pair in `op_db` (every dtype the OpInfo supports on the CPU) runs on toony with the",
        "CPU fallback **off** (`TOONY_FALLBACK=0`) and is compared with the CPU "
        "(`tests/torch_toony/opinfo_driver.py`):",
        "reference samples, non-contiguous samples, `out=` (right-sized, resized-from-empty and non-contiguous out),",
        "the in-place variant, and float32 gradients. Samples per check (spread evenly over the OpInfo's list): "
        + ", ".join(f"{k} {v}" for k, v in meta["caps"].items()) + ".",
        "Tolerances are `assert_close`'s defaults for each output dtype, raised only where the OpInfo itself",
        "declares a looser `toleranceOverride` for a CPU/CUDA reference test.",
        "",
        "A pair **passes** when every check that applies passes; it **fails** when any check fails (the first",
        "failing check names the kind); it is **skipped** when it ran without error but its values cannot be",
        "compared with the CPU (PyTorch's own `test_compare_cpu` skips it: random output, uninitialized memory,",
        "undefined results); shapes and dtypes are still checked. Pass rate = pass / (pass + fail).",
        "",
        "## Totals",
        "",
        "| pairs | pass | fail | skip | pass rate |",
        "|---|---|---|---|---|",
        f"| float32 | {_rate(f32)} |",
        f"| all dtypes | {_rate(total)} |",
        f"| all dtypes but complex | {_rate(no_complex)} |",
        "",
        "| dtype | pass | fail | skip | pass rate |",
        "|---|---|---|---|---|",
    ]
    for dt in sorted(by_dtype, key=lambda d: -sum(by_dtype[d].values())):
        lines.append(f"| {dt} | {_rate(by_dtype[dt])} |")

    lines += ["", "Per check (pairs where the check applies):", "", "| check | pass | fail | skip |",
              "|---|---|---|---|"]
    for check in drv.CHECKS:
        c = collections.Counter(r["checks"][check]["status"] for r in results if check in r["checks"])
        lines.append(f"| {check} | {c['pass']} | {c['fail']} | {c['skip']} |")

    causes: collections.Counter = collections.Counter()
    examples: dict[str, list[str]] = collections.defaultdict(list)
    for (op, _), (st, kind) in status.items():
        if st == "fail":
            cause = _cause(kind)
            causes[cause] += 1
            if len(examples[cause]) < 4 and op not in examples[cause]:
                examples[cause].append(op)
    lines += ["", "## Top failure causes", "", "| pairs | cause | e.g. |", "|---|---|---|"]
    for cause, n in causes.most_common(40):
        lines.append(f"| {n} | {_md(cause)} | {', '.join(examples[cause])} |")

    blocked: collections.Counter = collections.Counter()
    needed: collections.Counter = collections.Counter()
    users: dict[str, set[str]] = collections.defaultdict(set)
    rescued = 0
    for r in results:
        fb = r.get("with_fallback")
        if not fb:
            continue
        rescued += fb["passes"]
        for check in r["checks"].values():
            if check["status"] == "fail" and check["kind"].startswith("no kernel: "):
                name = check["kind"][len("no kernel: "):]
                blocked[name] += 1
                users[name].add(r["op"])
                break
        for name in fb["fallbacks"]:
            needed[name] += 1
            users[name].add(r["op"])
    lines += [
        "",
        "## Ops that fall back",
        "",
        "ATen ops with no toony kernel that the OpInfo samples reach. *first missing*: pairs whose first failure",
        "is this op; *needed with fallback on*: pairs that call it when the same failing check is re-run with the",
        f"fallback on (which then passes for {rescued} of the pairs that failed for a missing kernel).",
        "",
        "| ATen op | first missing | needed with fallback on | OpInfos |",
        "|---|---|---|---|",
    ]
    for name in sorted(set(blocked) | set(needed), key=lambda n: (-blocked[n], -needed[n], n)):
        ops = sorted(users[name])
        shown = ", ".join(ops[:6]) + (f" (+{len(ops) - 6})" if len(ops) > 6 else "")
        lines.append(f"| `{name}` | {blocked[name]} | {needed[name]} | {shown} |")

    lines += ["", "## Per op", "",
              "dtypes: " + ", ".join(f"{v}={k}" for k, v in _ABBREV.items()) + ".", "",
              "| op | pass | fail | skip |", "|---|---|---|---|"]
    per_op: dict[str, dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for (op, dt), (st, kind) in status.items():
        short = _ABBREV.get(dt, dt)
        per_op[op][st].append(short if st != "fail" else f"{short} ({_md(kind)})")
    for op in sorted(per_op):
        p = per_op[op]
        fails = _group_fails(p["fail"])
        lines.append(f"| {op} | {' '.join(p['pass'])} | {fails} | {' '.join(p['skip'])} |")
    lines.append("")
    return "\n".join(lines)


def _group_fails(items: list[str]) -> str:
    """'f32 (k1)', 'f64 (k1)', 'c64 (k2)' -> 'f32 f64: k1; c64: k2'."""
    by_kind: dict[str, list[str]] = collections.defaultdict(list)
    for item in items:
        dt, kind = item.split(" (", 1)
        by_kind[kind[:-1]].append(dt)
    return "; ".join(f"{' '.join(dts)}: {kind}" for kind, dts in by_kind.items())


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _meta(workers: int, wall: float, caps: dict[str, int]) -> dict[str, Any]:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        from toony_core.runtime import device

        dev = device().cl_device.name
    except Exception as e:  # the report still says what ran
        dev = f"unknown ({type(e).__name__})"
    return {"date": datetime.date.today().isoformat(), "commit": commit, "torch": torch.__version__,
            "device": dev, "wall": f"{wall / 60:.1f} min", "workers": str(workers), "caps": caps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--caps", default=json.dumps(SWEEP_CAPS), help="samples per check, as JSON")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one (op, dtype) pair may run")
    ap.add_argument("--ops", default=None, help="regex over OpInfo full names (default: all)")
    ap.add_argument("--dtypes", default=None, help="comma-separated dtype names (default: all each op supports)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "op_coverage.md"))
    ap.add_argument("--json", default=str(ROOT / "build" / "op_coverage.jsonl"))
    ap.add_argument("--report-only", action="store_true", help="re-render the report from --json")
    ap.add_argument("--resume", action="store_true", help="keep the pairs already in --json, run the rest")
    args = ap.parse_args()
    caps = json.loads(args.caps)
    if args.worker:
        _worker(caps)
        return

    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    names = [op.full_name for op in op_db]
    json_path = Path(args.json)
    t0 = time.monotonic()
    meta_path = json_path.with_suffix(".meta.json")
    done = [json.loads(line) for line in json_path.read_text().splitlines() if line.strip()] \
        if (args.report_only or args.resume) and json_path.exists() else []
    wall = json.loads(meta_path.read_text())["wall_s"] if done and meta_path.exists() else 0.0
    if args.report_only:
        results = done
    else:
        wanted = set(args.dtypes.split(",")) if args.dtypes else None
        have = {(r["index"], r["dtype"]) for r in done}
        cases = []
        for i, op in enumerate(op_db):
            if args.ops and not re.search(args.ops, op.full_name):
                continue
            for dt in sorted(op.supported_dtypes("toony"), key=str):
                name = str(dt).removeprefix("torch.")
                if (wanted is None or name in wanted) and (i, name) not in have:
                    cases.append((i, name))
        print(f"{len(cases)} (op, dtype) pairs to run ({len(done)} kept), {args.workers} workers", file=sys.stderr)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "a" if done else "w") as sink:

            def write(rec: dict[str, Any]) -> None:
                sink.write(json.dumps(rec) + "\n")
                sink.flush()

            results = done + run_sweep(cases, names, args.workers, args.timeout, caps,
                                       lambda m: print(m, file=sys.stderr), write)
        wall += time.monotonic() - t0
        meta_path.write_text(json.dumps({"wall_s": wall, "workers": args.workers}))
    del torch
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(results, _meta(args.workers, wall, caps)))
    print(f"wrote {args.out} ({len(results)} pairs, {wall / 60:.1f} min)", file=sys.stderr)


if __name__ == "__main__":
    main()
