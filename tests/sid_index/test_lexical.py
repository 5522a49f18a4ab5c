"""The index's lexical term: BM25 against a hand-computed Lucene BM25, row order, round trips, bad files."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from sid_index.errors import IndexFormatError, RadgrError
from sid_index.index import LEXICAL_DIR, MANIFEST_FILE, attach_lexical, load_index, write_index
from sid_index.lexical import LexicalScorer, tokenize, write_lexical

DOCS = ["cordless drill with two batteries", "hammer drill", "claw hammer", "red paint for the kitchen wall",
        "wall anchor kit"]


def lucene_bm25(query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Lucene's BM25 (bm25s's default method), one document at a time."""
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    out = np.zeros(n)
    for term in set(query):
        df = sum(term in d for d in docs)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(term)
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl)) if tf else 0.0
    return out


def test_scores_are_lucene_bm25_over_the_best(tmp_path):
    write_lexical(tmp_path / "lex", DOCS)
    scorer = LexicalScorer.load(tmp_path / "lex", len(DOCS))
    queries = ["Hammer drills", "the wall", "of the", "zebra", ""]
    got = scorer.scores(queries)
    assert got.shape == (5, len(DOCS)) and got.dtype == np.float32
    docs = tokenize(DOCS)
    for row, q in zip(got[:2], tokenize(queries[:2]), strict=True):
        want = lucene_bm25(q, docs)
        np.testing.assert_allclose(row, want / want.max(), rtol=1e-5)
        assert row.max() == 1.0
    assert tokenize(["Hammer drills"]) == [["hammer", "drill"]]  # lower case, stemmed; stop words dropped
    assert not got[2:].any()  # stop words only, an unknown word, nothing: no lexical evidence at all


def test_the_index_keeps_bm25_in_item_vector_row_order_and_attaching_keeps_its_id(tmp_path):
    skus = ["S3", "S1", "S2", "S0", "S4"]  # not the order marisa gives the rows
    codes = np.asarray([[0, 0], [0, 1], [1, 0], [1, 1], [1, 0]])
    vectors = np.eye(5, 4, dtype=np.float32)
    path = write_index(tmp_path / "with", skus, codes, [2, 2], item_vectors=vectors, item_texts=DOCS)
    index = load_index(path)
    assert index.has_lexical
    scores = index.lexical().scores(["claw", "anchor"])
    assert scores[0].argmax() == index.rows["S2"] and scores[1].argmax() == index.rows["S4"]
    np.testing.assert_array_equal(index.vectors_of(["S2"])[0], vectors[2])  # the same row holds its vector

    bare = load_index(write_index(tmp_path / "bare", skus, codes, [2, 2], item_vectors=vectors))
    assert bare.index_id == index.index_id  # the lexical folder is not part of the index's identity
    with pytest.raises(RadgrError, match="radgr index lexical"):
        bare.lexical()
    attach_lexical(bare.root, dict(zip(skus, DOCS, strict=True)))
    again = load_index(bare.root)
    assert again.index_id == index.index_id and again.manifest["files"] == index.manifest["files"]
    np.testing.assert_array_equal(again.lexical().scores(["claw"]), scores[:1])
    with pytest.raises(RadgrError, match="no text"):
        attach_lexical(bare.root, {"S3": "x"})


def test_a_damaged_or_escaping_lexical_folder_is_refused(tmp_path):
    skus, codes = ["A", "B", "C", "D", "E"], np.asarray([[0, 0], [0, 1], [1, 0], [1, 1], [1, 0]])
    path = write_index(tmp_path / "i", skus, codes, [2, 2], item_vectors=np.eye(5, 4), item_texts=DOCS)
    good = tmp_path / "good"
    shutil.copytree(path, good)

    params = path / LEXICAL_DIR / "params.index.json"
    params.write_text(params.read_text().replace('"k1": 1.5', '"k1": 9.5'))
    with pytest.raises(IndexFormatError, match="params.index.json: damaged"):
        load_index(path)

    manifest = json.loads((good / MANIFEST_FILE).read_text())
    manifest["files"]["../outside.npy"] = {"bytes": 1, "sha256": "0"}
    (good / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="outside the index"):
        load_index(good)

    write_lexical(tmp_path / "three", DOCS[:3])  # a BM25 index of another catalog
    with pytest.raises(IndexFormatError, match="does not match the index's 5 SKUs"):
        LexicalScorer.load(tmp_path / "three", 5)


def test_bm25_leaves_numba_unloaded_for_vllm():
    """bm25s would import numba (and llvmlite, whose FFI object breaks vLLM's CPU worker start-up scan); the
    index's BM25 keeps it out, and `import numba` still works afterwards."""
    import subprocess
    import sys

    code = ("import sys; from sid_index.lexical import fit_bm25; fit_bm25(['a drill', 'a saw']);"
            "assert not [m for m in sys.modules if m.startswith(('numba', 'llvmlite'))], 'loaded';"
            "import numba; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
