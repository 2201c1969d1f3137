"""Smoke tests of the benchmark suite (`python -m benchmarks`): one small workload end to end, and failures reported."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("benchmarks") is None:  # pytest's importlib mode does not put the repo on sys.path
    sys.path.insert(0, str(REPO))

from benchmarks import report, runner  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from benchmarks.workloads import Case, Workload  # noqa: E402

BACKEND_LABELS = ("eager CPU", "inductor CPU", "toony compile", "toony eager")


def test_quick_suite_on_one_workload(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "tiny", "--warm-caches",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (tmp_path / "benchmarks.md").read_text()
    for label in BACKEND_LABELS:  # every backend has its row, measured (a failure would say **failed**)
        assert f"| tiny | {label} | " in md
    assert "**failed**" not in md, md
    assert "## Machine limits (this run)" in md and "GFLOP/s" in md
    assert "## toony, per kernel" in md and "`E_10_10`" in md
    assert "Compiled-call overhead" in md
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert (tmp_path / "benchmarks.png").exists() == has_matplotlib


def _raises_on_toony(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "toony":
        raise ValueError("this workload cannot run on toony")
    return x * 2


def test_a_failing_backend_is_reported_not_dropped(tmp_path: Path) -> None:
    case = Case("x * 2, fails on toony", (torch.randn(8),), _raises_on_toony)
    ref = runner.reference(case)
    results = {(("boom", b)): runner.run(case, "boom", b, ref, time_budget_s=0.01, limit_s=60)
               for b in ("eager", "toony-eager")}
    ok, failed = results[("boom", "eager")], results[("boom", "toony-eager")]
    assert ok.ok and ok.median_s is not None and ok.max_err == 0.0
    assert not failed.ok and failed.error == "ValueError: this workload cannot run on toony"
    suite = report.Suite([Workload("boom", lambda quick: case)], {"boom": case}, results, ["eager", "toony-eager"],
                         None, describe(), "test", True, False, 0.0)
    report.write_markdown(suite, tmp_path / "b.md", None)
    md = (tmp_path / "b.md").read_text()
    assert "| boom | toony eager | **failed** (ValueError: this workload cannot run on toony) |" in md
    assert "| boom | eager CPU | " in md
