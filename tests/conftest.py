"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from sid_index.build import IndexConfig, build_index
from sid_index.data.schema import load_dataset, write_dataset
from sid_index.data.synthetic import make_synthetic
from sid_index.index import load_index

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
    import torch

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
