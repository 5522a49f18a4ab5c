"""Shared test fixtures: the tiny dataset and index, a servable checkpoint, a real `radgr serve` process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from server.client import RetrievalClient
from sid_index.build import IndexConfig, build_index
from sid_index.data.schema import load_dataset, write_dataset
from sid_index.data.synthetic import make_synthetic
from sid_index.embed import item_texts
from sid_index.index import load_index
from trainer.model import ScratchModelConfig, new_model, save_checkpoint

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data beside the repository (../shared/data); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run tiny models: intra-op threads only add synchronisation (tens of ms per op on a busy 2-CPU box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    catalog, sessions, info = make_synthetic(items=300, sessions=600, users=60, seed=0)
    return load_dataset(write_dataset(tmp_path_factory.mktemp("ds") / "synthetic", catalog, sessions, info))


@pytest.fixture(scope="session")
def tiny_index(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    cfg = IndexConfig(dataset=tiny_dataset.root, out=root / "index", codebook_sizes=[8, 8, 8], seed=0,
                      cache_dir=root / "cache")
    return load_index(build_index(cfg, progress=False))


SERVE_MODEL = ScratchModelConfig(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=64,
                                 intermediate_size=256, tokenizer_vocab=400)


@pytest.fixture(scope="session")
def served_path(tiny_dataset, tiny_index, tmp_path_factory):
    """An untrained model with spread-out scores (weights drawn wider than usual), saved as a checkpoint."""
    texts = item_texts(tiny_dataset.catalog) + [q for q in tiny_dataset.sessions["query"].to_pylist() if q]
    ckpt = new_model(tiny_index, texts, scratch=SERVE_MODEL, seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ckpt.model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("served") / "model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(model, index, log_path: Path, timeout: float = 240.0, command: tuple[str, ...] = ("radgr", "serve"),
                  image_env: dict[str, str] | None = None, **env):
    """`radgr serve` in a subprocess (the command users run); yields its URL once /readyz says ready.

    `command` / `image_env`: another start command (argv[0] from this venv) and RADGR_* variables
    under the model, index and port this fixture sets (the Docker image's own, say).

    On exit: SIGTERM, and the process must stop cleanly (graceful shutdown) within 60 s. uvicorn
    re-raises the signal once shut down, so the exit status is -SIGTERM; its log says whether it drained.
    """
    port = free_port()
    env.setdefault("engine", "native")
    environ = {**os.environ, **(image_env or {}), "RADGR_MODEL": str(model), "RADGR_INDEX": str(index),
               "RADGR_PORT": str(port), **{f"RADGR_{k.upper()}": str(v) for k, v in env.items()}}
    argv = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = RetrievalClient(url, timeout_s=2)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if client.ready()[0] is not None:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready after {timeout} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    log = log_path.read_text()
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log[-3000:]
