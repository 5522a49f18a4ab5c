"""Vectorised draws the generator shares: weighted picks within groups, rows without repeats, Arrow helpers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
