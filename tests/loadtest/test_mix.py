"""The request mix: the held-out sessions' own queries, histories and user features."""

from __future__ import annotations

import json

import pytest

from loadtest.mix import request_mix, write_mix
from sid_index.errors import RadgrError


def test_mix_replays_test_sessions(tiny_dataset):
    mix = request_mix(tiny_dataset.root, "test", limit=50, max_history=3, beam_width=16, top_k=7, seed=1)
    by_query = {}
    for row in tiny_dataset.split("test").to_pylist():
        query = row["query"] if row["query"] and row["query"].strip() else None  # the mix drops blank queries
        by_query.setdefault(query, []).append(row)
    assert len(mix) == 50
    for body in mix:
        assert body["top_k"] == 7 and body["beam_width"] == 16
        rows = by_query[body.get("query")]
        # some test session with this query has exactly this (trimmed) history and these user features
        assert any(
            (r["history"] or [])[-3:] == body.get("history", []) and dict(r["user"] or []) == body.get("user", {})
            for r in rows
        )
        assert len(body.get("history", [])) <= 3
    assert any(body.get("history") for body in mix) and any(body.get("user") for body in mix)


def test_mix_is_seeded(tiny_dataset):
    a = request_mix(tiny_dataset.root, limit=20, seed=3)
    assert a == request_mix(tiny_dataset.root, limit=20, seed=3)
    assert a != request_mix(tiny_dataset.root, limit=20, seed=4)


def test_mix_round_trips_as_json_lines(tiny_dataset, tmp_path):
    mix = request_mix(tiny_dataset.root, limit=5)
    path = write_mix(mix, tmp_path / "mix.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == mix


def test_unknown_split_is_a_clear_error(tiny_dataset):
    with pytest.raises(RadgrError, match="no sessions in split 'holdout'"):
        request_mix(tiny_dataset.root, "holdout")
