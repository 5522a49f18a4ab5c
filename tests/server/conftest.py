"""Fixtures of the server tests (the served checkpoint and `serve_process` live in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from trainer.model import load_checkpoint

from ..conftest import SERVE_MODEL


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


@pytest.fixture(scope="session")
def text_served_path(tiny_dataset, tiny_index, tmp_path_factory):
    """An untrained text-input checkpoint with wide weights, so the query vector visibly moves the ranking."""
    from sid_index.embed import item_texts
    from trainer.model import new_model, save_checkpoint

    ckpt = new_model(tiny_index, item_texts(tiny_dataset.catalog), scratch=SERVE_MODEL, text_inputs=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in [*ckpt.model.parameters(), *ckpt.text_inputs.parameters()]:
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (3.0 if p.shape[-1] == 384 else 0.15))
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("text-served") / "model")
