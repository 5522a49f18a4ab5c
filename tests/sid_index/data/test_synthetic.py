"""The synthetic generator: determinism, schema, the relevance rule, the click model and
the pseudo-negative calibration, checked against independent recomputations."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from sid_index.data.schema import load_dataset, write_dataset
from sid_index.data.synthetic import (
    SynthConfig,
    config_from_options,
    make_synthetic,
    synthesize,
)
from sid_index.errors import RadgrError

RADGR = Path(sys.executable).with_name("radgr")
SMALL = dict(items=400, sessions=600, users=80)


@pytest.fixture(scope="module")
def syn():
    return synthesize(items=2000, sessions=3000, users=300, seed=7)


def exposure_arrays(sessions: pa.Table) -> dict[str, np.ndarray]:
    """The exposure column as (sessions, L) arrays."""
    flat = pa.concat_arrays([c.flatten() for c in sessions["exposure"].chunks])
    n = sessions.num_rows
    out = {name: flat.field(name).to_numpy(zero_copy_only=False).reshape(n, -1) for name in
           ("sku_id", "position", "relevance", "clicked", "ordered")}
    return out


def test_deterministic_and_seed_sensitive():
    a, b = synthesize(**SMALL), synthesize(**SMALL)
    assert a.catalog.equals(b.catalog) and a.sessions.equals(b.sessions)
    assert a.info == b.info
    c = synthesize(**SMALL, seed=1)
    assert not c.catalog.equals(a.catalog)
    assert not c.sessions.equals(a.sessions)
    # the catalog depends only on the seed and catalog knobs: session knobs leave it alone
    assert synthesize(**{**SMALL, "sessions": 100, "position_bias": 2.0}).catalog.equals(a.catalog)


def test_writes_a_valid_dataset(tmp_path):
    cfg = SynthConfig(**SMALL)
    catalog, sessions, info = make_synthetic(cfg)
    write_dataset(tmp_path / "ds", catalog, sessions, info)
    ds = load_dataset(tmp_path / "ds")
    write_dataset(tmp_path / "again", *make_synthetic(cfg))
    for name in ("catalog.parquet", "sessions.parquet", "dataset.json"):  # byte-identical files
        assert (tmp_path / "ds" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert ds.name == "synthetic"
    assert SynthConfig(**ds.info["config"]) == cfg
    assert ds.catalog.equals(catalog) and ds.sessions.equals(sessions)
    st = ds.stats()
    assert st["skus"] == 400 and st["sessions"] == 600
    assert st["sessions_by_split"] == {"train": 480, "valid": 60, "test": 60}
    assert st["sessions_with_positives"] == 600  # no-click sessions are redrawn by default
    assert "pseudo_negative_share" in ds.info["synthetic_stats"]
    row = catalog.slice(0, 1).to_pylist()[0]
    assert row["sku_id"] == "S0000001"
    assert row["category"].count(" > ") == 2
    assert row["title"].startswith(row["brand"] + " ") and row["category"].split(" > ")[2] in row["title"]


def test_sessions_have_query_or_history_and_consistent_labels(syn):
    s = syn.sessions
    queries = s["query"].to_pylist()
    hist_len = np.array([len(h) for h in s["history"].to_pylist()])
    assert all(q or h for q, h in zip(queries, hist_len, strict=True))
    n = s.num_rows
    empty = sum(1 for q in queries if not q)
    assert 0.02 * n < empty < 0.09 * n  # default empty_query_rate 0.05
    assert (hist_len == 0).any() and hist_len.max() <= 20
    users = [dict(u) for u in s["user"].to_pylist()]
    assert all(set(u) == {"user_id", "segment"} for u in users)

    e = exposure_arrays(s)
    assert (e["position"] == np.arange(1, 11)).all()
    rows = zip(s["positives"].to_pylist(), s["exposed_negatives"].to_pylist(), e["sku_id"], e["clicked"],
               e["ordered"], strict=True)
    for i, (pos, neg, skus, clicked, ordered) in enumerate(rows):
        assert len(set(skus)) == len(skus), f"session {i} shows an item twice"
        assert [p["sku_id"] for p in pos] == list(skus[clicked])
        assert [p["grade"] for p in pos] == [2.0 if o else 1.0 for o in ordered[clicked]]
        assert neg == list(skus[~clicked])
        assert not (ordered & ~clicked).any()
    assert e["clicked"].any(axis=1).all()


def test_relevance_matches_independent_recomputation(syn):
    items = {r["sku_id"]: r for r in syn.items.to_pylist()}
    catalog = {r["sku_id"]: r for r in syn.catalog.to_pylist()}
    for sku, it in items.items():  # the truth table agrees with the catalog a model sees
        assert catalog[sku]["category"] == it["category"] and catalog[sku]["brand"] == it["brand"]
        assert f" {it['color']} {it['material']} " in f" {catalog[sku]['title']} "

    intents = syn.intents.to_pylist()
    e = exposure_arrays(syn.sessions)
    grades = Counter()
    for intent, skus, rels in zip(intents, e["sku_id"], e["relevance"], strict=True):
        top, sub, leaf = intent["category"].split(" > ")
        for sku, rel in zip(skus, rels, strict=True):
            it = items[sku]
            path = it["category"].split(" > ")
            if path == [top, sub, leaf]:
                ok = all(intent[a] is None or intent[a] == it[a] for a in ("brand", "color", "material"))
                want = 3 if ok else 2
            else:
                want = 1 if path[:2] == [top, sub] else 0
            assert rel == want, (intent, it)
            grades[want] += 1
    assert min(grades.values()) > 500  # every grade occurs often
    # queries speak about the intent: the product noun (or a synonym) is in nearly every query
    q = [r["query"] for r in syn.sessions.select(["query"]).to_pylist()]
    hits = sum(intent["category"].split(" > ")[2] in query for intent, query in zip(intents, q, strict=True))
    assert hits > 0.8 * sum(1 for x in q if x)


def test_position_bias_and_attractiveness():
    syn = synthesize(items=2000, sessions=4000, keep_no_click=True, seed=3)
    e = exposure_arrays(syn.sessions)
    rel, clicked = e["relevance"], e["clicked"]
    for g in (2, 3):
        at = {p: clicked[:, p - 1][rel[:, p - 1] == g] for p in (1, 5)}
        assert len(at[1]) > 100 and len(at[5]) > 100
        assert at[1].mean() > 2 * at[5].mean(), g  # examine(5) = 1/5 of examine(1)
    ctr = [clicked[rel == g].mean() for g in range(4)]
    assert ctr == sorted(ctr)
    assert syn.info["synthetic_stats"]["sessions_without_click"] > 0
    # no position bias: position 1 and 5 click alike for equal relevance
    flat = synthesize(items=2000, sessions=4000, keep_no_click=True, position_bias=0.0, seed=3)
    e = exposure_arrays(flat.sessions)
    r1 = e["clicked"][:, 0][e["relevance"][:, 0] == 3].mean()
    r5 = e["clicked"][:, 4][e["relevance"][:, 4] == 3].mean()
    assert abs(r1 - r5) < 0.08


def _pn_share(sessions: pa.Table) -> tuple[float, int]:
    e = exposure_arrays(sessions)
    neg = ~e["clicked"]
    return float((neg & (e["relevance"] >= 2)).sum() / neg.sum()), int(neg.sum())


@pytest.mark.parametrize("target", [0.0, 0.1, 0.3])
def test_pseudo_negative_share_hits_target(syn, target, tmp_path):
    cfg = dict(items=2000, sessions=3000, users=300, seed=7)
    cal = synthesize(**cfg, pseudo_negative_share=target)
    share, n_neg = _pn_share(cal.sessions)
    assert abs(share - target) <= 0.002
    if target == 0.0:
        assert share == 0.0
    st = cal.info["synthetic_stats"]
    assert st["pseudo_negative_share"] == pytest.approx(share, abs=1e-6)
    assert st["pseudo_negative_calibration"]["missed"] == 0
    # only negatives change: the same positives, the same number of negatives, no repeated items
    assert cal.sessions["positives"].equals(syn.sessions["positives"])
    assert n_neg == _pn_share(syn.sessions)[1]
    e = exposure_arrays(cal.sessions)
    assert all(len(set(row)) == len(row) for row in e["sku_id"])
    write_dataset(tmp_path / "ds", cal.catalog, cal.sessions, cal.info)
    assert load_dataset(tmp_path / "ds").sessions.equals(cal.sessions)


def test_natural_pseudo_negative_share_recorded(syn):
    st = syn.info["synthetic_stats"]
    share, _ = _pn_share(syn.sessions)
    assert st["pseudo_negative_share"] == pytest.approx(share, abs=1e-6)
    assert 0.1 < share < 0.6
    e = exposure_arrays(syn.sessions)
    fp = (e["clicked"] & (e["relevance"] == 0)).sum() / e["clicked"].sum()
    assert st["false_positive_share"] == pytest.approx(fp, abs=1e-6)


def test_config_validation_is_clear():
    for bad in ({"items": 0}, {"click_noise": 1.5}, {"attribute_probs": (0.5, 0.5, 0.5)},
                {"items": 20}, {"click_noise": 0.5, "attract_max": 0.4}, {"bogus": 1}):
        with pytest.raises(ValidationError):
            SynthConfig(**bad)
    with pytest.raises(RadgrError) as exc:
        config_from_options(items=0, click_noise=2.0)
    msg = str(exc.value)
    assert "\n" not in msg and "--items" in msg and "--click-noise" in msg
    with pytest.raises(RadgrError, match="exposure_length"):
        config_from_options(items=20)
    with pytest.raises(ValidationError):
        make_synthetic(items=-1)


def test_cli(tmp_path):
    out = tmp_path / "synth"
    args = [str(RADGR), "data", "synth", "--out", str(out), "--items", "300", "--sessions", "200"]
    res = subprocess.run(args, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "pseudo-negative share" in res.stdout
    ds = load_dataset(out)
    assert ds.catalog.num_rows == 300 and ds.sessions.num_rows == 200
    info = json.loads((out / "dataset.json").read_text())
    assert info["config"]["items"] == 300 and info["name"] == "synthetic"

    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr
    res = subprocess.run([*args, "--overwrite", "--pseudo-negative-share", "0.2", "--seed", "4",
                          "--attribute-probs", "0.5,0.5,0"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    info = load_dataset(out).info
    assert info["synthetic_stats"]["pseudo_negative_share"] == pytest.approx(0.2, abs=0.002)
    assert info["config"]["attribute_probs"] == [0.5, 0.5, 0.0] and info["config"]["seed"] == 4

    bad = subprocess.run([*args, "--overwrite", "--click-noise", "1.5"], capture_output=True, text=True)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--click-noise" in lines[0]
