"""Fixtures of the server tests: a checkpoint on disk that both engines load (vLLM's CPU kernels need head_dim 64)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from sid_index.embed import item_texts
from trainer.model import ScratchModelConfig, load_checkpoint, new_model, save_checkpoint

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


@pytest.fixture(scope="session")
def served(served_path):
    ckpt = load_checkpoint(served_path, dtype=torch.float32)
    ckpt.model.eval()
    return ckpt


@pytest.fixture(scope="session")
def requests(tiny_dataset, tiny_index):
    """A few (query, history SKUs) pairs from the test split, with history where the data has it."""
    table = tiny_dataset.split("test").to_pylist()
    out = []
    for row in table[:6]:
        hist = [s for s in (row.get("history") or []) if tiny_index.sid_of(s) is not None]
        out.append((row.get("query"), hist))
    assert any(h for _, h in out) and any(q for q, _ in out)
    return out


def exact_width(index, score_eos: bool = False) -> int:
    """A beam width at which beam search is exact: the most SID prefixes of any level (every SID when
    EOS is scored, since its log-prob can reorder complete SIDs after the last cut)."""
    if score_eos:
        return index.num_sids
    return max(index.trie.nodes(t) for t in range(index.levels))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(model, index, log_path: Path, timeout: float = 240.0, **env):
    """`radgr serve` in a subprocess (the command users run); yields its URL once /readyz says ready.

    On exit: SIGTERM, and the process must stop cleanly (graceful shutdown) within 60 s. uvicorn
    re-raises the signal once shut down, so the exit status is -SIGTERM; its log says whether it drained.
    """
    port = free_port()
    env.setdefault("engine", "native")
    environ = {**os.environ, "RADGR_MODEL": str(model), "RADGR_INDEX": str(index), "RADGR_PORT": str(port),
               **{f"RADGR_{k.upper()}": str(v) for k, v in env.items()}}
    radgr = Path(sys.executable).with_name("radgr")
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(radgr), "serve"], env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
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
