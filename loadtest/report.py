"""What one load run measured, judged against a latency budget; and the capacity search over runs.

Shared by the HTTP load test (`radgr bench load` / `capacity`) and the in-process serving
benchmark (`bench/gpu_serving.py`), so both report the same numbers the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# The paper's serving point: a 1.7B model answers in < 150 ms at 15 QPS on one RTX 4090 (the defaults of the
# load test, the capacity search and bench/gpu_serving.py)
TARGET_QPS = 15.0
LATENCY_BUDGET_MS = 150.0

# A run that delivers less than this share of its target QPS did not hold that QPS.
MIN_DELIVERED = 0.9


@dataclass
class RunSummary:
    target_qps: float
    duration_s: float
    requests: int  # answered, successful or not
    ok: int
    errors: dict[str, int]  # HTTP status (or "connection") -> count
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    budget_ms: float
    max_error_rate: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def achieved_qps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return (self.requests - self.ok) / self.requests if self.requests else 1.0

    @property
    def failed_because(self) -> list[str]:
        """Why the run does not pass (empty when it does)."""
        why = []
        if self.ok == 0:
            why.append("no successful request")
        elif self.p99_ms > self.budget_ms:
            why.append(f"p99 {self.p99_ms:.1f} ms > budget {self.budget_ms:g} ms")
        if self.requests and self.error_rate > self.max_error_rate:
            why.append(f"error rate {self.error_rate:.2%} > {self.max_error_rate:.2%}")
        if self.achieved_qps < MIN_DELIVERED * self.target_qps:
            why.append(f"achieved {self.achieved_qps:.2f} QPS < {MIN_DELIVERED:.0%} of target {self.target_qps:g}")
        return why

    @property
    def passed(self) -> bool:
        return not self.failed_because

    @classmethod
    def from_dict(cls, d: dict) -> RunSummary:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return asdict(self) | {"achieved_qps": self.achieved_qps, "error_rate": self.error_rate,
                               "passed": self.passed, "failed_because": self.failed_because}


def summarize(latencies_ms: Sequence[float], statuses: Sequence[str], target_qps: float, duration_s: float,
              budget_ms: float, max_error_rate: float = 0.0, **extra) -> RunSummary:
    """Percentiles over the successful requests (status "200"); every other status counts as an error."""
    lat = np.asarray(latencies_ms, dtype=float)
    ok = np.asarray([s == "200" for s in statuses], dtype=bool)
    good = lat[ok] if len(lat) else lat
    pct = np.percentile(good, [50, 95, 99]) if len(good) else [float("nan")] * 3
    errors: dict[str, int] = {}
    for s in statuses:
        if s != "200":
            errors[s] = errors.get(s, 0) + 1
    return RunSummary(
        target_qps=target_qps, duration_s=duration_s, requests=len(lat), ok=int(ok.sum()), errors=errors,
        p50_ms=float(pct[0]), p95_ms=float(pct[1]), p99_ms=float(pct[2]),
        max_ms=float(good.max()) if len(good) else float("nan"), budget_ms=budget_ms,
        max_error_rate=max_error_rate, extra=dict(extra),
    )


def format_runs(runs: Sequence[RunSummary], labels: Sequence[str] | None = None, label: str = "engine") -> str:
    """A markdown table, one row per run (with a first column `label` when `labels` are given)."""
    head = f"| {label} " if labels else ""
    rows = [head + "| target QPS | achieved QPS | requests | errors | p50 ms | p95 ms | p99 ms | max ms | p99 budget |",
            ("|---" if labels else "") + "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs):
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "0"
        verdict = "pass" if r.passed else "FAIL"
        rows.append((f"| {labels[i]} " if labels else "")
                    + f"| {r.target_qps:g} | {r.achieved_qps:.2f} | {r.requests} | {errs} | {r.p50_ms:.1f} | "
                    f"{r.p95_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} | {verdict} ({r.budget_ms:g} ms) |")
    return "\n".join(rows)


@dataclass
class CapacityResult:
    runs: list[RunSummary]
    best_qps: float | None  # the highest target QPS that passed (None: not even the first)
    stopped: str  # why the search ended


def capacity_search(run_at: Callable[[float], RunSummary], start_qps: float, factor: float = 1.5,
                    max_qps: float | None = None, refine: int = 2, time_budget_s: float | None = None,
                    step_cost_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> CapacityResult:
    """Raise the QPS by `factor` while runs pass, then bisect `refine` times between the last pass and
    the first failure. Stops before a step would end past `time_budget_s` (a step takes `step_cost_s`)."""
    if start_qps <= 0 or factor <= 1:
        raise ValueError("start_qps must be > 0 and factor > 1")
    t0 = clock()
    runs: list[RunSummary] = []
    lo: float | None = None
    hi: float | None = None

    def can_run() -> bool:
        return time_budget_s is None or clock() - t0 + step_cost_s <= time_budget_s

    def step(q: float) -> bool:
        r = run_at(q)
        runs.append(r)
        return r.passed

    q, stopped = start_qps, ""
    while not stopped:
        if not can_run():
            stopped = "time budget"
        elif step(q):
            lo = q
            if max_qps is not None and q >= max_qps:
                stopped = f"reached max QPS {max_qps:g}"
            else:
                q = round(q * factor, 2) if max_qps is None else min(round(q * factor, 2), max_qps)
        else:
            hi, stopped = q, "failed"
    for _ in range(refine if hi is not None and lo is not None else 0):
        mid = round((lo + hi) / 2, 2)
        if mid in (lo, hi):
            break
        if not can_run():
            stopped = "time budget"
            break
        if step(mid):
            lo = mid
        else:
            hi = mid
    return CapacityResult(runs=runs, best_qps=lo, stopped=stopped)
