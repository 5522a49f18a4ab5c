"""`radgr bench peers`: every peer's ranking against a brute-force recomputation, external rankings, the CLI."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from sid_index.errors import RadgrError
from trainer.data import build_examples
from trainer.peers import (
    Requests,
    bm25_peer,
    cooccurrence_peer,
    dense_peer,
    external_peer,
    history_text_peer,
    peers_table,
    popularity_peer,
    requests_of,
    score_peer,
)


@pytest.fixture()
def sessions(tiny_dataset, tiny_index):
    ex = build_examples(tiny_dataset, tiny_index, None, "test")
    return ex, requests_of(tiny_dataset, "test", ex.session_ids)


def test_sessions_are_the_ones_evaluate_scores(tiny_dataset, tiny_index, tiny_ckpt, sessions):
    ex, req = sessions
    with_prompts = build_examples(tiny_dataset, tiny_index, tiny_ckpt.prompts, "test")
    assert ex.session_ids == with_prompts.session_ids and ex.pos_skus == with_prompts.pos_skus
    rows = {r["session_id"]: r for r in tiny_dataset.split("test").to_pylist()}
    assert req.queries == [(rows[s]["query"] or "").strip() for s in ex.session_ids]
    assert any(req.queries) and any(req.histories)


def test_popularity_against_a_naive_count(tiny_dataset, sessions):
    ex, req = sessions
    counts = Counter()
    for row in tiny_dataset.split("train").to_pylist():
        counts.update({p["sku_id"] for p in row["positives"]})
    top = popularity_peer(tiny_dataset, req, depth=20).rankings[0]
    assert [counts[s] for s in top] == sorted(counts.values(), reverse=True)[:20]


def test_dense_against_brute_force_cosine(tiny_dataset, tiny_index, sessions):
    from sid_index.embed import embed_texts, item_texts

    ex, req = sessions
    peer = dense_peer(tiny_dataset, tiny_index, req, depth=15)
    items, _ = embed_texts(item_texts(tiny_dataset.catalog), progress=False, cache_dir=None)
    skus = tiny_dataset.catalog["sku_id"].to_pylist()
    for i in [i for i, q in enumerate(req.queries) if q][:5]:
        q, _ = embed_texts([req.queries[i]], progress=False, cache_dir=None)
        sims = items.astype(np.float64) @ q[0].astype(np.float64)
        expected = [skus[j] for j in np.argsort(-sims, kind="stable")[:15]]
        assert peer.rankings[i][:10] == expected[:10]


def test_history_text_against_brute_force(tiny_dataset, tiny_index, sessions):
    from sid_index.embed import embed_texts, item_texts

    ex, req = sessions
    peer = history_text_peer(tiny_dataset, tiny_index, req, depth=10)
    items, _ = embed_texts(item_texts(tiny_dataset.catalog), progress=False, cache_dir=None)
    skus = tiny_dataset.catalog["sku_id"].to_pylist()
    row = {s: i for i, s in enumerate(skus)}
    checked = 0
    for i, hist in enumerate(req.histories):
        if not hist:
            assert peer.rankings[i] == []
            continue
        mean = items[[row[s] for s in hist]].astype(np.float64).mean(0)
        order = [skus[j] for j in np.argsort(-(items.astype(np.float64) @ mean), kind="stable") if skus[j] not in hist]
        assert peer.rankings[i][:5] == order[:5] and not set(peer.rankings[i]) & set(hist)
        checked += 1
    assert checked > 0


def test_cooccurrence_by_hand(tiny_dataset, sessions):
    ex, req = sessions
    follows = {}
    for row in tiny_dataset.split("train").to_pylist():
        if row["history"]:
            follows.setdefault(row["history"][-1], Counter()).update({p["sku_id"] for p in row["positives"]})
    peer = cooccurrence_peer(tiny_dataset, req, depth=30)
    popular = popularity_peer(tiny_dataset, req, depth=60).rankings[0]
    tested = 0
    for hist, ranking in zip(req.histories, peer.rankings, strict=True):
        counts = follows.get(hist[-1], Counter()) if hist else Counter()
        first = sorted(counts, key=lambda s: (-counts[s], s))
        assert ranking == list(dict.fromkeys(first + popular))[:30]
        tested += bool(first)
    assert tested > 0  # some last items were followed in train


def test_bm25_finds_an_item_by_its_title(tiny_dataset, tiny_index):
    titles = tiny_dataset.catalog["title"].to_pylist()
    skus = tiny_dataset.catalog["sku_id"].to_pylist()
    distinct = [i for i, t in enumerate(titles) if titles.count(t) == 1][:5]
    req = Requests([titles[i] for i in distinct] + ["zzzz qqqq"], [[]] * (len(distinct) + 1))
    peer = bm25_peer(tiny_dataset, req, depth=10)
    for i, ranking in zip(distinct, peer.rankings, strict=False):
        assert skus[i] in ranking[:3]
    assert peer.rankings[-1] == []  # no term in common: nothing ranked, not an arbitrary order


def test_external_rankings_round_trip_and_errors(tiny_dataset, tiny_index, sessions, tmp_path):
    ex, req = sessions
    skus = tiny_dataset.catalog["sku_id"].to_pylist()
    by_session = {s: skus[i % 7 : i % 7 + 12] for i, s in enumerate(ex.session_ids)}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"system": "x", "key": "session_id", "rankings": by_session, "train_s": 6.0}))
    peer = external_peer(path, tiny_dataset, "test", ex.session_ids)
    assert peer.name == "x" and peer.fit_s == 6.0 and peer.rankings == [by_session[s] for s in ex.session_ids]
    res = score_peer(peer, ex, len(ex), tiny_index, tiny_dataset, "test", 128)
    hits = [len(set(by_session[s][:10]) & set(ex.pos_skus[i])) / len(set(ex.pos_skus[i]))
            for i, s in enumerate(ex.session_ids)]
    assert res["item"]["recall@10"] == pytest.approx(np.mean(hits))
    # the SID ranking of an item list: its items' SIDs, first seen first
    sids = list(dict.fromkeys(tiny_index.sid_of(s) for s in by_session[ex.session_ids[0]]))
    pos = {tuple(c) for c in ex.pos_codes[0].tolist()}
    assert res["per_session"]["sid recall@128"][0] == pytest.approx(len(pos & set(sids)) / len(pos))

    for text, message in (("{", "not valid JSON"), ('{"rankings": []}', "expected"),
                          (json.dumps({"key": "session_id", "rankings": {}}), "ranks 0 of"),
                          (json.dumps({"key": "session_id", "rankings": {ex.session_ids[0]: [1, 2]}}), "not a list")):
        path.write_text(text)
        with pytest.raises(RadgrError, match=message):
            external_peer(path, tiny_dataset, "test", ex.session_ids[:1])
    with pytest.raises(RadgrError, match="cannot read"):
        external_peer(tmp_path / "absent.json", tiny_dataset, "test", ex.session_ids)


def test_cli_one_table_for_models_and_peers(tiny_dataset, tiny_index, tiny_ckpt, tmp_path, capsys):
    from radgr.cli import cli
    from trainer.model import save_checkpoint

    save_checkpoint(tiny_ckpt, tmp_path / "m")
    out = tmp_path / "peers.json"
    cli(["bench", "peers", "--index", str(tiny_index.root), "--data", str(tiny_dataset.root), "--model",
         str(tmp_path / "m"), "--max-sessions", "6", "--beam-width", "8", "--out", str(out),
         "--markdown", str(tmp_path / "p.md")], standalone_mode=False)
    rows = json.loads(out.read_text())["rows"]
    names = [r["name"] for r in rows]
    assert names[0] == f"radgr SFT: {tmp_path / 'm'}" and "index only (quantised text embedding)" in names
    assert {"BM25 (bm25s)", "dense MiniLM (exact)", "next-item co-occurrence"} <= set(names)
    assert all(r["sessions"] == 6 for r in rows)
    table = (tmp_path / "p.md").read_text()
    assert table == peers_table(rows) and "Paired difference, model minus peer" in table
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == len(rows) + 1 + (len(rows) - 1) + 1  # rows + header, then one pair per peer + header
    assert "most popular (train) |" not in table  # the SID-popularity row of radgr eval: here items are ranked


def test_rows_from_an_earlier_run_join_the_table_unchanged(tiny_dataset, tiny_index, tiny_ckpt, tmp_path):
    from radgr.cli import cli
    from trainer.model import save_checkpoint

    save_checkpoint(tiny_ckpt, tmp_path / "m")
    base = ["bench", "peers", "--index", str(tiny_index.root), "--data", str(tiny_dataset.root), "--beam-width", "8"]
    cli([*base, "--model", str(tmp_path / "m"), "--max-sessions", "6", "--out", str(tmp_path / "a.json")],
        standalone_mode=False)
    cli(["eval", "--model", str(tmp_path / "m"), "--index", str(tiny_index.root), "--data", str(tiny_dataset.root),
         "--split", "test", "--max-sessions", "6", "--beam-width", "8", "--no-unconstrained",
         "--out", str(tmp_path / "e.json")], standalone_mode=False)
    first = json.loads((tmp_path / "a.json").read_text())["rows"]
    # no decoding this time: the model row comes from radgr eval's file, the rest are recomputed
    cli([*base, "--max-sessions", "6", "--rows-from", str(tmp_path / "e.json"), "--out", str(tmp_path / "b.json"),
         "--markdown", str(tmp_path / "b.md")], standalone_mode=False)
    second = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["name"] for r in second] == [r["name"] for r in first]
    for a, b in zip(first, second, strict=True):
        assert b["item"] == pytest.approx(a["item"]) and b["per_session"] == a["per_session"]
    assert second[0]["reused_from"] == str(tmp_path / "e.json")
    assert "Paired difference, model minus peer" in (tmp_path / "b.md").read_text()

    # only rows scored on exactly these sessions of this split
    for flags, message in ((["--max-sessions", "5"], "not scored on the 5 sessions"),
                           (["--split", "valid"], "scored on split 'test', this table on 'valid'")):
        with pytest.raises(RadgrError, match=message):
            cli([*base, *flags, "--rows-from", str(tmp_path / "e.json")], standalone_mode=False)
    bad = tmp_path / "bad.json"
    for text, message in (("[", "not valid JSON"), ('{"rows": 3}', "expected the JSON of radgr eval"),
                          (json.dumps({"rows": [dict(first[0], sessions=7)]}), "malformed")):
        bad.write_text(text)
        with pytest.raises(RadgrError, match=message):
            cli([*base, "--max-sessions", "6", "--rows-from", str(bad)], standalone_mode=False)
    with pytest.raises(RadgrError, match="no such file"):
        cli([*base, "--rows-from", str(tmp_path / "absent.json")], standalone_mode=False)
