"""Fixtures of the server tests: a checkpoint on disk that both engines load (vLLM's CPU kernels need head_dim 64)."""

from __future__ import annotations

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
