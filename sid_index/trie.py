"""The trie of valid SIDs as flat arrays, one CSR level at a time.

Level l has `nodes[l]` nodes (level 0: the root only). Node n of level l may be followed
by the codes `codes[l][offsets[l][n]:offsets[l][n+1]]`, sorted; the edge at position e of
level l *is* node e of level l+1. The edges of the last level are the SIDs themselves, in
lexicographic order, so "leaf index" and "row of the sorted SID table" are the same number.

Arrays are plain numpy (memory-mappable .npy files); `sid_index.constraint` turns them into
torch tensors for decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BEAM_WIDTH = 128  # SIDs decoded per request (the paper's width): the default of every search, trained or served


def code_dtype(codebook_size: int) -> np.dtype:
    """Smallest signed dtype holding codes 0..K-1 (torch has no uint16 arithmetic)."""
    return np.dtype(np.int16) if codebook_size <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


@dataclass
class TrieArrays:
    codebook_sizes: tuple[int, ...]
    offsets: list[np.ndarray]  # level l: int64 [nodes_l + 1]
    codes: list[np.ndarray]  # level l: int16/int32 [nodes_{l+1}]

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def num_sids(self) -> int:
        return int(len(self.codes[-1]))

    def nodes(self, level: int) -> int:
        return int(len(self.offsets[level]) - 1)

    def parents(self, level: int) -> np.ndarray:
        """Parent node (at `level`) of every edge of `level`, int64."""
        fan = np.diff(self.offsets[level])
        return np.repeat(np.arange(len(fan), dtype=np.int64), fan)

    def sids(self) -> np.ndarray:
        """The sorted SID table [num_sids, L] int64, rebuilt from the arrays."""
        out = np.empty((self.num_sids, self.levels), dtype=np.int64)
        node = np.arange(self.num_sids, dtype=np.int64)  # edge ids of the last level
        for level in range(self.levels - 1, -1, -1):
            out[:, level] = self.codes[level][node]
            node = self.parents(level)[node]
        return out

    def fanout_stats(self) -> list[dict[str, float]]:
        out = []
        for level in range(self.levels):
            fan = np.diff(self.offsets[level])
            out.append({"nodes": int(len(fan)), "max": int(fan.max()), "mean": float(fan.mean())})
        return out


def unique_sids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct rows of `codes` [N, L] and, for each input row, the index of its SID."""
    codes = np.asarray(codes, dtype=np.int64)
    order = np.lexsort(codes.T[::-1])
    sorted_codes = codes[order]
    new = np.ones(len(codes), dtype=bool)
    new[1:] = (sorted_codes[1:] != sorted_codes[:-1]).any(axis=1)
    sid_of_sorted = np.cumsum(new) - 1
    sid_of_row = np.empty(len(codes), dtype=np.int64)
    sid_of_row[order] = sid_of_sorted
    return sorted_codes[new], sid_of_row


def build_trie(sorted_sids: np.ndarray, codebook_sizes: Sequence[int]) -> TrieArrays:
    """Build the CSR levels from a sorted table of distinct SIDs [S, L]."""
    sids = np.asarray(sorted_sids, dtype=np.int64)
    n, levels = sids.shape
    if levels != len(codebook_sizes):
        raise ValueError(f"SIDs have {levels} levels, codebook_sizes has {len(codebook_sizes)}")
    for level, k in enumerate(codebook_sizes):
        if n and (sids[:, level].min() < 0 or sids[:, level].max() >= k):
            raise ValueError(f"level {level}: codes must lie in [0, {k})")
    offsets, codes = [], []
    parent_new = np.zeros(n, dtype=bool)  # row starts a new prefix of length `level`
    if n:
        parent_new[0] = True
    for level, k in enumerate(codebook_sizes):
        new = parent_new.copy()
        if n > 1:
            new[1:] |= sids[1:, level] != sids[:-1, level]
        parent_of_edge = (np.cumsum(parent_new) - 1)[new]
        n_parents = int(parent_new.sum())
        counts = np.bincount(parent_of_edge, minlength=n_parents)
        offsets.append(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        codes.append(sids[new, level].astype(code_dtype(k)))
        parent_new = new
    if levels and len(codes[-1]) != n:
        raise ValueError("SIDs are not distinct")
    if n == 0:
        offsets = [np.zeros(2, np.int64)] + [np.zeros(1, np.int64)] * (levels - 1)
    return TrieArrays(tuple(int(k) for k in codebook_sizes), offsets, codes)
