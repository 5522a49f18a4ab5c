"""catalog -> embeddings -> RQ-KMeans codes -> index directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, field_validator

from sid_index.data.schema import load_catalog
from sid_index.embed import DEFAULT_CACHE, embed_texts, item_texts
from sid_index.index import write_index
from sid_index.rqkmeans import rq_kmeans
from sid_index.tokens import LEVEL_LETTERS

log = logging.getLogger(__name__)


class IndexConfig(BaseModel):
    """Everything `radgr index build` needs."""

    dataset: Path = Field(description="dataset directory (its catalog.parquet is indexed) or a catalog .parquet")
    out: Path
    codebook_sizes: list[int] = Field(default=[32, 32, 32], description="paper: 8192,4096,2048")
    embedding_model: Path | None = Field(default=None, description="local sentence-transformers folder")
    batch_size: int = Field(default=128, gt=0)
    seed: int = 0
    niter: int = Field(default=25, gt=0)
    cache_dir: Path | None = DEFAULT_CACHE
    device: str | None = None
    overwrite: bool = True

    @field_validator("codebook_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not 1 <= len(v) <= len(LEVEL_LETTERS):
            raise ValueError(f"between 1 and {len(LEVEL_LETTERS)} levels")
        if any(k < 2 for k in v):
            raise ValueError("every codebook needs at least 2 codes")
        return v


def build_index(cfg: IndexConfig, progress: bool = True) -> Path:
    """Build and write the index described by `cfg`; returns the index directory."""
    catalog_path = cfg.dataset / "catalog.parquet" if cfg.dataset.is_dir() else cfg.dataset
    catalog = load_catalog(catalog_path)
    t0 = time.perf_counter()
    emb, emb_info = embed_texts(
        item_texts(catalog), cfg.embedding_model, cfg.batch_size, cfg.cache_dir, cfg.device, progress
    )
    t_embed = time.perf_counter() - t0
    rq = rq_kmeans(emb, cfg.codebook_sizes, seed=cfg.seed, niter=cfg.niter)
    t_rq = time.perf_counter() - t0 - t_embed
    recon = {
        "mse_per_level": rq.recon_mse,
        "relative_per_level": [m / rq.data_energy for m in rq.recon_mse],
    }
    meta = {
        "embedding": emb_info,
        "source": {"catalog": str(catalog_path.resolve())},
        "build": {
            "seed": cfg.seed,
            "niter": cfg.niter,
            "embed_seconds": round(t_embed, 2),
            "rqkmeans_seconds": round(t_rq, 2),
        },
        "recon": recon,
    }
    popularity = np.nan_to_num(catalog["popularity"].to_numpy(zero_copy_only=False).astype(np.float64))
    return write_index(
        cfg.out,
        catalog["sku_id"].to_pylist(),
        rq.codes,
        cfg.codebook_sizes,
        popularity=popularity,
        centroids=rq.centroids,
        meta=meta,
        overwrite=cfg.overwrite,
    )
