"""Fixtures of the trainer tests: an untrained tiny scratch model (dataset and index: tests/conftest.py)."""

from __future__ import annotations

import pytest

from sid_index.embed import item_texts
from trainer.model import ScratchModelConfig, new_model

TINY_MODEL = ScratchModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                                intermediate_size=128, tokenizer_vocab=400)


@pytest.fixture()
def tiny_ckpt(tiny_dataset, tiny_index):
    """A fresh, untrained scratch model for the tiny index (head_dim 32: fine for torch, not for vLLM CPU)."""
    texts = item_texts(tiny_dataset.catalog) + [q for q in tiny_dataset.sessions["query"].to_pylist() if q]
    return new_model(tiny_index, texts, scratch=TINY_MODEL, seed=0)
