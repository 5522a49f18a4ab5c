"""Prometheus config and alerts pass promtool; dashboard and alert queries name metrics a live server exports."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from server.client import RetrievalClient

from .conftest import DEPLOY, tool

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "radgr.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# Series Prometheus itself adds to every target
PROMETHEUS_SERIES = {"up"}


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def alert_queries() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(radgr_[a-z0-9_]+)\b", expr))
    return names | ({"up"} & set(re.findall(r"\b([a-z_]+)\{", expr)))


@pytest.fixture(scope="module")
def live_metrics(image_server) -> tuple[str, set[str]]:
    url, _port, _stage = image_server
    text = RetrievalClient(url).metrics()
    return text, {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_prometheus_config_and_alert_rules_pass_promtool():
    res = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    res = promtool("test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every panel query (as a recording rule; Grafana's $__rate_interval -> 1m)."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": q.replace("$__rate_interval", "1m")}
        for i, q in enumerate(dashboard_queries())
    ]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    res = promtool("check", "rules", str(path))
    assert res.returncode == 0 and f"{len(dashboard_queries())} rules found" in res.stdout, res.stdout + res.stderr


def test_dashboard_and_alerts_name_metrics_the_server_exports(live_metrics):
    _text, exported = live_metrics
    queries = dashboard_queries() + alert_queries()
    used = set().union(*map(metric_names, queries))
    assert len(used) >= 10
    assert used - exported - PROMETHEUS_SERIES == set()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    titles = " ".join(p["title"] for p in panels).lower()
    for need in ("requests per second", "p50", "p95", "p99", "errors", "queue depth", "beams", "invalid sids"):
        assert need in titles, need
    assert {p["datasource"]["uid"] for p in panels} == {"prometheus"}


def test_live_metrics_pass_promtool_lint(live_metrics):
    text, _ = live_metrics
    res = subprocess.run([tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
