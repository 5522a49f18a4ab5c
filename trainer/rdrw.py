"""Representation-based dynamic reward weighting (RDRW, paper eq. 5-7).

The weight of a negative falls from 1 to 0.5 as the cosine similarity of its EOS hidden state
to y_w*'s rises past the quartiles of recent similarities: a negative the model can hardly
tell apart from the positive is likely a pseudo-negative (relevant but unclicked).

Quartiles: the first `warmup` pairs (4,096 in the paper) are only collected, and every weight
is 1 until then; afterwards the quartiles are those of a sliding window of the most recent
`window` pairs, so they follow the representations as training moves them. The window is
part of the training state and is saved in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def rdrw_weight(sim: torch.Tensor, q25: float, q50: float, q75: float, lam: float = 12.0) -> torch.Tensor:
    """Eq. 6: 1 below Q25, 0.5 above Q75, 0.5 + 0.5 / (1 + exp(lam (sim - Q50))) in between."""
    mid = 0.5 + 0.5 * torch.sigmoid(-lam * (sim - q50))
    return torch.where(sim < q25, torch.ones_like(sim), torch.where(sim > q75, torch.full_like(sim, 0.5), mid))


def eos_similarity(h_w: torch.Tensor, h_l: torch.Tensor) -> torch.Tensor:
    """Eq. 5: cosine similarity of y_w*'s EOS hidden state [S, D] with each negative's [S, N, D] -> [S, N]."""
    return F.cosine_similarity(h_w[:, None, :].float(), h_l.float(), dim=-1)


class SidVectors:
    """A candidate's SID tokens -> the index's reconstruction of its item embedding (the sum of its codes'
    RQ-KMeans centroids): the `rdrw_signal="sid"` similarity, which knows the items without the model.

    The paper's EOS states (eq. 5) can carry little item identity in a small model: bench/rdrw_signal.py
    measured them at cosine 0.999 for every candidate of a 3.6M-parameter model.
    """

    def __init__(self, centroids: Sequence[np.ndarray], offsets: Sequence[int]):
        if len(centroids) != len(offsets):
            raise ValueError(f"{len(centroids)} centroid levels for {len(offsets)} SID levels")
        self.lo = min(offsets)
        hi = max(o + len(c) for o, c in zip(offsets, centroids, strict=True))
        self.table = torch.zeros(hi - self.lo, int(centroids[0].shape[1]))
        for c, o in zip(centroids, offsets, strict=True):
            self.table[o - self.lo : o - self.lo + len(c)] = torch.as_tensor(np.asarray(c), dtype=torch.float32)

    def to(self, device) -> SidVectors:
        self.table = self.table.to(device)
        return self

    def __call__(self, sid_ids: torch.Tensor) -> torch.Tensor:
        """[..., L] SID token ids -> [..., D] vectors."""
        return self.table[sid_ids - self.lo].sum(-2)


class QuantileTracker:
    """Warm-up buffer, then a sliding window of the most recent similarities; quartiles on demand."""

    def __init__(self, warmup: int = 4096, window: int = 4096):
        if warmup < 1 or window < 1:
            raise ValueError("warmup and window must be positive")
        self.warmup = warmup
        self.window = window
        self.buffer = torch.zeros(window)
        self.seen = 0  # pairs observed so far

    @property
    def ready(self) -> bool:
        return self.seen >= self.warmup

    def quartiles(self) -> tuple[float, float, float]:
        filled = self.buffer[: min(self.seen, self.window)]
        q = torch.quantile(filled, torch.tensor([0.25, 0.5, 0.75]))
        return float(q[0]), float(q[1]), float(q[2])

    def update(self, sims: torch.Tensor) -> None:
        """Add similarities (any shape), oldest overwritten first once the window is full."""
        v = sims.detach().float().reshape(-1).cpu()
        keep = v[-self.window :]
        idx = (self.seen + v.numel() - keep.numel() + torch.arange(keep.numel())) % self.window
        self.buffer[idx] = keep
        self.seen += v.numel()

    def weights(self, sims: torch.Tensor, lam: float = 12.0) -> torch.Tensor:
        """Weights for `sims` from the quartiles seen so far (1 during warm-up); no gradient."""
        if not self.ready:
            return torch.ones_like(sims)
        return rdrw_weight(sims.detach(), *self.quartiles(), lam=lam)

    def state_dict(self) -> dict:
        return {"warmup": self.warmup, "window": self.window, "buffer": self.buffer.clone(), "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.warmup, self.window = int(state["warmup"]), int(state["window"])
        self.buffer = state["buffer"].clone().float()
        self.seen = int(state["seen"])
