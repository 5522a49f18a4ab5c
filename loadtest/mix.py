"""The request mix of a load test: real requests from a data split's held-out sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sid_index.atomic import atomic_file
from sid_index.data.schema import load_dataset
from sid_index.errors import RadgrError


def request_mix(data: str | Path, split: str = "test", limit: int = 2000, max_history: int = 50,
                beam_width: int | None = None, top_k: int = 100, seed: int = 0) -> list[dict]:
    """Request bodies for `POST /v1/retrieve` from a split: the session's query, its last `max_history`
    history SKUs and its user features, where the dataset has them. Sessions in a seeded random order."""
    dataset = load_dataset(data)
    table = dataset.split(split)
    if table.num_rows == 0:
        raise RadgrError(f"{data}: no sessions in split {split!r}")
    cols = set(table.column_names)
    queries = table["query"].to_pylist() if "query" in cols else [None] * table.num_rows
    histories = table["history"].to_pylist() if "history" in cols else [None] * table.num_rows
    users = table["user"].to_pylist() if "user" in cols else [None] * table.num_rows
    mix = []
    for i in np.random.default_rng(seed).permutation(table.num_rows):
        body: dict = {"top_k": top_k}
        if queries[i] and queries[i].strip():
            body["query"] = queries[i]
        if histories[i] and max_history > 0:
            body["history"] = list(histories[i][-max_history:])
        if users[i]:
            body["user"] = dict(users[i])
        if beam_width is not None:
            body["beam_width"] = beam_width
        if "query" in body or "history" in body:
            mix.append(body)
        if len(mix) >= limit:
            break
    if not mix:
        raise RadgrError(f"{data}: split {split!r} has no session with a query or a history")
    return mix


def write_mix(mix: list[dict], path: str | Path) -> Path:
    with atomic_file(path, "w") as fh:
        for body in mix:
            fh.write(json.dumps(body) + "\n")
    return Path(path)
