"""Fixtures of the trainer tests: a small synthetic dataset, its index and an untrained scratch model."""

from __future__ import annotations

import pytest

from sid_index.build import IndexConfig, build_index
from sid_index.data.schema import load_dataset, write_dataset
from sid_index.data.synthetic import make_synthetic
from sid_index.embed import item_texts
from sid_index.index import load_index
from trainer.model import ScratchModelConfig, new_model

TINY_MODEL = ScratchModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                                intermediate_size=128, tokenizer_vocab=400)


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


@pytest.fixture()
def tiny_ckpt(tiny_dataset, tiny_index):
    """A fresh, untrained scratch model for the tiny index (head_dim 32: fine for torch, not for vLLM CPU)."""
    texts = item_texts(tiny_dataset.catalog) + [q for q in tiny_dataset.sessions["query"].to_pylist() if q]
    return new_model(tiny_index, texts, scratch=TINY_MODEL, seed=0)
