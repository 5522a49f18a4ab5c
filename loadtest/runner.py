"""Headless Locust runs against a running server: one run at a target QPS, or a capacity search.

Locust runs in a child process (it monkey-patches the standard library with gevent, which must
not happen inside the `radgr` process). Each run writes into its own folder:
`locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv` (Locust's CSV),
`report.html` (Locust's HTML report), `requests.csv` (one line per request: start, latency ms,
status, ok) and `summary.json` (what `radgr bench load` prints).
"""

from __future__ import annotations

import csv
import importlib.util
import ipaddress
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from loadtest.report import LATENCY_BUDGET_MS, RunSummary, summarize
from server.client import RetrievalClient
from sid_index.atomic import write_json
from sid_index.errors import RadgrError

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


class LoadConfig(BaseModel):
    """One load run. Users x per-user rate = `qps`; each user's interval is `pace_s` unless `users` is set."""

    model_config = ConfigDict(extra="forbid")

    url: str
    mix: Path = Field(description="request mix, JSON lines (loadtest.mix.write_mix)")
    out: Path
    qps: float = Field(gt=0)
    duration_s: int = Field(gt=0)
    budget_ms: float = Field(LATENCY_BUDGET_MS, gt=0, description="p99 latency budget")
    max_error_rate: float = Field(0.0, ge=0, le=1)
    users: int | None = Field(None, ge=1)
    pace_s: float = Field(2.0, gt=0, description="a user's interval between requests (sets the user count)")
    timeout_s: float = Field(30.0, gt=0)
    token: str | None = None
    seed: int = 0

    @property
    def n_users(self) -> int:
        return self.users or max(1, math.ceil(self.qps * self.pace_s))


def is_loopback(url: str) -> bool:
    """True when every address the URL's host resolves to is on this machine."""
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def wait_ready(url: str, wait_s: float = 0.0, token: str | None = None) -> dict:
    """The server's /readyz answer once it is ready; a clear error if it is not within `wait_s`."""
    return RetrievalClient(url, token).wait_ready(wait_s)


def run_load(cfg: LoadConfig) -> RunSummary:
    """One headless Locust run; returns its summary (also written to `out/summary.json`)."""
    if importlib.util.find_spec("locust") is None:
        raise RadgrError("Locust is not installed: pip install 'radgr[load]'")
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "requests.csv"
    log.write_text("")
    users = cfg.n_users
    env = os.environ | {
        "RADGR_LOAD_REQUESTS": str(cfg.mix.resolve()),
        "RADGR_LOAD_USER_RATE": repr(cfg.qps / users),
        "RADGR_LOAD_DURATION_S": str(cfg.duration_s),
        "RADGR_LOAD_LOG": str(log.resolve()),
        "RADGR_LOAD_TIMEOUT_S": repr(cfg.timeout_s),
        "RADGR_LOAD_SEED": str(cfg.seed),
    }
    if cfg.token:
        env["RADGR_API_TOKEN"] = cfg.token
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", cfg.url,
        "--users", str(users), "--spawn-rate", str(users * 10),
        "--run-time", f"{cfg.duration_s + math.ceil(cfg.timeout_s) + 10}s",  # a safety net: the users end the run
        "--stop-timeout", str(math.ceil(cfg.timeout_s)), "--csv", str(out / "locust"), "--csv-full-history",
        "--html", str(out / "report.html"), "--exit-code-on-error", "0", "--only-summary", "--loglevel", "WARNING",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (out / "locust.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RadgrError(f"locust exited with {proc.returncode} (log {out / 'locust.log'}): " + " | ".join(tail))
    latencies, statuses = read_request_log(log)
    summary = summarize(latencies, statuses, cfg.qps, cfg.duration_s, cfg.budget_ms, cfg.max_error_rate,
                        users=users, url=cfg.url, out=str(out))
    write_json(out / "summary.json", summary.to_dict())
    return summary


def read_request_log(path: Path) -> tuple[list[float], list[str]]:
    """Latencies (ms) and statuses ("200", "503", ..., "connection" when no response came)."""
    latencies, statuses = [], []
    with path.open(newline="") as fh:
        for _start, ms, status, _ok in csv.reader(fh):
            latencies.append(float(ms))
            statuses.append(status if status != "0" else "connection")
    return latencies, statuses
