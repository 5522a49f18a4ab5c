"""Vectorised trie constraint for beam search, in torch (CPU or CUDA).

Given a batch of beam prefixes, return which codes (or token ids) may come next, for the
whole batch at once: no Python loop over beams. Two representations per level, chosen by
size at construction:

- dense: a bool table [nodes, K] gathered by node id (the first levels: at the paper's
  shape level 1 is 8192 x 4096 = 32 MiB);
- CSR: offsets + codes, gathered with a fixed width (the level's largest fan-out) and
  scattered into the mask (the last level, whose node count is too large for a table).

Prefixes are resolved to trie nodes with `searchsorted` over sorted (parent, code) keys.
A decoder that keeps node ids per beam can skip that and call `advance` / `mask_nodes`.
"""

from __future__ import annotations

import torch

from sid_index.tokens import SidVocab
from sid_index.trie import TrieArrays

DENSE_BUDGET = 1 << 26  # bools: use a dense table for a level when nodes * K fits in 64 MiB


class SidConstraint:
    """Allowed-next-code masks for a `TrieArrays`, on one device."""

    def __init__(self, trie: TrieArrays, device: str | torch.device = "cpu", dense_budget: int = DENSE_BUDGET):
        self.device = torch.device(device)
        self.codebook_sizes = trie.codebook_sizes
        self.levels = trie.levels
        self._keys: list[torch.Tensor] = []
        self._dense: list[torch.Tensor | None] = []
        self._offsets: list[torch.Tensor | None] = []
        self._codes: list[torch.Tensor | None] = []
        self._fan_range: list[torch.Tensor | None] = []
        for level, k in enumerate(trie.codebook_sizes):
            parents = torch.from_numpy(trie.parents(level))
            codes = torch.from_numpy(trie.codes[level].astype("int64"))
            self._keys.append((parents * k + codes).to(self.device))
            n_nodes = trie.nodes(level)
            if n_nodes * k <= dense_budget:
                dense = torch.zeros(n_nodes, k, dtype=torch.bool)
                dense[parents, codes] = True
                self._dense.append(dense.to(self.device))
                self._offsets.append(None)
                self._codes.append(None)
                self._fan_range.append(None)
            else:
                offsets = torch.from_numpy(trie.offsets[level])
                max_fan = int((offsets[1:] - offsets[:-1]).max()) if n_nodes else 0
                self._dense.append(None)
                self._offsets.append(offsets.to(self.device))
                self._codes.append(codes.to(self.device))
                self._fan_range.append(torch.arange(max_fan, device=self.device))

    def is_dense(self, level: int) -> bool:
        return self._dense[level] is not None

    def root(self, batch: int) -> torch.Tensor:
        """Node ids of `batch` empty prefixes."""
        return torch.zeros(batch, dtype=torch.long, device=self.device)

    def advance(self, nodes: torch.Tensor, level: int, codes: torch.Tensor) -> torch.Tensor:
        """Child node (at level+1) reached from `nodes` (at `level`) by `codes`; -1 where invalid."""
        k = self.codebook_sizes[level]
        keys = self._keys[level]
        if keys.numel() == 0:
            return torch.full_like(nodes, -1)
        query = nodes * k + codes
        idx = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
        ok = (nodes >= 0) & (codes >= 0) & (codes < k) & (keys[idx] == query)
        return torch.where(ok, idx, torch.full_like(idx, -1))

    def mask_nodes(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Bool [B, K_level]: codes allowed after each node of `level` (all False for node -1)."""
        k = self.codebook_sizes[level]
        valid = nodes >= 0
        safe = nodes.clamp(min=0)
        dense = self._dense[level]
        if dense is not None:
            return dense[safe] & valid[:, None]
        offsets, codes, fan = self._offsets[level], self._codes[level], self._fan_range[level]
        start = offsets[safe]
        length = torch.where(valid, offsets[safe + 1] - start, torch.zeros_like(start))
        idx = start[:, None] + fan[None, :]
        live = fan[None, :] < length[:, None]
        picked = codes[idx.clamp_(max=max(codes.numel() - 1, 0))]
        out = torch.zeros(nodes.shape[0], k + 1, dtype=torch.bool, device=self.device)
        out.scatter_(1, torch.where(live, picked, torch.full_like(picked, k)), True)
        return out[:, :k]

    def nodes_of(self, prefix_codes: torch.Tensor) -> torch.Tensor:
        """Trie node of each prefix [B, t] (t < levels); -1 where the prefix is not a valid SID prefix."""
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
        nodes = self.root(codes.shape[0])
        for level in range(self.levels):
            nodes = self.advance(nodes, level, codes[:, level].long())
        return nodes >= 0

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
