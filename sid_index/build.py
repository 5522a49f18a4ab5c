"""catalog -> embeddings -> RQ-KMeans codes -> index directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from sid_index.config import IndexConfig
from sid_index.data.schema import load_catalog
from sid_index.embed import embed_texts, item_texts
from sid_index.errors import RadgrError
from sid_index.index import write_index
from sid_index.rqkmeans import rq_kmeans
from sid_index.tokens import LEVEL_LETTERS

log = logging.getLogger(__name__)


SID_SPACE_PER_SKU = 8  # default codebooks leave about this many possible SIDs per SKU (few collisions)
SHARED_SID_WARNING = 0.2  # warn when more than this share of SKUs share their SID with another
CODE_SHARE_WARNING = 0.25  # warn when one code of a level holds more than this share of the SKUs


def default_codebooks(num_skus: int, levels: int = 3) -> list[int]:
    """The same power-of-two size per level, the smallest with size^levels >= 8 x SKUs (16 to 4,096):
    2,000 SKUs -> 32, 4,385 -> 64, 54,667 -> 128."""
    need = max(num_skus, 1) * SID_SPACE_PER_SKU
    size = 2 ** int(np.ceil(np.log2(need ** (1 / levels)) - 1e-9))
    return [int(min(max(size, 16), 4096))] * levels


def disambiguate(codes: np.ndarray, popularity: np.ndarray, sku_ids: list[str]) -> tuple[np.ndarray, int]:
    """One more code per SKU: its rank among the SKUs sharing its SID, most popular first (ties by sku_id, the
    index's own order inside a SID). Returns the codes [N, L + 1] and that level's size (at least 2)."""
    codes = np.asarray(codes, dtype=np.int64)
    extra = np.zeros(len(codes), dtype=np.int64)
    if len(codes):
        _, group = np.unique(codes, axis=0, return_inverse=True)
        group = group.reshape(-1)
        order = np.lexsort((np.asarray(sku_ids, dtype=object), -np.asarray(popularity, dtype=np.float64), group))
        starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
        first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        extra[order] = np.arange(len(order)) - first
    return np.hstack([codes, extra[:, None]]), max(int(extra.max(initial=0)) + 1, 2)


def collision_warnings(stats: dict) -> list[str]:
    """Plain-language warnings about SIDs that hold many SKUs (item recall at small K is capped, and one SID's
    SKUs fill a response with equal scores), with what to change."""
    out = []
    n = max(stats["skus"], 1)
    per = stats["skus_per_sid"]
    if per["skus_sharing_a_sid"] / n > SHARED_SID_WARNING:
        out.append(f"{per['skus_sharing_a_sid'] / n:.0%} of the SKUs share their SID with another (up to {per['max']} "
                   "on one SID): larger codebooks or another level make SIDs more unique")
    for level, usage in enumerate(stats["codebook_usage"]):
        top = usage.get("max_share", 0.0)
        if top > CODE_SHARE_WARNING:
            out.append(f"one code of level {level} holds {top:.0%} of the SKUs: the catalog's embeddings are "
                       "unevenly spread there (more k-means iterations or a larger codebook may help)")
    return out


def build_index(cfg: IndexConfig, progress: bool = True) -> Path:
    """Build and write the index described by `cfg`; returns the index directory."""
    catalog_path = cfg.dataset / "catalog.parquet" if cfg.dataset.is_dir() else cfg.dataset
    catalog = load_catalog(catalog_path)
    t0 = time.perf_counter()
    cache = cfg.cache_dir if cfg.cache else None
    texts = item_texts(catalog)
    emb, emb_info = embed_texts(texts, cfg.embedding_model, cfg.batch_size, cache, cfg.device, progress)
    t_embed = time.perf_counter() - t0
    sizes = cfg.codebook_sizes or default_codebooks(len(emb))
    if cfg.codebook_sizes is None:
        log.info("codebooks %s for %d SKUs (default_codebooks)", sizes, len(emb))
    rq = rq_kmeans(emb, sizes, seed=cfg.seed, niter=cfg.niter)
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
    sku_ids = catalog["sku_id"].to_pylist()
    codes, centroids = rq.codes, list(rq.centroids)
    if cfg.unique_sids:
        if len(sizes) >= len(LEVEL_LETTERS):
            raise RadgrError(f"--unique-sids adds a level: at most {len(LEVEL_LETTERS) - 1} codebooks")
        codes, extra = disambiguate(codes, popularity, sku_ids)
        sizes = [*sizes, extra]
        centroids.append(np.zeros((extra, emb.shape[1]), dtype=np.float32))
        meta["build"]["unique_sids"] = True
        log.info("unique SIDs: a level of %d codes tells apart the SKUs sharing a SID", extra)
    return write_index(
        cfg.out,
        sku_ids,
        codes,
        sizes,
        popularity=popularity,
        centroids=centroids,
        meta=meta,
        overwrite=cfg.overwrite,
        titles=catalog["title"].to_pylist(),
        item_vectors=emb,
        item_texts=texts,
    )
