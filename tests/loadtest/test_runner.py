"""`radgr bench load` / `capacity` against a real `radgr serve` process: reports written, counts right."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.runner import is_loopback
from server.client import RetrievalClient

from ..conftest import free_port, serve_process

RADGR = str(Path(sys.executable).with_name("radgr"))


@pytest.fixture(scope="module")
def url(served_path, tiny_index, tmp_path_factory):
    log = tmp_path_factory.mktemp("load") / "serve.log"
    with serve_process(served_path, tiny_index.root, log, beam_width=16, dtype="float32") as u:
        yield u


def locust_request_count(out: Path) -> int:
    """Locust's own count of requests (the Aggregated row of its stats CSV)."""
    with (out / "locust_stats.csv").open(newline="") as fh:
        return next(int(row["Request Count"]) for row in csv.DictReader(fh) if row["Name"] == "Aggregated")


def served_200(url: str) -> int:
    m = re.search(r'^radgr_requests_total\{status="200"\} (\S+)$', RetrievalClient(url).metrics(), re.M)
    return int(float(m.group(1))) if m else 0


def radgr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RADGR, *args], capture_output=True, text=True, timeout=300)


def test_load_run_writes_reports_and_counts_every_request(url, tiny_dataset, tmp_path):
    before = served_200(url)
    out = tmp_path / "run"
    res = radgr("bench", "load", "--url", url, "--data", str(tiny_dataset.root), "--qps", "5", "--duration", "3",
                "--top-k", "5", "--out", str(out), "--budget-ms", "60000")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS" in res.stdout
    for name in ("report.html", "locust_stats.csv", "locust_stats_history.csv", "requests.csv", "mix.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.reader((out / "requests.csv").open()))
    # one count, four witnesses: our request log, Locust's stats, the server's counter, the summary
    assert summary["requests"] == summary["ok"] == len(rows) == locust_request_count(out)
    assert served_200(url) - before == len(rows)
    # 10 users at 0.5 QPS each, random phases within their 2 s interval, for 3 s: 10 to 20 requests
    assert 10 <= len(rows) <= 20 and summary["errors"] == {}
    assert summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert "<html" in (out / "report.html").read_text()[:2000].lower()


def test_a_run_over_budget_fails_with_exit_1(url, tmp_path):
    mix = tmp_path / "mix.jsonl"
    mix.write_text(json.dumps({"query": "drill", "top_k": 3}) + "\n")
    res = radgr("bench", "load", "--url", url, "--requests", str(mix), "--qps", "2", "--duration", "2",
                "--budget-ms", "0.001", "--out", str(tmp_path / "run"))
    assert res.returncode == 1 and re.search(r"FAIL: p99 [\d.]+ ms > budget 0.001 ms", res.stdout), res.stdout


def test_rejected_requests_count_as_errors(url, tmp_path):
    mix = tmp_path / "mix.jsonl"
    mix.write_text(json.dumps({"query": "drill", "history": ["NOT-A-SKU"]}) + "\n")
    res = radgr("bench", "load", "--url", url, "--requests", str(mix), "--qps", "2", "--duration", "2",
                "--out", str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert res.returncode == 1 and summary["ok"] == 0 and summary["errors"] == {"422": summary["requests"]}


def test_capacity_search_on_a_real_server(url, tiny_dataset, tmp_path):
    out = tmp_path / "cap"
    res = radgr("bench", "capacity", "--url", url, "--data", str(tiny_dataset.root), "--start-qps", "2",
                "--factor", "2", "--max-qps", "4", "--step-duration", "2", "--cooldown-s", "0.2",
                "--budget-ms", "60000", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    cap = json.loads((out / "capacity.json").read_text())
    assert cap["best_qps"] == 4 and [r["target_qps"] for r in cap["runs"]] == [2, 4]
    assert "highest QPS held with p99 <= 60000 ms: 4 QPS" in res.stdout
    assert (out / "qps_2" / "report.html").is_file() and (out / "qps_4" / "report.html").is_file()


def test_bad_settings_are_one_line_exit_2(url, tmp_path):
    mix = tmp_path / "mix.jsonl"
    mix.write_text(json.dumps({"query": "drill"}) + "\n")
    res = radgr("bench", "load", "--url", url, "--requests", str(mix), "--qps", "0", "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "invalid load settings: --qps: Input should be greater than 0" in res.stderr


def test_user_errors_are_one_line_exit_2(tiny_dataset, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    res = radgr("bench", "load", "--url", down, "--data", str(tiny_dataset.root), "--out", str(tmp_path))
    assert res.returncode == 2 and res.stderr.startswith(f"error: server {down} is not ready: cannot connect")
    res = radgr("bench", "capacity", "--url", "http://192.0.2.1:8000", "--data", str(tiny_dataset.root))
    assert res.returncode == 2 and "only runs against a server on this machine" in res.stderr
    assert "Traceback" not in res.stderr


def test_loopback_detection():
    assert is_loopback("http://127.0.0.1:8000") and is_loopback("http://localhost:1") and is_loopback("http://[::1]:8")
    assert not is_loopback("http://192.0.2.1:8000") and not is_loopback("not a url")
