"""The catalog (category tree x attribute vocabularies, Zipf popularity) and the users (preferred categories,
earlier items)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sid_index.data.synthetic.config import SynthConfig
from sid_index.data.synthetic.draws import _dup_mask, _fill_unique, _Groups, _ids, _words
from sid_index.data.vocabulary import (
    BRANDS,
    BRANDS_PER_TOP,
    COLOR_WEIGHTS,
    COLORS,
    LEAF_SUB,
    LEAF_TOP,
    LEAVES,
    MATERIAL_NAMES,
    MATERIALS,
    SIZE_NAMES,
    SIZES,
    SUBS,
    TOPS,
)

# ----------------------------------------------------------------------------- catalog


@dataclass
class _Catalog:
    """Integer-coded items (indices into the vocabularies) plus the Arrow catalog table."""

    leaf: np.ndarray
    sub: np.ndarray
    top: np.ndarray
    brand: np.ndarray
    color: np.ndarray
    material: np.ndarray
    size: np.ndarray
    popularity: np.ndarray
    table: pa.Table
    by_top: _Groups
    by_top_uniform: _Groups
    by_sub: _Groups
    by_leaf: _Groups

    @property
    def n(self) -> int:
        return len(self.leaf)


def _choose_leaves(rng: np.random.Generator, k: int) -> np.ndarray:
    """Whole subcategories in random order until k leaves: keeps siblings (relevance 1) together."""
    chosen: list[int] = []
    for sub in rng.permutation(len(SUBS)):
        chosen.extend(np.flatnonzero(LEAF_SUB == sub)[: k - len(chosen)])
        if len(chosen) >= k:
            break
    return np.array(sorted(chosen))


def _pick(rng, group: np.ndarray, vocab: list[str], lists: list[list[str]]) -> np.ndarray:
    """For each item, a uniform pick (index into vocab) from the word list of its group."""
    width = max(len(w) for w in lists)
    padded = np.array([[vocab.index(w) for w in ws] + [0] * (width - len(ws)) for ws in lists])
    counts = np.array([len(w) for w in lists])
    return padded[group, (rng.random(len(group)) * counts[group]).astype(np.int64)]


def _make_catalog(cfg: SynthConfig, rng: np.random.Generator) -> _Catalog:
    n, leaves = cfg.items, _choose_leaves(rng, cfg.n_leaves())
    # every chosen leaf gets one item, the rest by gamma-distributed leaf weights (uneven sizes)
    w = rng.gamma(2.0, size=len(leaves))
    leaf = np.concatenate([leaves, leaves[rng.choice(len(leaves), size=n - len(leaves), p=w / w.sum())]])
    leaf = leaf[rng.permutation(n)]  # sku order says nothing about the category
    sub, top = LEAF_SUB[leaf], LEAF_TOP[leaf]

    brand_sets = [list(rng.choice(BRANDS, size=rng.integers(*BRANDS_PER_TOP, endpoint=True), replace=False))
                  for _ in TOPS]
    brand = _pick(rng, top, BRANDS, brand_sets)
    color = rng.choice(len(COLORS), size=n, p=COLOR_WEIGHTS / COLOR_WEIGHTS.sum())
    material = _pick(rng, top, MATERIAL_NAMES, [MATERIALS[t] for t in TOPS])
    size = _pick(rng, sub, SIZE_NAMES, [SIZES[s] for s in SUBS])
    popularity = (rng.permutation(n) + 1.0) ** (-cfg.popularity_exponent)

    b, c, m = _words(BRANDS, brand), _words(COLORS, color), _words(MATERIAL_NAMES, material)
    s = _words(SIZE_NAMES, size)
    noun, subw, topw = _words(LEAVES, leaf), _words(SUBS, sub), _words(TOPS, top)
    join = pc.binary_join_element_wise
    title = join(b, c, m, noun, s, " ")
    templates = [
        lambda b, c, m, s, noun, subw, topw: join(
            b, " ", noun, " in ", c, " ", m, ", size ", s, ". From our ", subw, " range in ", topw, ".", ""),
        lambda b, c, m, s, noun, subw, topw: join(
            "A ", c, " ", m, " ", noun, " by ", b, " (", s, ") for everyday use; part of ", topw, " > ",
            subw, ".", ""),
        lambda b, c, m, s, noun, subw, topw: join(
            b, "'s ", m, " ", noun, " in ", c, ", ", s, ". Shop more ", subw, " in ", topw, ".", ""),
    ]
    # each description template is built only for its own items (string joins dominate at 1M items)
    tid = rng.integers(len(templates), size=n)
    order = np.argsort(tid, kind="stable")
    bounds = np.searchsorted(tid[order], np.arange(len(templates) + 1))
    parts = []
    for k, make in enumerate(templates):
        idx = pa.array(order[bounds[k] : bounds[k + 1]])
        parts.append(make(*(a.take(idx) for a in (b, c, m, s, noun, subw, topw))))
    text = pa.concat_arrays(parts).take(pa.array(np.argsort(order)))
    table = pa.table(
        {
            "sku_id": _ids("S", n),
            "title": title,
            "text": text,
            "category": join(topw, subw, noun, " > "),
            "brand": b,
            "popularity": pa.array(popularity),
        }
    )
    return _Catalog(
        leaf=leaf, sub=sub, top=top, brand=brand, color=color, material=material, size=size,
        popularity=popularity, table=table,
        by_top=_Groups(top, popularity, len(TOPS)),
        by_top_uniform=_Groups(top, np.ones(n), len(TOPS)),
        by_sub=_Groups(sub, popularity, len(SUBS)),
        by_leaf=_Groups(leaf, popularity, len(LEAVES)),
    )


# ----------------------------------------------------------------------------- users


@dataclass
class _Users:
    prefs: np.ndarray  # (users, max_preferred) top ids, first n_prefs valid
    n_prefs: np.ndarray
    history_cap: np.ndarray  # longest history of a user's sessions
    timeline: np.ndarray  # (users, max_history) earlier items, oldest first
    segment: np.ndarray


def _make_users(cfg: SynthConfig, cat: _Catalog, rng: np.random.Generator) -> _Users:
    u = cfg.users
    tops = np.flatnonzero(cat.by_top.size(np.arange(len(TOPS))) > 0)  # small catalogs use few tops
    k = min(cfg.max_preferred_categories, len(tops))
    n_prefs = rng.integers(1, k, endpoint=True, size=u)
    prefs = tops[np.argsort(rng.random((u, len(tops))), axis=1)[:, :k]]
    h = cfg.max_history
    pick = (rng.random((u, h)) * n_prefs[:, None]).astype(np.int64)
    tl_top = np.take_along_axis(prefs, pick, axis=1)
    timeline = cat.by_top.sample(rng, tl_top.ravel()).reshape(u, h)
    # mostly distinct items: Zipf popularity would otherwise repeat the same few hits
    _fill_unique(timeline, _dup_mask(timeline), lambda r, c: cat.by_top.sample(rng, tl_top[r, c]), rounds=10)
    cap = rng.integers(0, h, endpoint=True, size=u)
    segment = np.searchsorted(np.array([0, h / 3, 2 * h / 3]), cap, "left") if h else np.zeros(u, np.int64)
    return _Users(prefs=prefs, n_prefs=n_prefs, history_cap=cap, timeline=timeline, segment=segment)
