"""Retrieval with the index alone: the floor a trained model has to clear.

The SIDs are residual k-means codes of the catalog's text embeddings, so the index already
retrieves without any training: embed the request with the same text model, give each SID
the sum of its codes' centroids (the index's reconstruction of its items' embeddings), and
rank every SID by L2 distance to the request vector (exact search with faiss).

The request vector is the query's embedding when the request has a query; otherwise a
recency-weighted mean of the SID vectors of the last history items (weights 1, 1/2, 1/4,
newest first); a request with neither gets no ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sid_index.embed import resolve_model
from sid_index.errors import RadgrError
from sid_index.index import SidIndex, load_centroids

HISTORY_WEIGHTS = (1.0, 0.5, 0.25)  # newest history item first


def sid_table(index: SidIndex) -> tuple[np.ndarray, np.ndarray]:
    """Every SID of the index [S, L] and its vector [S, D]: the sum of its codes' RQ-KMeans centroids."""
    centroids = load_centroids(index)
    if len(centroids) != index.levels:
        raise RadgrError(f"index {index.root} has no RQ-KMeans centroids (built from given codes): "
                         "index-only retrieval needs an index built from embeddings")
    codes = index.trie.sids()
    return codes, code_vectors(centroids, codes)


def code_vectors(centroids: Sequence[np.ndarray], codes: np.ndarray) -> np.ndarray:
    """Vectors [N, D] of SIDs given as codes [N, L]."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1, len(centroids))
    out = np.zeros((len(codes), centroids[0].shape[1]), dtype=np.float32)
    for level, c in enumerate(centroids):
        out += np.asarray(c, dtype=np.float32)[codes[:, level]]
    return out


def prior_scores(centroids: Sequence[np.ndarray], vector: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """|q|^2 - |q - v_SID|^2 of SIDs `codes` [N, L] for request vector q [D]: the index's retrieval score
    (higher is nearer; the same order as the L2 ranking), which the decoder can be trained and served on top of."""
    q = np.asarray(vector, dtype=np.float32)
    diff = q[None, :] - code_vectors(centroids, codes)
    return (q @ q - (diff * diff).sum(-1)).astype(np.float32)


def item_prior_scores(vector: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """|q|^2 - |q - e|^2 = 2 q.e - |e|^2 of items with their own (unquantised) vectors `item_vectors` [N, D]:
    `prior_scores` at item level, where each SKU has its own vector instead of its SID's reconstruction."""
    q = np.asarray(vector, dtype=np.float32)
    e = np.asarray(item_vectors, dtype=np.float32)
    return (2.0 * (e @ q) - (e * e).sum(-1)).astype(np.float32)


def item_request_vector(index: SidIndex, query_vector: np.ndarray | None, history: Sequence[str] = ()
                        ) -> np.ndarray | None:
    """The item prior's request vector: the query's embedding when given, else the recency-weighted mean
    (HISTORY_WEIGHTS) of the last history SKUs' own vectors (sku_ids, oldest first); else None."""
    if query_vector is not None:
        return np.asarray(query_vector, dtype=np.float32)
    recent = [s for s in history if index.sid_of(s) is not None][-len(HISTORY_WEIGHTS):][::-1]  # newest first
    if not recent:
        return None
    w = np.asarray(HISTORY_WEIGHTS[: len(recent)], dtype=np.float32)
    return (w[:, None] * index.vectors_of(recent)).sum(0) / w.sum()


def item_bonus(index: SidIndex, vector: np.ndarray | None, weight: float):
    """`scored_items`' item_bonus for one request: weight x `item_prior_scores`; None for no prior."""
    if vector is None or weight <= 0:
        return None
    return lambda skus: weight * item_prior_scores(vector, index.vectors_of(skus))


def own_item_scores(index: SidIndex, vector: np.ndarray, lexical: np.ndarray | None, skus: Sequence[str]
                    ) -> np.ndarray:
    """What the item-form prior scores each SKU: `item_prior_scores` (+ its weighted lexical score: `lexical` is
    the request's row over the index's item-vector rows, `sid_index.lexical`)."""
    own = item_prior_scores(vector, index.vectors_of(skus))
    if lexical is not None:
        own = own + np.asarray(lexical, dtype=np.float32)[[index.rows[s] for s in skus]]
    return own


