"""Locust users that replay a request mix against `POST /v1/retrieve` at a constant total QPS.

Run through `radgr bench load` (which writes the mix and sets the environment below), or by hand:

    RADGR_LOAD_REQUESTS=mix.jsonl RADGR_LOAD_USER_RATE=0.5 \
      locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 -u 30 --headless -t 60s

Pacing: each user keeps a fixed schedule of RADGR_LOAD_USER_RATE requests per second, from a
random phase within its interval (so U users spread U x rate QPS evenly instead of sending in
bursts), for RADGR_LOAD_DURATION_S seconds; a response slower than the interval delays that
user's next request (the achieved QPS then shows it). When every user's schedule is over the
run ends, after the last answer, so Locust's counts and ours agree. Every request is also
appended to RADGR_LOAD_LOG (start time, latency, status) for exact percentiles: Locust's own
CSV rounds response times above 100 ms to 10 ms buckets.
"""

from __future__ import annotations

import json
import os
import random
import time

import gevent
from locust import HttpUser, events, task
from locust.exception import StopUser
from locust.stats import CSV_STATS_INTERVAL_SEC

from server.api import RETRIEVE_PATH

REQUESTS_FILE = os.environ.get("RADGR_LOAD_REQUESTS", "")
USER_RATE = float(os.environ.get("RADGR_LOAD_USER_RATE", "1"))
DURATION_S = float(os.environ.get("RADGR_LOAD_DURATION_S", "60"))
LOG_FILE = os.environ.get("RADGR_LOAD_LOG", "")
TIMEOUT_S = float(os.environ.get("RADGR_LOAD_TIMEOUT_S", "30"))
SEED = int(os.environ.get("RADGR_LOAD_SEED", "0"))
TOKEN = os.environ.get("RADGR_API_TOKEN", "")
ENDPOINT = RETRIEVE_PATH


def _read_mix(path: str) -> list[dict]:
    if not path:
        raise SystemExit("RADGR_LOAD_REQUESTS is not set: the request mix (JSON lines, one request body each)")
    with open(path, encoding="utf-8") as fh:
        mix = [json.loads(line) for line in fh if line.strip()]
    if not mix:
        raise SystemExit(f"{path}: no requests in the mix")
    return mix


MIX = _read_mix(REQUESTS_FILE)
_log = open(LOG_FILE, "a", buffering=1, encoding="utf-8") if LOG_FILE else None  # noqa: SIM115 - open for the run
_users = {"started": 0, "running": 0, "t0": 0.0}


@events.request.add_listener
def _log_request(request_type, name, response_time, response_length, response, exception, start_time=None, **_):
    if _log is not None and name == ENDPOINT:
        status = getattr(response, "status_code", 0) or 0
        _log.write(f"{start_time:.6f},{response_time:.3f},{status},{int(exception is None)}\n")


class RetrieveUser(HttpUser):
    """One client: walks the mix from its own random offset on a fixed schedule."""

    def wait_time(self) -> float:
        return max(0.0, self.due - time.monotonic())

    def on_start(self) -> None:
        if _users["started"] == 0:
            _users["t0"] = time.monotonic()
        _users["started"] += 1
        _users["running"] += 1
        self.rng = random.Random(SEED * 100_003 + _users["started"])
        self.next = self.rng.randrange(len(MIX))
        self.headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
        self.interval = 1 / USER_RATE
        self.due = _users["t0"] + self.rng.uniform(0, self.interval)  # a random phase within the interval
        self.waited = False

    def on_stop(self) -> None:
        _users["running"] -= 1
        if _users["running"] == 0:  # the last schedule is over and every answer is in: end the run once
            # Locust's CSV writer (once a second, no final write) has written the last rows
            gevent.spawn_later(CSV_STATS_INTERVAL_SEC + 0.5, self.environment.runner.quit)

    @task
    def retrieve(self) -> None:
        if not self.waited:  # the first task only waits for the phase (Locust runs a task before any wait)
            self.waited = True
            return
        body = MIX[self.next % len(MIX)]
        self.next += 1
        self.due += self.interval
        with self.client.post(ENDPOINT, json=body, headers=self.headers, timeout=TIMEOUT_S, name=ENDPOINT,
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
        if self.due >= _users["t0"] + DURATION_S:
            raise StopUser()
