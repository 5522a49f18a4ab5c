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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sid_index.data.schema import EXPOSURE_TYPE, POSITIVE_TYPE, RELEVANT_GRADE, SESSION_SCHEMA, write_dataset
from sid_index.data.synthetic.catalog import _make_catalog, _make_users
from sid_index.data.synthetic.config import SynthConfig, config_from_options
from sid_index.data.synthetic.draws import _ids, _ragged, _words
from sid_index.data.synthetic.sessions import _calibrate_pseudo_negatives, _sessions
from sid_index.data.vocabulary import (
    BRANDS,
    COLORS,
    LEAF_TOP,
    LEAVES,
    MATERIAL_NAMES,
    SEGMENTS,
    SIZE_NAMES,
    SUBS,
    TOPS,
)
from sid_index.errors import RadgrError

__all__ = ["SynthConfig", "Synthetic", "config_from_options", "make_synthetic", "synthesize", "write_synthetic"]

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