def item_form_bonus(index: SidIndex, vector: np.ndarray | None, lexical: np.ndarray | None, weight: float):
    """`scored_items`' item_bonus (the item prior) under the item-form index prior: a beam's score already holds
    the index-prior weight x its SID's best item score (`sid_index.decoding.ItemPrior`), so the item prior adds
    weight x (own - best of its SID's SKUs), with the lexical term in both: it orders the SKUs of a SID by their
    own evidence without counting the SID's best twice (at weight = the index prior's, each SKU is scored as if
    it were its SID's best). None for no prior (every SKU of each SID is in `skus`)."""
    if vector is None or weight <= 0:
        return None

    def bonus(skus: list[str]) -> np.ndarray:
        own = own_item_scores(index, vector, lexical, skus)
        sids = [index.sid_of(s) for s in skus]
        best: dict = {}
        for sid, v in zip(sids, own.tolist(), strict=True):
            best[sid] = max(best.get(sid, v), v)
        return weight * (own - np.asarray([best[s] for s in sids], dtype=np.float32))

    return bonus


def lexical_rows(index: SidIndex, queries: Sequence[str], weight: float) -> np.ndarray | None:
    """`weight` x the queries' normalised BM25 scores against every SKU ([len, SKUs]; None when `weight` is 0)."""
    return weight * index.lexical().scores(queries) if weight > 0 else None


def history_vector(centroids: Sequence[np.ndarray], history: Sequence[Sequence[int]]) -> np.ndarray | None:
    """Recency-weighted mean of the SID vectors of the last history items (oldest first in `history`)."""
    recent = list(history)[-len(HISTORY_WEIGHTS):][::-1]  # newest first
    if not recent:
        return None
    w = np.asarray(HISTORY_WEIGHTS[: len(recent)], dtype=np.float32)
    return (w[:, None] * code_vectors(centroids, np.asarray(recent))).sum(0) / w.sum()


def request_vector(centroids: Sequence[np.ndarray], query_vector: np.ndarray | None,
                   history: Sequence[Sequence[int]] = ()) -> np.ndarray | None:
    """The query's embedding when given, else the history's recency-weighted SID vector (else None)."""
    if query_vector is not None:
        return np.asarray(query_vector, dtype=np.float32)
    return history_vector(centroids, history)


def embedding_model_of(index: SidIndex, override: str | Path | None = None) -> Path:
    """The local text model the index was embedded with (the same model must embed requests)."""
    info = index.manifest.get("embedding") or {}
    try:
        return resolve_model(info.get("model"), info.get("model_fingerprint"), override)
    except RadgrError as exc:
        raise RadgrError(f"index {index.root}: {exc}") from None


class IndexRetriever:
    """Exact nearest SIDs of request vectors, by L2 distance to the SID vectors."""

    def __init__(self, index: SidIndex):
        import faiss

        self.index = index
        self.centroids = [np.asarray(c, dtype=np.float32) for c in load_centroids(index)]
        self.codes, self.vectors = sid_table(index)
        self._search = faiss.IndexFlatL2(self.vectors.shape[1])
        self._search.add(self.vectors)

    def request_vector(self, query_vector: np.ndarray | None, history: Sequence[Sequence[int]] = ()
                       ) -> np.ndarray | None:
        """`request_vector` with this index's centroids."""
        return request_vector(self.centroids, query_vector, history)

    def search(self, vectors: np.ndarray, width: int) -> list[list[tuple[int, ...]]]:
        """The `width` nearest SIDs of each vector [B, D], nearest first."""
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.vectors.shape[1]))
        if not len(vectors):
            return []
        _, idx = self._search.search(vectors, min(width, len(self.codes)))
        return [[tuple(self.codes[i].tolist()) for i in row if i >= 0] for row in idx]
