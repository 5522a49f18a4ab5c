"""`radgr bench load` and `radgr bench capacity`: Locust against a running server, headless."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from loadtest.report import TARGET_QPS
from loadtest.runner import LoadConfig
from sid_index.errors import RadgrError, make_config

bench_app = typer.Typer(help="Load tests of a running retrieval server (Locust, headless).", no_args_is_help=True)

Url = Annotated[str, typer.Option(help="server URL")]
Data = Annotated[Path | None, typer.Option(help="dataset folder: the request mix comes from its held-out sessions")]
Requests = Annotated[Path | None, typer.Option(help="a ready request mix (JSON lines) instead of --data")]
Split = Annotated[str, typer.Option(help="split of --data to draw requests from")]
BeamWidth = Annotated[int | None, typer.Option(help="beam width per request (server default when omitted)")]
TopK = Annotated[int, typer.Option(help="SKUs per request")]
Budget = Annotated[float, typer.Option(help="p99 latency budget, ms")]
MaxErrors = Annotated[float, typer.Option(help="highest share of failed requests that still passes")]
Users = Annotated[int | None, typer.Option(help="Locust users (default: QPS x --pace-s)")]
Pace = Annotated[float, typer.Option(help="seconds between one user's requests (sets the user count)")]
Token = Annotated[str | None, typer.Option(envvar="RADGR_API_TOKEN", help="bearer token")]
WaitS = Annotated[float, typer.Option(help="wait up to this long for the server to be ready")]
DEFAULTS = {name: field.default for name, field in LoadConfig.model_fields.items()}  # written once, in LoadConfig


def _mix_file(data: Path | None, requests: Path | None, split: str, beam_width: int | None, top_k: int,
              out: Path, seed: int) -> Path:
    from loadtest.mix import request_mix, write_mix

    if (data is None) == (requests is None):
        raise RadgrError("give exactly one of --data (a dataset folder) or --requests (a JSON-lines mix)")
    if requests is not None:
        if not requests.is_file():
            raise RadgrError(f"{requests}: no such file")
        return requests
    out.mkdir(parents=True, exist_ok=True)
    return write_mix(request_mix(data, split, beam_width=beam_width, top_k=top_k, seed=seed), out / "mix.jsonl")


@bench_app.command("load")
def load_command(
    qps: Annotated[float, typer.Option(help="target requests per second (constant throughput)")] = TARGET_QPS,
    duration: Annotated[int, typer.Option(help="seconds")] = 60,
    url: Url = "http://127.0.0.1:8000",
    data: Data = None,
    requests: Requests = None,
    split: Split = "test",
    beam_width: BeamWidth = None,
    top_k: TopK = 100,
    out: Annotated[Path, typer.Option(help="report folder (Locust CSV + HTML, summary.json)")] = Path("runs/load"),
    budget_ms: Budget = DEFAULTS["budget_ms"],
    max_error_rate: MaxErrors = DEFAULTS["max_error_rate"],
    users: Users = None,
    pace_s: Pace = DEFAULTS["pace_s"],
    token: Token = None,
    wait_s: WaitS = 0.0,
    seed: int = DEFAULTS["seed"],
) -> None:
    """Hold a target QPS against a running server; print latency percentiles and pass/fail (exit 1 on fail)."""
    from loadtest.report import format_runs
    from loadtest.runner import run_load, wait_ready

    wait_ready(url, wait_s, token)
    mix = _mix_file(data, requests, split, beam_width, top_k, out, seed)
    cfg = make_config(LoadConfig, "load", url=url, mix=mix, out=out, qps=qps, duration_s=duration,
                      budget_ms=budget_ms, max_error_rate=max_error_rate, users=users, pace_s=pace_s, token=token,
                      seed=seed)
    typer.echo(f"load: {qps:g} QPS for {duration} s, {cfg.n_users} users -> {url}", err=True)
    summary = run_load(cfg)
    typer.echo(format_runs([summary]))
    typer.echo(f"reports: {out}/report.html, {out}/locust_stats.csv, {out}/summary.json")
    if not summary.passed:
        typer.echo("FAIL: " + "; ".join(summary.failed_because))
        raise typer.Exit(1)
    typer.echo("PASS")


@bench_app.command("capacity")
def capacity_command(
    url: Url = "http://127.0.0.1:8000",
    data: Data = None,
    requests: Requests = None,
    split: Split = "test",
    beam_width: BeamWidth = None,
    top_k: TopK = 100,
    out: Annotated[Path, typer.Option(help="report folder: one sub-folder per step, capacity.json/.md")] = Path(
        "runs/capacity"
    ),
    start_qps: Annotated[float, typer.Option(help="first step")] = 1.0,
    factor: Annotated[float, typer.Option(help="each passing step multiplies the QPS by this")] = 1.5,
    max_qps: Annotated[float | None, typer.Option(help="stop once this QPS passes")] = None,
    refine: Annotated[int, typer.Option(help="bisection steps between the last pass and the first failure")] = 2,
    step_duration: Annotated[int, typer.Option(help="seconds per step")] = 20,
    cooldown_s: Annotated[float, typer.Option(help="pause between steps (the server drains)")] = 3.0,
    max_minutes: Annotated[float, typer.Option(help="the whole search ends within this")] = 10.0,
    budget_ms: Budget = DEFAULTS["budget_ms"],
    max_error_rate: MaxErrors = DEFAULTS["max_error_rate"],
    pace_s: Pace = DEFAULTS["pace_s"],
    token: Token = None,
    wait_s: WaitS = 0.0,
    seed: int = DEFAULTS["seed"],
) -> None:
    """Step the QPS up until p99 passes the budget; print the highest QPS held. Loopback servers only."""
    from loadtest.report import capacity_search, format_runs
    from loadtest.runner import is_loopback, run_load, wait_ready
    from sid_index.atomic import atomic_file, write_json

    if not is_loopback(url):
        raise RadgrError(f"{url}: the capacity search overloads its server on purpose; it only runs against "
                         "a server on this machine (127.0.0.1 / localhost)")
    wait_ready(url, wait_s, token)
    mix = _mix_file(data, requests, split, beam_width, top_k, out, seed)

    def run_at(qps: float):
        time.sleep(cooldown_s)
        wait_ready(url, 60, token)
        cfg = make_config(LoadConfig, "load", url=url, mix=mix, out=out / f"qps_{qps:g}", qps=qps,
                          duration_s=step_duration, budget_ms=budget_ms, max_error_rate=max_error_rate, pace_s=pace_s,
                          token=token, seed=seed)
        summary = run_load(cfg)
        typer.echo(f"  {qps:g} QPS: p99 {summary.p99_ms:.1f} ms, {summary.achieved_qps:.2f} achieved -> "
                   + ("pass" if summary.passed else "fail (" + "; ".join(summary.failed_because) + ")"), err=True)
        return summary

    result = capacity_search(run_at, start_qps, factor, max_qps, refine, time_budget_s=max_minutes * 60,
                             step_cost_s=step_duration + cooldown_s + 5)
    table = format_runs(result.runs)
    best = f"{result.best_qps:g} QPS" if result.best_qps is not None else f"none (even {start_qps:g} QPS failed)"
    line = f"highest QPS held with p99 <= {budget_ms:g} ms: {best} (search ended: {result.stopped})"
    typer.echo(table)
    typer.echo(line)
    write_json(out / "capacity.json", {"best_qps": result.best_qps, "stopped": result.stopped, "budget_ms": budget_ms,
                                       "runs": [r.to_dict() for r in result.runs]})
    with atomic_file(out / "capacity.md", "w") as fh:
        fh.write(table + "\n\n" + line + "\n")
