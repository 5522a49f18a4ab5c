"""docker-compose.yml: valid for Compose, its files exist, its pieces point at each other."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from server.settings import ServerSettings

from .conftest import DEPLOY, ROOT, dockerfile_stages, tool

COMPOSE = DEPLOY / "docker-compose.yml"


def compose_config(profile: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("docker-compose"), "-f", str(COMPOSE), "--profile", profile, "config"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=60)


def resolved(profile: str) -> dict:
    """The file as Compose reads it (variables filled with their defaults, paths absolute)."""
    out = compose_config(profile, GRAFANA_ADMIN_PASSWORD="s3cret")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_nothing_is_published_beyond_localhost_and_grafana_needs_a_password():
    services = resolved("cpu")["services"]
    for name in ("radgr-cpu", "prometheus", "grafana"):
        for port in services[name]["ports"]:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and grafana["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    refused = compose_config("cpu")
    assert refused.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in refused.stderr
    for svc in yaml.safe_load(COMPOSE.read_text())["services"].values():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), image  # pinned tags


@pytest.mark.parametrize(("profile", "server"), [("cpu", "radgr-cpu"), ("gpu", "radgr-gpu")])
def test_compose_file_is_valid_and_its_files_exist(profile, server):
    cfg = resolved(profile)
    services = cfg["services"]
    assert {server, "prometheus", "grafana"} <= set(services)
    svc = services[server]
    assert Path(svc["build"]["context"]) == ROOT and svc["build"]["target"] in dockerfile_stages()
    assert (ROOT / svc["build"]["dockerfile"]).is_file()
    assert "radgr" in svc["networks"]["default"]["aliases"]
    env = svc["environment"]
    for key in env:
        assert key.removeprefix("RADGR_").lower() in ServerSettings.model_fields, key
    assert env["RADGR_MODEL"].startswith("/models/") and env["RADGR_INDEX"] == "/models/index"
    models = next(v for v in svc["volumes"] if v.endswith(":/models:ro"))
    assert Path(models.split(":")[0]) == ROOT / "runs" / "demo"  # what `make demo` writes
    for name in ("prometheus", "grafana"):
        for vol in services[name]["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("/"):
                assert Path(src).exists() and Path(src).is_relative_to(DEPLOY), vol
    if profile == "gpu":
        dev = svc["deploy"]["resources"]["reservations"]["devices"][0]
        assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"] and env["RADGR_DEVICE"] == "cuda"


def test_prometheus_scrapes_the_server_where_compose_puts_it():
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "radgr")
    assert job["static_configs"][0]["targets"] == ["radgr:8000"] and job["metrics_path"] == "/metrics"
    for rule_file in prom["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()


def test_grafana_provisioning_points_at_the_mounted_dashboard_and_datasource():
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/radgr.yml").read_text())["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and ds["type"] == "prometheus"
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/radgr.json"
    assert (DEPLOY / "grafana/dashboards/radgr.json").is_file()


def test_every_compose_variable_is_documented_in_the_readme():
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    readme = (ROOT / "README.md").read_text()
    missing = sorted(v for v in used if f"`{v}`" not in readme)
    assert len(used) > 10 and not missing, missing
