"""Fixtures of the deployment tests: the Dockerfile read stage by stage, the server started as the image starts it."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from server.client import RetrievalClient

from ..conftest import serve_process

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """Path of a command-line tool the Makefile's `test` target installs (Debian packages); skip without it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (make test installs it: apt-get install prometheus docker-compose)")
    return path


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> dict[str, list[dict]]:
    """Instructions of each named build stage (dockerfile-parse's structure, split at FROM ... AS name)."""
    from dockerfile_parse import DockerfileParser

    stages: dict[str, list[dict]] = {}
    current: list[dict] | None = None
    for ins in DockerfileParser(str(path)).structure:
        if ins["instruction"] == "FROM":
            words = ins["value"].split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage at line {ins['startline'] + 1}"
            current = stages.setdefault(words[2], [])
        if current is not None:
            current.append(ins)
    return stages


def stage_env(stage: list[dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins["instruction"] == "ENV":
            for word in shlex.split(ins["value"].replace("\\\n", " ")):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def last(stage: list[dict], instruction: str) -> str:
    values = [i["value"] for i in stage if i["instruction"] == instruction]
    assert values, f"no {instruction} in the stage"
    return values[-1]


def start_command(stage: list[dict]) -> list[str]:
    return json.loads(last(stage, "ENTRYPOINT")) + json.loads(last(stage, "CMD"))


@pytest.fixture(scope="module")
def image_server(served_path, tiny_index, tmp_path_factory):
    """The server started by the CPU image's ENTRYPOINT + CMD with the image's RADGR_* environment,
    the model and index where the volume would mount them. Yields (url, port, stage)."""
    stage = dockerfile_stages()["cpu"]
    image_env = {k: v for k, v in stage_env(stage).items() if k.startswith("RADGR_")}
    log = tmp_path_factory.mktemp("image") / "serve.log"
    with serve_process(served_path, tiny_index.root, log, command=tuple(start_command(stage)), image_env=image_env,
                       beam_width=16, dtype="float32") as url:
        # one good and one rejected request, so that labelled series (status="200", "422") exist
        assert RetrievalClient(url).retrieve_response({"query": "drill", "top_k": 3}).status_code == 200
        assert RetrievalClient(url).retrieve_response({"query": ""}).status_code == 422
        yield url, int(url.rsplit(":", 1)[1]), stage
