"""Vectorised trie constraint for beam search, in torch (CPU or CUDA).

Given a batch of beam prefixes, return which codes (or token ids) may come next, for the
whole batch at once: no Python loop over beams. Each level is held in one of two forms,
chosen by size when the constraint is built:

- dense: a bool table [nodes + 1, K] (the mask, one row gather) and a child table int32
  [nodes + 1, K] (-1 = not allowed) for `advance`; the extra last row is all "not allowed"
  and stands for invalid prefixes, so neither needs a second pass. Used for the first
  levels: at the paper's shape level 1 is 8192 x 4096 (32 MiB + 128 MiB).
- CSR: the trie's offsets and codes, gathered with a fixed width (the level's largest
  fan-out) and scattered into the mask. Used for the last level, whose node count is far
  too large for a table; its fan-out is small (130M SIDs over 33M prefixes: ~4).

Memory is the CSR arrays plus the dense tables, nothing per SID beyond the last level's
codes (int16) and offsets. A decoder that keeps node ids per beam calls `advance` and
`mask_nodes`; `mask` and `mask_logits` resolve whole prefixes for callers that do not.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from sid_index.tokens import SidVocab
from sid_index.trie import TrieArrays

DENSE_BUDGET = 1 << 26  # table entries: dense when nodes * K <= 64M (256 MiB of int32)


class SidConstraint:
    """Allowed-next-code masks for a `TrieArrays`, on one device."""

    def __init__(
        self,
        trie: TrieArrays,
        device: str | torch.device = "cpu",
        dense_budget: int = DENSE_BUDGET,
        ragged: bool | None = None,
    ):
        self.device = torch.device(device)
        self.ragged = self.device.type == "cpu" if ragged is None else ragged
        self.codebook_sizes = trie.codebook_sizes
        self.levels = trie.levels
        self._child: list[torch.Tensor | None] = []
        self._allowed: list[torch.Tensor | None] = []
        self._offsets: list[torch.Tensor | None] = []
        self._codes: list[torch.Tensor | None] = []
        self._width: list[torch.Tensor | None] = []
        for level, k in enumerate(trie.codebook_sizes):
            n_nodes = trie.nodes(level)
            offsets = np.asarray(trie.offsets[level])
            if n_nodes * k <= dense_budget:
                child = torch.full((n_nodes + 1, k), -1, dtype=torch.int32)
                parents = torch.from_numpy(trie.parents(level))
                codes = torch.from_numpy(np.asarray(trie.codes[level], dtype=np.int64))
                child[parents, codes] = torch.arange(len(codes), dtype=torch.int32)
                self._child.append(child.to(self.device))
                self._allowed.append((child >= 0).to(self.device))
                self._offsets.append(None)
                self._codes.append(None)
                self._width.append(None)
            else:
                small = offsets[-1] < np.iinfo(np.int32).max
                off = torch.from_numpy(offsets.astype(np.int32 if small else np.int64))
                width = int(np.diff(offsets).max()) if n_nodes else 0
                self._child.append(None)
                self._allowed.append(None)
                self._offsets.append(off.to(self.device))
                self._codes.append(_read_only_tensor(trie.codes[level]).to(self.device))
                self._width.append(torch.arange(width, device=self.device))

    def is_dense(self, level: int) -> bool:
        return self._child[level] is not None

    def nbytes(self) -> int:
        """Device memory held by the constraint's tensors."""
        tensors = self._child + self._allowed + self._offsets + self._codes + self._width
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def root(self, batch: int) -> torch.Tensor:
        """Node ids of `batch` empty prefixes."""
        return torch.zeros(batch, dtype=torch.long, device=self.device)

    def _children(self, level: int, nodes: torch.Tensor):
        """CSR level: every child of every node -> (row, edge id, code, live), flattened or padded.

        Ragged (the default on CPU) touches only the real children; padded (the default on
        CUDA) gathers a fixed width, the level's largest fan-out, so shapes stay static and
        no device->host sync is needed.
        """
        valid = nodes >= 0
        safe = nodes.clamp(min=0)
        offsets, codes, width = self._offsets[level], self._codes[level], self._width[level]
        start = offsets[safe].long()
        length = torch.where(valid, offsets[safe + 1].long() - start, torch.zeros_like(start))
        if self.ragged:
            total = int(length.sum())
            rows = torch.repeat_interleave(torch.arange(len(nodes), device=self.device), length, output_size=total)
            first = torch.cumsum(length, 0) - length
            edge = start[rows] + torch.arange(total, device=self.device) - first[rows]
            return rows, edge, codes[edge].long(), None
        rows = torch.arange(len(nodes), device=self.device)[:, None].expand(-1, len(width))
        edge = (start[:, None] + width[None, :]).clamp_(max=max(codes.numel() - 1, 0))
        return rows, edge, codes[edge].long(), width[None, :] < length[:, None]

    def advance(self, nodes: torch.Tensor, level: int, codes: torch.Tensor) -> torch.Tensor:
        """Child node (at level+1) reached from `nodes` (at `level`) by `codes`; -1 where invalid."""
        k = self.codebook_sizes[level]
        ok = (nodes >= 0) & (codes >= 0) & (codes < k)
        child = self._child[level]
        if child is not None:
            rows = torch.where(nodes >= 0, nodes, child.shape[0] - 1)
            nxt = child[rows, codes.clamp(0, k - 1)].long()
            return torch.where(ok, nxt, torch.full_like(nxt, -1))
        rows, edge, picked, live = self._children(level, nodes)
        hit = picked == codes[rows]
        if live is not None:
            hit &= live
        out = torch.full_like(nodes, -1)
        out[rows[hit]] = edge[hit]  # codes are distinct among siblings: at most one hit per row
        return torch.where(ok, out, torch.full_like(out, -1))

    def children(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Long [B, K_level]: the child node (at level+1) each code leads to from each node of `level`; -1 where
        the code is not allowed (every code for node -1). `advance` for every code at once."""
        k = self.codebook_sizes[level]
        child = self._child[level]
        if child is not None:
            return child[torch.where(nodes >= 0, nodes, child.shape[0] - 1)].long()
        rows, edge, picked, live = self._children(level, nodes)
        out = torch.full((nodes.shape[0], k + 1), -1, dtype=torch.long, device=self.device)
        if live is not None:
            picked = torch.where(live, picked, torch.full_like(picked, k))
        out[rows, picked] = edge.long()
        return out[:, :k]

    def mask_nodes(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Bool [B, K_level]: codes allowed after each node of `level` (all False for node -1)."""
        k = self.codebook_sizes[level]
        allowed = self._allowed[level]
        if allowed is not None:
            return allowed[torch.where(nodes >= 0, nodes, allowed.shape[0] - 1)]
        rows, _, picked, live = self._children(level, nodes)
        out = torch.zeros(nodes.shape[0], k + 1, dtype=torch.bool, device=self.device)
        if live is not None:
            picked = torch.where(live, picked, torch.full_like(picked, k))
        out[rows, picked] = True
        return out[:, :k]

    def nodes_of(self, prefix_codes: torch.Tensor) -> torch.Tensor:
        """Trie node of each prefix [B, t]; -1 where the prefix is not a valid SID prefix."""
        nodes = self.root(prefix_codes.shape[0])
        for level in range(prefix_codes.shape[1]):
            nodes = self.advance(nodes, level, prefix_codes[:, level].long())
        return nodes

    def mask(self, prefix_codes: torch.Tensor) -> torch.Tensor:
        """Bool [B, K_t]: codes allowed after each prefix [B, t], t in 0..levels-1."""
        t = prefix_codes.shape[1]
        if not 0 <= t < self.levels:
            raise ValueError(f"prefix length {t} outside 0..{self.levels - 1}")
        return self.mask_nodes(t, self.nodes_of(prefix_codes))

    def contains(self, codes: torch.Tensor) -> torch.Tensor:
        """Bool [B]: whether each full code tuple [B, L] is a valid SID."""
        return self.nodes_of(codes) >= 0

    def mask_logits(self, logits: torch.Tensor, prefix_ids: torch.Tensor, vocab: SidVocab, eos_id: int) -> torch.Tensor:
        """Logits [B, V] with -inf everywhere except the tokens allowed after `prefix_ids` [B, t].

        `prefix_ids` are the SID tokens generated so far; after a full SID only EOS is allowed.
        """
        t = prefix_ids.shape[1]
        out = torch.full_like(logits, float("-inf"))
        if t == self.levels:
            out[:, eos_id] = logits[:, eos_id]
            return out
        allowed = self.mask(vocab.ids_to_codes(prefix_ids))
        lo, hi = vocab.token_range(t)
        out[:, lo:hi] = logits[:, lo:hi].masked_fill(~allowed, float("-inf"))
        return out


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a (memory-mapped, read-only) trie array without copying it: the constraint only reads
    it, so torch's warning about non-writable arrays says nothing here and is silenced for this call only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))
