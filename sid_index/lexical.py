"""BM25 over the catalog's item text (bm25s): the lexical half of the item-form index prior.

A dense query vector finds items that mean the same; BM25 finds the items that share the query's words
(model numbers, brands, sizes), which a 384-d sentence embedding blurs. Home Depot's queries are of the
second kind: BM25 alone beats dense retrieval there. The index keeps a BM25 index of its SKUs' text
(`radgr index build`; `radgr index lexical` adds one to an older index) in its `lexical/` folder, one
document per SKU in item-vector row order, so `lexical_scores` lines up with `SidIndex.item_vectors`.

Scores are BM25 (bm25s defaults: Lucene's variant, k1 1.5, b 0.75; English stop words, Snowball stemmer)
divided by the request's best score, so 1 is the best lexical match of every request whatever the query
length, on the same scale as the dense term's cosine-like spread; the fusion weight then means the same
for short and long queries.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from sid_index.errors import IndexFormatError, RadgrError

LEXICAL_DIR = "lexical"  # inside an index directory
STOPWORDS = "en"
STEMMER = "english"


def _bm25s():
    """bm25s on its numpy backend. It imports numba when it can, and numba loads llvmlite, whose FFI object
    answers any attribute (`__dict__` too) with a function wrapper; vLLM's CPU worker then fails at start-up
    scanning every loaded module for kernels to override ('_lib_fn_wrapper' object has no attribute 'get').
    So numba is kept out of bm25s's import (scores are the same: numba only speeds up top-k selection)."""
    blocked = "numba" not in sys.modules
    if blocked:
        sys.modules["numba"] = None  # `import numba` raises ImportError: bm25s's optional import falls back
    try:
        import bm25s
        import Stemmer
    except ImportError:
        raise RadgrError("the lexical index needs `pip install bm25s PyStemmer` (radgr's dependencies)") from None
    finally:
        if blocked:
            del sys.modules["numba"]  # a later `import numba` (vLLM's own) finds the real package
    return bm25s, Stemmer


@lru_cache(maxsize=1)
def _stemmer():
    return _bm25s()[1].Stemmer(STEMMER)


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """BM25 tokens of each text: lower-cased words, English stop words dropped, Snowball-stemmed."""
    bm25s, _ = _bm25s()
    return bm25s.tokenize(list(texts), stopwords=STOPWORDS, stemmer=_stemmer(), show_progress=False,
                          return_ids=False)


def fit_bm25(texts: Sequence[str]):
    """A `bm25s.BM25` over `texts` (one document each, in order)."""
    bm25s, _ = _bm25s()
    retriever = bm25s.BM25()
    retriever.index(tokenize(texts), show_progress=False)
    return retriever


def write_lexical(folder: Path, texts: Sequence[str]) -> None:
    """Save the BM25 index of `texts` into `folder` (bm25s's own files: JSON and .npy, nothing pickled)."""
    fit_bm25(texts).save(str(folder), corpus=None, allow_pickle=False)


class LexicalScorer:
    """Normalised BM25 scores of requests against every SKU of an index (see the module docstring)."""

    def __init__(self, retriever, num_docs: int):
        self.retriever = retriever
        self.num_docs = num_docs

    @staticmethod
    def load(folder: Path, num_docs: int) -> LexicalScorer:
        """Open `folder` (checked by the index manifest's checksums); refuses one that does not fit the index."""
        bm25s, _ = _bm25s()
        try:
            retriever = bm25s.BM25.load(str(folder), mmap=True, allow_pickle=False, load_corpus=False,
                                        show_progress=False)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"{folder}: damaged lexical index ({exc})") from None
        s = retriever.scores
        indptr, indices = s["indptr"], s["indices"]
        ids = [i for token, i in retriever.vocab_dict.items() if token]  # bm25s's "" token has no column
        if (int(s["num_docs"]) != num_docs or not len(indptr) or not int(indptr[-1]) == len(indices) == len(s["data"])
                or (ids and not 0 <= min(ids) <= max(ids) < len(indptr) - 1)
                or (len(indices) and not 0 <= int(indices.min()) <= int(indices.max()) < num_docs)):
            raise IndexFormatError(f"{folder}: lexical index does not match the index's {num_docs} SKUs")
        return LexicalScorer(retriever, num_docs)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """[len(queries), SKUs] float32: each request's BM25 scores over its best (zeros: no word matches)."""
        out = np.zeros((len(queries), self.num_docs), dtype=np.float32)
        for row, tokens in enumerate(tokenize([q or "" for q in queries])):
            ids = self.retriever.get_tokens_ids([t for t in tokens if t])
            if ids:
                out[row] = self.retriever.get_scores_from_ids(ids)
        best = out.max(axis=1, keepdims=True)
        return np.divide(out, best, out=out, where=best > 0)
