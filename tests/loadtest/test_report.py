"""Run summaries and the capacity search, against values worked out by hand."""

from __future__ import annotations

import pytest

from loadtest.report import capacity_search, format_runs, summarize


def test_summary_percentiles_are_over_successes_and_errors_counted_by_status():
    lat = [10.0 * i for i in range(1, 101)] + [1.0, 2.0, 99999.0]  # 100 successes, 3 failures
    st = ["200"] * 100 + ["503", "503", "connection"]
    s = summarize(lat, st, target_qps=10, duration_s=10.3, budget_ms=1000, max_error_rate=0.05)
    assert (s.requests, s.ok, s.errors) == (103, 100, {"503": 2, "connection": 1})
    # numpy's linear interpolation over 10, 20, ..., 1000
    assert s.p50_ms == pytest.approx(505.0) and s.p95_ms == pytest.approx(950.5) and s.p99_ms == pytest.approx(990.1)
    assert s.max_ms == 1000.0 and s.achieved_qps == pytest.approx(10.0)
    assert s.passed, s.failed_because


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (dict(budget_ms=900), "p99 990.1 ms > budget 900 ms"),
        (dict(max_error_rate=0.0), "error rate 2.91% > 0.00%"),
        (dict(target_qps=12), "achieved 10.30 QPS < 90% of target 12"),
    ],
)
def test_each_failure_reason(kw, reason):
    lat = [10.0 * i for i in range(1, 101)] + [1.0, 2.0, 3.0]
    st = ["200"] * 100 + ["503"] * 3
    args = dict(target_qps=10, duration_s=10.0, budget_ms=1000, max_error_rate=0.05) | kw
    s = summarize(lat, st, **args)
    assert s.failed_because == [reason] and not s.passed
    assert "FAIL" in format_runs([s])


def test_no_success_fails_without_percentiles():
    s = summarize([5.0], ["500"], target_qps=0.1, duration_s=10, budget_ms=150, max_error_rate=1.0)
    assert s.failed_because == ["no successful request"]


class Curve:
    """A fake server: p99 grows with QPS and passes the budget at `limit` QPS."""

    def __init__(self, limit: float):
        self.limit, self.asked = limit, []

    def __call__(self, qps: float):
        self.asked.append(qps)
        p99 = 100.0 if qps <= self.limit else 200.0
        return summarize([p99] * 10, ["200"] * 10, target_qps=qps, duration_s=10 / qps, budget_ms=150)


def test_capacity_search_grows_then_bisects():
    curve = Curve(limit=5.0)
    res = capacity_search(curve, start_qps=1, factor=2, refine=2)
    # 1, 2, 4 pass, 8 fails; bisect (4, 8) -> 6 fails; (4, 6) -> 5 passes
    assert curve.asked == [1, 2, 4, 8, 6, 5]
    assert res.best_qps == 5 and res.stopped == "failed" and len(res.runs) == 6


def test_capacity_search_first_step_failing_and_max_qps():
    assert capacity_search(Curve(limit=0.5), start_qps=1, factor=2).best_qps is None
    curve = Curve(limit=100)
    res = capacity_search(curve, start_qps=1, factor=3, max_qps=10)
    assert curve.asked == [1, 3, 9, 10] and res.best_qps == 10 and res.stopped == "reached max QPS 10"


def test_capacity_search_stops_within_its_time_budget():
    now = [0.0]

    def clock():
        return now[0]

    def run_at(qps):
        now[0] += 10.0  # each step takes 10 s
        return Curve(limit=1000)(qps)

    res = capacity_search(run_at, start_qps=1, factor=2, time_budget_s=35, step_cost_s=10, clock=clock)
    assert len(res.runs) == 3 and res.stopped == "time budget" and res.best_qps == 4
    with pytest.raises(ValueError):
        capacity_search(run_at, start_qps=1, factor=1)
