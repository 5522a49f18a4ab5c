"""Seeded synthetic catalog and sessions that keep the truth: the embedded default dataset.

Real logs never say which shown-but-unclicked items were in fact relevant. This generator
does: every session has a hidden *intent* (a leaf category and 0-2 attributes), every item
a graded true relevance to it, and clicks come from a position-based click model. The
exposure column keeps position, true relevance, click and order of every shown item, so
experiments can measure -- and, with ``pseudo_negative_share``, set -- how many negatives
are pseudo-negatives (relevant, shown, not clicked).

Pipeline (all numpy-vectorised; one Python loop over sessions for query text):

1. catalog: 3-level category tree x brand/color/material/size vocabularies (`sid_index.data.vocabulary`),
   Zipf popularity;
2. users: 1-3 preferred top categories and a timeline of earlier items from them;
3. sessions: intent -> query -> noisy ranker -> exposure list -> clicks/orders;
4. optional calibration of the pseudo-negative share (``_calibrate_pseudo_negatives``);
5. 80/10/10 split by session.

Relevance of item i to an intent: 3 = same leaf and every intent attribute matches,
2 = same leaf otherwise, 1 = same subcategory, 0 = anything else.

Click model (position-based): P(click) = examine(p) * attract(rel) with examine(p) = p^-eta and
attract(rel) = click_noise + (attract_max - click_noise) * (2^rel - 1) / 7; after a click,
P(order) = order_rate * rel / 3. Positives are clicks (grade 2 if ordered, else 1), exposed
negatives are shown-not-clicked items; pseudo-negatives are negatives with relevance >= 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sid_index.data.schema import EXPOSURE_TYPE, POSITIVE_TYPE, RELEVANT_GRADE, SESSION_SCHEMA, write_dataset
from sid_index.data.vocabulary import (
    ATTRS,
    BRANDS,
    BRANDS_PER_TOP,
    COLOR_WEIGHTS,
    COLORS,
    LEAF_SUB,
    LEAF_TOP,
    LEAVES,
    MATERIAL_NAMES,
    MATERIALS,
    SEGMENTS,
    SIZE_NAMES,
    SIZES,
    SUBS,
    SYNONYMS,
    TOPS,
    TREE,
)
from sid_index.errors import RadgrError, make_config

# ----------------------------------------------------------------------------- config

Prob = Annotated[float, Field(ge=0.0, le=1.0)]


class SynthConfig(BaseModel):
    """Every knob of the generator; stored verbatim in dataset.json so a dataset can be re-made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="same settings + seed give identical tables")
    # catalog
    items: int = Field(2000, gt=0, description="catalog size")
    leaves: int | None = Field(None, gt=0, description="leaf categories used; default scales with items")
    popularity_exponent: float = Field(1.0, ge=0.0, description="Zipf exponent of popularity by rank")
    # users
    users: int = Field(500, gt=0, description="users")
    max_preferred_categories: int = Field(3, ge=1, le=len(TREE), description="top categories a user prefers, "
                                          "at most")
    max_history: int = Field(20, ge=0, description="longest history (earlier items) of a session")
    # sessions and queries
    sessions: int = Field(5000, gt=0, description="sessions, each with a click unless keep_no_click")
    empty_query_rate: Prob = Field(0.05, description="share of sessions without a query (recommendation)")
    preference_bias: Prob = Field(0.8, description="P(intent is in one of the user's preferred categories)")
    attribute_probs: tuple[Prob, Prob, Prob] = Field((0.4, 0.4, 0.2), description="P(0/1/2 attributes)",
                                                     json_schema_extra={"comma_separated": True})
    query_dropout: Prob = Field(0.15, description="P(an attribute word is left out of the query)")
    query_synonym_rate: Prob = Field(0.1, description="P(a query uses a synonym where one exists)")
    query_typo_rate: Prob = Field(0.03, description="P(a query has one misspelt word)")
    # exposure (noisy ranker)
    exposure_length: int = Field(10, ge=1, description="items shown per session")
    ranker_noise: float = Field(1.0, ge=0.0, description="std of the Gaussian noise added to relevance")
    leaf_share: Prob = Field(0.3, description="ranker candidates from the intent's leaf, x exposure_length")
    subcategory_share: Prob = Field(0.2, description="ranker candidates from the intent's subcategory")
    # click model
    position_bias: float = Field(1.0, ge=0.0, description="eta: P(examine position p) = p^-eta")
    click_noise: Prob = Field(0.05, description="attractiveness of an irrelevant item (relevance 0)")
    attract_max: Prob = Field(0.9, description="attractiveness of a perfect match (relevance 3)")
    order_rate: Prob = Field(0.3, description="P(order | click) = order_rate * relevance / 3")
    keep_no_click: bool = Field(False, description="keep sessions without a click (else redraw them)")
    pseudo_negative_share: Prob | None = Field(None, description="target share of relevant negatives")
    # splits
    valid_fraction: Prob = Field(0.1, description="share of sessions in the valid split")
    test_fraction: Prob = Field(0.1, description="share of sessions in the test split")

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        if self.items < 5 * self.exposure_length:
            raise ValueError(f"items ({self.items}) must be >= 5 x exposure_length ({self.exposure_length})")
        if self.leaves is not None and self.leaves > min(len(LEAVES), self.items):
            raise ValueError(f"leaves must be at most {min(len(LEAVES), self.items)}")
        if abs(sum(self.attribute_probs) - 1.0) > 1e-6:
            raise ValueError(f"attribute_probs must sum to 1, got {sum(self.attribute_probs):g}")
        if self.click_noise > self.attract_max:
            raise ValueError("click_noise must not exceed attract_max (relevant items attract more)")
        if not self.keep_no_click and self.attract_max == 0:
            raise ValueError("with attract_max = 0 no session gets a click; pass keep_no_click")
        if self.max_history == 0 and self.empty_query_rate > 0:
            raise ValueError("empty_query_rate > 0 needs max_history >= 1 (sessions need a query or history)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must be below 1")
        return self

    def n_leaves(self) -> int:
        """Leaves used: ~25 items per leaf so small catalogs still have crowded categories."""
        return self.leaves or int(min(len(LEAVES), max(10, self.items // 25)))

    def attract(self, rel: np.ndarray | float) -> np.ndarray:
        """Attractiveness by grade: click_noise at 0 rising exponentially to attract_max at 3."""
        gain = (2.0 ** np.asarray(rel, dtype=np.float64) - 1.0) / 7.0
        return self.click_noise + (self.attract_max - self.click_noise) * gain

    def examine(self, position: np.ndarray) -> np.ndarray:
        """P(a shown item is looked at), by 1-based position."""
        return np.asarray(position, dtype=np.float64) ** (-self.position_bias)


def config_from_options(**options: Any) -> SynthConfig:
    """Build a config from CLI options; a bad value becomes a one-line RadgrError naming the flag."""
    return make_config(SynthConfig, "synthetic-data", **{k: v for k, v in options.items() if v is not None})


# ----------------------------------------------------------------------------- helpers


class _Groups:
    """Items grouped by an integer key, for weighted draws within a group in O(log n) each."""

    def __init__(self, keys: np.ndarray, weights: np.ndarray, n_groups: int):
        self.order = np.argsort(keys, kind="stable")
        sorted_keys = keys[self.order]
        self.start = np.searchsorted(sorted_keys, np.arange(n_groups), "left")
        self.end = np.searchsorted(sorted_keys, np.arange(n_groups), "right")
        self.cum = np.concatenate([[0.0], np.cumsum(weights[self.order])])

    def size(self, g: np.ndarray) -> np.ndarray:
        return self.end[g] - self.start[g]

    def sample(self, rng: np.random.Generator, g: np.ndarray) -> np.ndarray:
        lo, hi = self.cum[self.start[g]], self.cum[self.end[g]]
        pos = np.searchsorted(self.cum, lo + rng.random(len(g)) * (hi - lo), "right") - 1
        return self.order[np.clip(pos, self.start[g], self.end[g] - 1)]

    def members(self, g: int) -> np.ndarray:
        return self.order[self.start[g] : self.end[g]]


def _dup_mask(items: np.ndarray) -> np.ndarray:
    """Entries (>= 0) whose value occurs more than once in their row."""
    order = np.argsort(items, axis=1, kind="stable")
    s = np.take_along_axis(items, order, axis=1)
    eq = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    flag = np.zeros(items.shape, dtype=bool)
    flag[:, 1:] |= eq
    flag[:, :-1] |= eq
    out = np.zeros_like(flag)
    np.put_along_axis(out, order, flag, axis=1)
    return out


def _fill_unique(items, todo, draw, reject=None, rounds: int = 30) -> np.ndarray:
    """Redraw ``items[todo]`` (in place) until no redrawn entry repeats in its row or is rejected.

    ``draw(rows, cols)`` gives candidates, ``reject(rows, values)`` flags unacceptable ones.
    Rejection sampling converges fast when the allowed pool is large; returns what is left over.
    """
    todo = todo.copy()
    for _ in range(rounds):
        r, c = np.nonzero(todo)
        if r.size == 0:
            break
        items[r, c] = draw(r, c)
        rows = np.unique(r)
        bad = _dup_mask(items[rows]) & todo[rows]
        if reject is not None:
            rb = np.zeros_like(todo)
            rb[r, c] = reject(r, items[r, c])
            bad |= rb[rows]
        todo[:] = False
        todo[rows] = bad
    return todo


def _fallback_fill(rng, items, todo, pool) -> None:
    """Exact fill for the few entries rejection sampling left: a uniform pick from what is still free."""
    for row in np.unique(np.nonzero(todo)[0]):
        cols = np.flatnonzero(todo[row])
        keep = np.delete(items[row], cols)
        free = np.setdiff1d(pool(row), keep)
        pick = rng.choice(free, size=min(len(cols), len(free)), replace=False) if len(free) else []
        items[row, cols] = -1
        items[row, cols[: len(pick)]] = pick


def _ragged(values: pa.Array, counts: np.ndarray) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _ids(prefix: str, n: int, width: int = 7) -> pa.Array:
    digits = pa.array(np.arange(1, n + 1)).cast(pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(digits, max(width, len(str(n))), "0"), "")


def _words(vocab: list[str], idx: np.ndarray) -> pa.Array:
    return pa.array(vocab).take(pa.array(idx))


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


# ----------------------------------------------------------------------------- sessions


def _relevance(cat: _Catalog, items: np.ndarray, intent: dict[str, np.ndarray]) -> np.ndarray:
    """Graded truth (0..3) of items (n, k) for each row's intent; -1 entries get 0."""
    it = np.where(items >= 0, items, 0)
    ok = np.ones(items.shape, dtype=bool)
    for a in ATTRS:
        want = intent[a][:, None]
        ok &= (want < 0) | (getattr(cat, a)[it] == want)
    same_leaf = cat.leaf[it] == intent["leaf"][:, None]
    rel = np.where(same_leaf, np.where(ok, 3, 2), np.where(cat.sub[it] == intent["sub"][:, None], 1, 0))
    return np.where(items >= 0, rel, 0).astype(np.int8)


def _draw_intents(cfg, cat, users, rng, n) -> dict[str, np.ndarray]:
    """User, history length and hidden intent (leaf + attributes) of n sessions."""
    user = rng.integers(cfg.users, size=n)
    empty = rng.random(n) < cfg.empty_query_rate
    k = (rng.random(n) * (users.history_cap[user] + 1)).astype(np.int64)
    k = np.where(empty, np.maximum(k, 1), k)
    # query sessions: a top category (usually a preferred one), then an anchor item in it
    j = (rng.random(n) * users.n_prefs[user]).astype(np.int64)
    pref = users.prefs[user, j]
    tops = np.flatnonzero(cat.by_top.size(np.arange(len(TOPS))) > 0)
    top = np.where(rng.random(n) < cfg.preference_bias, pref, tops[rng.integers(len(tops), size=n)])
    # leaf in proportion to its size (uniform item of the top), then a popular item of that leaf:
    # drawing the anchor straight by popularity would make one Zipf head item most queries
    anchor = cat.by_leaf.sample(rng, cat.leaf[cat.by_top_uniform.sample(rng, top)])
    # recommendation sessions: more of the leaf the user looked at last
    if cfg.max_history:
        last = users.timeline[user, np.maximum(k - 1, 0)]
        anchor = np.where(empty, cat.by_leaf.sample(rng, cat.leaf[last]), anchor)
    p_attr = np.asarray(cfg.attribute_probs) / sum(cfg.attribute_probs)
    n_attr = np.where(empty, 0, rng.choice(3, size=n, p=p_attr))
    attr_rank = np.argsort(np.argsort(rng.random((n, 3)), axis=1), axis=1)
    intent = {"user": user, "empty": empty, "k": k, "anchor": anchor,
              "leaf": cat.leaf[anchor], "sub": cat.sub[anchor]}
    for j, a in enumerate(ATTRS):
        intent[a] = np.where(attr_rank[:, j] < n_attr, getattr(cat, a)[anchor], -1)
    return intent


def _typo(word: str, kind: float, at: float) -> str:
    i = int(at * (len(word) - 1))
    if kind < 1 / 3:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # swap neighbours
    if kind < 2 / 3:
        return word[:i] + word[i + 1 :]  # drop a letter
    return word[: i + 1] + word[i:]  # double a letter


def _queries(cfg, intent, rng) -> list[str]:
    """Intent words (brand, color, material, product) with dropout, synonyms and typos."""
    n = len(intent["leaf"])
    r = rng.random((n, 16))  # fixed budget of uniforms per session keeps the stream aligned
    out = []
    for i in range(n):
        if intent["empty"][i]:
            out.append("")
            continue
        phrases = [x.lower() for x in (
            BRANDS[intent["brand"][i]] if intent["brand"][i] >= 0 else None,
            COLORS[intent["color"][i]] if intent["color"][i] >= 0 else None,
            MATERIAL_NAMES[intent["material"][i]] if intent["material"][i] >= 0 else None,
            LEAVES[intent["leaf"][i]],
        ) if x]
        if r[i, 0] < cfg.query_synonym_rate:
            has = [j for j, p in enumerate(phrases) if p in SYNONYMS]
            if has:
                j = has[int(r[i, 1] * len(has))]
                alts = SYNONYMS[phrases[j]]
                phrases[j] = alts[int(r[i, 2] * len(alts))]
        # dropout hits whole attribute phrases only: the product noun is what shoppers always type
        kept = [p for p, u in zip(phrases[:-1], r[i, 6:], strict=False) if u >= cfg.query_dropout]
        kept = " ".join([*kept, phrases[-1]]).split()
        if r[i, 3] < cfg.query_typo_rate:
            long = [j for j, t in enumerate(kept) if len(t) >= 4]
            if long:
                j = long[int(r[i, 4] * len(long))]
                kept[j] = _typo(kept[j], r[i, 5], r[i, 4])
        out.append(" ".join(kept))
    return out


def _exposure(cfg, cat, intent, rng) -> np.ndarray:
    """What a noisy ranker shows: candidates from the leaf, the subcategory and the whole catalog,
    ordered by true relevance + N(0, ranker_noise); returns item indices (n, exposure_length)."""
    n, L = len(intent["leaf"]), cfg.exposure_length
    n_leaf, n_sub = round(cfg.leaf_share * L), round(cfg.subcategory_share * L)
    kind = np.concatenate([[0], np.full(n_leaf, 1), np.full(n_sub, 2), np.full(L, 3)])
    cand = np.empty((n, len(kind)), dtype=np.int64)
    cand[:, 0] = intent["anchor"]

    def draw(r, c):
        out = rng.integers(cat.n, size=len(r))
        for k_, groups, key in ((1, cat.by_leaf, "leaf"), (2, cat.by_sub, "sub")):
            m = kind[c] == k_
            out[m] = groups.sample(rng, intent[key][r[m]])
        return out

    todo = np.zeros(cand.shape, dtype=bool)
    todo[:, 1:] = True
    left = _fill_unique(cand, todo, draw, rounds=8)
    cand[left & (kind[None, :] < 3)] = -1  # small groups run out of distinct items: drop those candidates
    left &= kind[None, :] == 3
    if left.any():
        left = _fill_unique(cand, left, draw, rounds=50)
        _fallback_fill(rng, cand, left, lambda row: np.arange(cat.n))
    score = _relevance(cat, cand, intent) + cfg.ranker_noise * rng.standard_normal(cand.shape)
    score[cand < 0] = -np.inf
    top = np.argsort(-score, axis=1, kind="stable")[:, :L]
    return np.take_along_axis(cand, top, axis=1)


def _simulate(cfg, cat, users, rng, n) -> dict[str, Any]:
    """n sessions: intent, query, exposure and position-based-model clicks/orders."""
    intent = _draw_intents(cfg, cat, users, rng, n)
    intent["query"] = _queries(cfg, intent, rng)
    items = _exposure(cfg, cat, intent, rng)
    rel = _relevance(cat, items, intent)
    p_click = cfg.examine(np.arange(1, cfg.exposure_length + 1))[None, :] * cfg.attract(rel)
    clicked = rng.random(items.shape) < p_click
    ordered = clicked & (rng.random(items.shape) < cfg.order_rate * rel / 3.0)
    return {**intent, "items": items, "rel": rel, "clicked": clicked, "ordered": ordered}


def _take(batch: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    idx = np.flatnonzero(keep)
    return {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in batch.items()}


def _concat(parts: list[dict[str, Any]], n: int) -> dict[str, Any]:
    out = {}
    for k in parts[0]:
        if isinstance(parts[0][k], list):
            out[k] = [x for p in parts for x in p[k]][:n]
        else:
            out[k] = np.concatenate([p[k] for p in parts])[:n]
    return out


def _sessions(cfg, cat, users, rng) -> tuple[dict[str, Any], dict[str, int]]:
    """Simulate until cfg.sessions sessions are kept (sessions without a click are redrawn unless kept)."""
    parts, have, drawn, dropped, rate = [], 0, 0, 0, 1.0
    while have < cfg.sessions:
        size = int((cfg.sessions - have) / max(rate, 0.02) * 1.1) + 16
        batch = _simulate(cfg, cat, users, rng, size)
        keep = np.ones(size, bool) if cfg.keep_no_click else batch["clicked"].any(axis=1)
        drawn += size
        dropped += size - int(keep.sum())
        parts.append(_take(batch, keep))
        have += int(keep.sum())
        rate = max(have, 1) / drawn
        if drawn > 50 * cfg.sessions + 10_000 and have < cfg.sessions:
            raise RadgrError("too few sessions get a click: raise attract_max/click_noise or keep_no_click")
    return _concat(parts, cfg.sessions), {"sessions_simulated": drawn, "sessions_dropped_no_click": dropped}


# ----------------------------------------------------------------------------- calibration


def _calibrate_pseudo_negatives(cfg, cat, s, rng) -> dict[str, Any]:
    """Re-compose the *unclicked* slots so exactly round(S * negatives) of them are pseudo-negatives.

    Clicks, orders and the number of negatives stay as simulated: datasets made with different
    targets (same seed) have identical positives and differ only in how noisy their negatives are.

    - Fewer than the natural count: keep a uniform random subset of the natural pseudo-negatives
      (their positions stay the click model's), swap the rest for random items outside the leaf.
    - More: put unused items of the intent's leaf into unclicked, non-relevant slots, chosen by
      weighted sampling without replacement with weight P(no click | relevance 2 at p) =
      1 - examine(p) * attract(2) -- where the click model says a relevant item most likely goes
      unclicked. A session takes at most as many as its leaf has unused items.
    A target the catalog cannot meet (tiny leaves, or one leaf everywhere) is recorded as ``missed``.
    """
    items, rel, clicked = s["items"], s["rel"], s["clicked"]
    before = items.copy()
    neg = ~clicked
    pn = neg & (rel >= RELEVANT_GRADE)
    n_neg, n_nat = int(neg.sum()), int(pn.sum())
    target = int(round(cfg.pseudo_negative_share * n_neg))
    leaf_of_row = s["leaf"]
    if target < n_nat:
        flat = np.flatnonzero(pn)
        drop = np.zeros(items.size, bool)
        drop[rng.choice(flat, size=n_nat - target, replace=False)] = True
        drop = drop.reshape(items.shape)
        left = _fill_unique(items, drop, lambda r, c: rng.integers(cat.n, size=len(r)),
                            reject=lambda r, v: cat.leaf[v] == leaf_of_row[r])
        _fallback_fill(rng, items, left, lambda row: np.flatnonzero(cat.leaf != leaf_of_row[row]))
        # a row whose fallback found nothing keeps -1: put the original item back (counted as shortfall)
        bad = items < 0
        items[bad] = before[bad]
    elif target > n_nat:
        slot = neg & (rel < 2)
        positions = np.arange(1, cfg.exposure_length + 1)
        w = np.clip(1.0 - cfg.examine(positions) * cfg.attract(2), 1e-12, None)
        key = np.log(w)[None, :] - np.log(-np.log(rng.random(items.shape)))  # Gumbel top-k
        key[~slot] = -np.inf
        room = cat.by_leaf.size(leaf_of_row) - (rel >= RELEVANT_GRADE).sum(axis=1)  # unused items of the leaf
        rank = np.argsort(np.argsort(-key, axis=1, kind="stable"), axis=1, kind="stable")
        key[rank >= room[:, None]] = -np.inf
        eligible = np.flatnonzero(np.isfinite(key).ravel())
        want = min(target - n_nat, len(eligible))
        chosen = eligible[np.argsort(-key.ravel()[eligible], kind="stable")[:want]]
        add = np.zeros(items.size, bool)
        add[chosen] = True
        add = add.reshape(items.shape)
        left = _fill_unique(items, add, lambda r, c: cat.by_leaf.sample(rng, leaf_of_row[r]))
        _fallback_fill(rng, items, left, lambda row: cat.by_leaf.members(leaf_of_row[row]))
    s["rel"] = _relevance(cat, items, s)
    achieved = int((neg & (s["rel"] >= RELEVANT_GRADE)).sum())
    return {"target_share": cfg.pseudo_negative_share, "target_pseudo_negatives": target,
            "pseudo_negatives": achieved, "missed": abs(achieved - target),
            "natural_pseudo_negatives": n_nat, "natural_share": n_nat / n_neg if n_neg else 0.0}


# ----------------------------------------------------------------------------- assembly


def _session_table(cfg, cat, users, s, split) -> pa.Table:
    n, L = len(s["leaf"]), cfg.exposure_length
    sku = cat.table["sku_id"].combine_chunks()
    items, clicked, ordered, rel = s["items"], s["clicked"], s["ordered"], s["rel"]

    hist_mask = np.arange(cfg.max_history)[None, :] < s["k"][:, None]
    hist = sku.take(pa.array(users.timeline[s["user"]][hist_mask]))
    positives = pa.StructArray.from_arrays(
        [sku.take(pa.array(items[clicked])), pa.array(np.where(ordered[clicked], 2.0, 1.0), pa.float32())],
        fields=list(POSITIVE_TYPE),
    )
    exposure = pa.StructArray.from_arrays(
        [
            sku.take(pa.array(items.ravel())),
            pa.array(np.tile(np.arange(1, L + 1, dtype=np.int32), n)),
            pa.array(rel.ravel().astype(np.float32)),
            pa.array(clicked.ravel()),
            pa.array(ordered.ravel()),
        ],
        fields=list(EXPOSURE_TYPE),
    )
    user_ids = _ids("U", cfg.users, 6).take(pa.array(s["user"]))
    segments = _words(list(SEGMENTS), users.segment[s["user"]])
    interleave = pa.array(np.stack([np.arange(n), np.arange(n) + n], axis=1).ravel())
    user_kv = pa.MapArray.from_arrays(
        pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
        pa.array(np.tile(["user_id", "segment"], n)),
        pa.concat_arrays([user_ids, segments]).take(interleave),
    )
    return pa.table(
        {
            "session_id": _ids("Q", n),
            "split": pa.array(split),
            "query": pa.array(s["query"], pa.string()),
            "history": _ragged(hist, s["k"]),
            "user": user_kv,
            "positives": _ragged(positives, clicked.sum(axis=1)),
            "exposed_negatives": _ragged(sku.take(pa.array(items[~clicked])), (~clicked).sum(axis=1)),
            "ambiguous": _ragged(pa.array([], pa.string()), np.zeros(n, np.int64)),
            "exposure": _ragged(exposure, np.full(n, L)),
        },
        schema=pa.schema([f.with_nullable(True) for f in SESSION_SCHEMA]),  # as load_dataset returns it
    )


def _split(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    n = cfg.sessions
    n_valid, n_test = round(cfg.valid_fraction * n), round(cfg.test_fraction * n)
    split = np.full(n, "train", dtype=object)
    perm = rng.permutation(n)
    split[perm[n - n_valid - n_test : n - n_test]] = "valid"
    split[perm[n - n_test :]] = "test"
    return split


def _truth_stats(cfg, s, counts, calib) -> dict[str, Any]:
    rel, clicked, ordered = s["rel"], s["clicked"], s["ordered"]
    neg = ~clicked
    n_neg, n_click = int(neg.sum()), int(clicked.sum())
    pn = int((neg & (rel >= RELEVANT_GRADE)).sum())
    shown_by_pos = clicked.shape[0]
    stats = {
        **counts,
        "sessions_without_click": int((~clicked.any(axis=1)).sum()),
        "empty_query_sessions": int(s["empty"].sum()),
        "empty_history_sessions": int((s["k"] == 0).sum()),
        "leaves_used": cfg.n_leaves(),
        "clicks": n_click,
        "orders": int(ordered.sum()),
        "exposed_by_relevance": {str(g): int((rel == g).sum()) for g in range(4)},
        "ctr_by_relevance": {str(g): round(float(clicked[rel == g].mean()), 4) if (rel == g).any() else None
                             for g in range(4)},
        "ctr_by_position": [round(float(x), 4) for x in clicked.sum(axis=0) / shown_by_pos],
        "pseudo_negatives": pn,
        "pseudo_negative_share": round(pn / n_neg, 6) if n_neg else 0.0,
        "false_positives": int((clicked & (rel == 0)).sum()),
        "false_positive_share": round(int((clicked & (rel == 0)).sum()) / n_click, 6) if n_click else 0.0,
    }
    if calib is not None:
        stats["pseudo_negative_calibration"] = {
            k: (round(v, 6) if isinstance(v, float) else v) for k, v in calib.items()
        }
    return stats


@dataclass
class Synthetic:
    """A generated dataset plus the hidden truth (item attributes, session intents) for tests."""

    catalog: pa.Table
    sessions: pa.Table
    info: dict[str, Any]
    items: pa.Table  # sku_id, category, brand, color, material, size
    intents: pa.Table  # session_id, category (leaf path), brand, color, material (null = not asked)


def synthesize(config: SynthConfig | None = None, **overrides: Any) -> Synthetic:
    """Generate catalog, sessions and truth. Independent streams per stage: the catalog depends
    only on the seed and catalog knobs, and the calibration never moves clicks."""
    cfg = config or SynthConfig()
    if overrides:
        cfg = SynthConfig(**{**cfg.model_dump(), **overrides})  # validated like any other config
    r_cat, r_users, r_sess, r_calib, r_split = (np.random.default_rng(s) for s in
                                                 np.random.SeedSequence(cfg.seed).spawn(5))
    cat = _make_catalog(cfg, r_cat)
    users = _make_users(cfg, cat, r_users)
    s, counts = _sessions(cfg, cat, users, r_sess)
    calib = None
    if cfg.pseudo_negative_share is not None:
        calib = _calibrate_pseudo_negatives(cfg, cat, s, r_calib)
    sessions = _session_table(cfg, cat, users, s, _split(cfg, r_split))
    info = {
        "name": "synthetic",
        "source": "sid_index.data.synthetic",
        "config": cfg.model_dump(mode="json"),
        "synthetic_stats": _truth_stats(cfg, s, counts, calib),
    }

    def opt(vocab, idx):
        return pa.array([vocab[i] if i >= 0 else None for i in idx], pa.string())

    items = pa.table({
        "sku_id": cat.table["sku_id"], "category": cat.table["category"], "brand": cat.table["brand"],
        "color": _words(COLORS, cat.color), "material": _words(MATERIAL_NAMES, cat.material),
        "size": _words(SIZE_NAMES, cat.size),
    })
    leaf_path = pc.binary_join_element_wise(_words(TOPS, LEAF_TOP[s["leaf"]]), _words(SUBS, s["sub"]),
                                            _words(LEAVES, s["leaf"]), " > ")
    intents = pa.table({
        "session_id": sessions["session_id"], "category": leaf_path, "brand": opt(BRANDS, s["brand"]),
        "color": opt(COLORS, s["color"]), "material": opt(MATERIAL_NAMES, s["material"]),
    })
    return Synthetic(catalog=cat.table, sessions=sessions, info=info, items=items, intents=intents)


def make_synthetic(config: SynthConfig | None = None, **overrides: Any) -> tuple[pa.Table, pa.Table, dict]:
    """(catalog, sessions, info) in the interchange schema: ``make_synthetic(items=300, sessions=200)``."""
    syn = synthesize(config, **overrides)
    return syn.catalog, syn.sessions, syn.info


def write_synthetic(out: str | Path, config: SynthConfig, overwrite: bool = False) -> tuple[Path, dict]:
    """Generate and write a dataset directory atomically; returns its path and dataset.json's content."""
    out = Path(out)
    if overwrite and out.exists() and not (out / "dataset.json").exists() and any(out.iterdir()):
        raise RadgrError(f"{out} exists and is not a dataset directory; refusing to replace it")
    catalog, sessions, info = make_synthetic(config)
    path = write_dataset(out, catalog, sessions, info, overwrite=overwrite)
    return path, json.loads((path / "dataset.json").read_text())
