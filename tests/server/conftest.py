"""Fixtures of the server tests (the served checkpoint and `serve_process` live in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from trainer.model import load_checkpoint


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
