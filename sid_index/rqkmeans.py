"""Residual k-means (RQ-KMeans): level l clusters the residuals left by levels 0..l-1.

Each level is a faiss k-means; the SID of an item is its nearest centroid per level.
Seeded and single-threaded inside faiss' training so that a seed gives the same codes
on every run of the same machine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

log = logging.getLogger(__name__)


@dataclass
class RQKMeansResult:
    codes: np.ndarray  # [N, L] int32
    centroids: list[np.ndarray]  # per level [K_eff, D] float32
    recon_mse: list[float] = field(default_factory=list)  # mean ||residual||^2 after each level
    data_energy: float = 0.0  # mean ||x||^2, to make recon_mse relative


def rq_kmeans(
    x: np.ndarray, codebook_sizes: Sequence[int], seed: int = 0, niter: int = 25, max_points_per_centroid: int = 256
) -> RQKMeansResult:
    """Fit and apply RQ-KMeans to embeddings `x` [N, D].

    A level whose codebook is larger than the number of items uses at most N clusters
    (the token range keeps its configured size).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    residual = x.copy()
    codes = np.zeros((n, len(codebook_sizes)), dtype=np.int32)
    centroids, mse = [], []
    for level, k in enumerate(codebook_sizes):
        k_eff = int(min(k, n))
        km = faiss.Kmeans(
            d,
            k_eff,
            niter=niter,
            seed=seed + level,
            max_points_per_centroid=max_points_per_centroid,
            min_points_per_centroid=1,
            verbose=False,
        )
        km.train(residual)
        _, assign = km.index.search(residual, 1)
        assign = assign[:, 0].astype(np.int32)
        codes[:, level] = assign
        residual -= km.centroids[assign]
        centroids.append(km.centroids.copy())
        mse.append(float(np.mean(np.sum(residual**2, axis=1))))
        log.info("level %d: k=%d used=%d mse=%.4f", level, k_eff, len(np.unique(assign)), mse[-1])
    return RQKMeansResult(codes=codes, centroids=centroids, recon_mse=mse, data_energy=float(np.mean(np.sum(x**2, 1))))
