"""Index-only retrieval (`sid_index.retrieve`) against brute force in float64."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sid_index.errors import RadgrError
from sid_index.index import load_centroids, load_index
from sid_index.retrieve import HISTORY_WEIGHTS, IndexRetriever, embedding_model_of, history_vector, sid_table


def test_sid_vectors_are_centroid_sums(tiny_index):
    codes, vectors = sid_table(tiny_index)
    centroids = load_centroids(tiny_index)
    assert len(codes) == tiny_index.num_sids
    for row in (0, len(codes) // 2, len(codes) - 1):
        want = sum(np.asarray(centroids[level], dtype=np.float64)[codes[row, level]] for level in range(3))
        np.testing.assert_allclose(vectors[row], want, atol=1e-6)


def test_search_equals_brute_force(tiny_index):
    retriever = IndexRetriever(tiny_index)
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(5, retriever.vectors.shape[1])).astype(np.float32) * 0.1
    got = retriever.search(queries, width=20)
    codes = retriever.codes
    for q, ranking in zip(queries, got, strict=True):
        dist = ((retriever.vectors.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1)
        want = [tuple(codes[i].tolist()) for i in np.argsort(dist, kind="stable")[:20]]
        assert ranking == want
    assert len(retriever.search(queries[:1], width=10**6)[0]) == tiny_index.num_sids  # capped at every SID
    assert retriever.search(np.zeros((0, queries.shape[1])), 4) == []


def test_history_vector_by_hand(tiny_index):
    centroids = load_centroids(tiny_index)
    hist = [(0, 0, 0), (1, 2, 3), (4, 5, 6), (7, 7, 7)]  # oldest first; only the last 3 count

    def vec(c):
        return sum(np.asarray(centroids[level], dtype=np.float64)[c[level]] for level in range(3))

    w = HISTORY_WEIGHTS
    want = (w[0] * vec((7, 7, 7)) + w[1] * vec((4, 5, 6)) + w[2] * vec((1, 2, 3))) / sum(w)
    np.testing.assert_allclose(history_vector(centroids, hist), want, atol=1e-6)
    np.testing.assert_allclose(history_vector(centroids, hist[-1:]), vec((7, 7, 7)), atol=1e-6)
    assert history_vector(centroids, []) is None
    retriever = IndexRetriever(tiny_index)
    q = np.ones(retriever.vectors.shape[1], dtype=np.float32)
    np.testing.assert_array_equal(retriever.request_vector(q, hist), q)  # a query wins over the history
    assert retriever.request_vector(None, []) is None


def test_embedding_model_is_the_indexs_own(tiny_index, tmp_path):
    from sid_index.embed import default_model_path

    assert embedding_model_of(tiny_index) == default_model_path()
    moved = json.loads((tiny_index.root / "manifest.json").read_text())
    moved["embedding"]["model"] = str(tmp_path / "elsewhere")  # built on another machine: the default still fits
    assert embedding_model_of(type(tiny_index)(**{**tiny_index.__dict__, "manifest": moved})) == default_model_path()
    other = {**moved, "embedding": {**moved["embedding"], "model_fingerprint": "0" * 16}}
    with pytest.raises(RadgrError, match="is not on this machine"):
        embedding_model_of(type(tiny_index)(**{**tiny_index.__dict__, "manifest": other}))


def test_index_without_centroids_is_refused(tiny_index, tmp_path):
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(tiny_index.root, copy)
    for f in copy.glob("centroids_l*.npy"):
        f.unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("centroids")}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RadgrError, match="no RQ-KMeans centroids"):
        sid_table(load_index(copy))
