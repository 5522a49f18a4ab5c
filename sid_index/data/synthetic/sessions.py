"""Sessions: hidden intents -> queries -> a noisy ranker's exposure list -> position-biased clicks and orders;
then the optional calibration of the pseudo-negative share."""

from __future__ import annotations

from typing import Any

import numpy as np

from sid_index.data.schema import RELEVANT_GRADE
from sid_index.data.synthetic.catalog import _Catalog
from sid_index.data.synthetic.draws import _fallback_fill, _fill_unique
from sid_index.data.vocabulary import (
    ATTRS,
    BRANDS,
    COLORS,
    LEAVES,
    MATERIAL_NAMES,
    SYNONYMS,
    TOPS,
)
from sid_index.errors import RadgrError

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
