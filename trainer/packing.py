"""One forward pass per session: the prompt and all its candidates packed into one sequence.

Layout of a row (prompts left-padded so every prompt ends at the same column P-1):

    [pad .. pad | prompt (p_b tokens) | cand 1 (L) | cand 2 (L) | ... | pad .. pad]

- attention: a prompt token sees the prompt causally; a candidate token sees the whole prompt
  and the earlier tokens of its own candidate, never another candidate (block-diagonal);
- position ids: every candidate starts at p_b, the position right after the prompt, so each
  one is encoded exactly as if it followed the prompt alone;
- log pi(y|x) of candidate c: its first SID token is predicted at column P-1 (shared by all
  candidates), token i+1 at the column of its token i, and EOS at the column of its last
  SID token, whose final hidden state is the EOS representation h(y, x) of RDRW (eq. 5).

Only the logits of columns P-1.. are computed (`logits_to_keep`), and per-token log-probs are
taken as logit[target] - logsumexp(logits), so no [candidates, L, V] tensor is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Packed:
    input_ids: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    segment: torch.Tensor  # [B, T] -1 pad, 0 prompt, j+1 candidate j
    prompt_end: int  # P: prompts occupy columns < P
    cand_row: torch.Tensor  # [C] batch row of each candidate
    cand_col: torch.Tensor  # [C] column of each candidate's first SID token
    targets: torch.Tensor  # [C, L+1] SID token ids then EOS
    levels: int

    @property
    def num_candidates(self) -> int:
        return self.cand_row.numel()

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask [B, 1, T, T] (0 = attend, dtype min = blocked), as HF attention takes a custom 4D mask."""
        seg = self.segment
        t = seg.shape[1]
        idx = torch.arange(t, device=seg.device)
        causal = idx[None, :] <= idx[:, None]  # [q, k]
        sq, sk = seg[:, :, None], seg[:, None, :]
        allowed = causal & (((sk == 0) & (sq >= 0)) | ((sq == sk) & (sq > 0)))
        allowed |= torch.eye(t, dtype=torch.bool, device=seg.device)  # pad rows: attend to self, never empty
        mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
        return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]

    def to(self, device) -> Packed:
        return Packed(
            self.input_ids.to(device), self.position_ids.to(device), self.segment.to(device), self.prompt_end,
            self.cand_row.to(device), self.cand_col.to(device), self.targets.to(device), self.levels,
        )


def pack(
    prompts: Sequence[Sequence[int]], candidates: Sequence[np.ndarray], eos_id: int, pad_id: int
) -> Packed:
    """Pack B prompts with their candidate SIDs (token ids [C_b, L] each) into one batch.

    Candidates are numbered in order: all of row 0's, then row 1's, and so on.
    """
    levels = int(candidates[0].shape[1]) if len(candidates) else 0
    p_end = max(len(p) for p in prompts)
    lengths = [p_end + len(c) * levels for c in candidates]
    t = max(lengths)
    b = len(prompts)
    ids = np.full((b, t), pad_id, dtype=np.int64)
    pos = np.zeros((b, t), dtype=np.int64)
    seg = np.full((b, t), -1, dtype=np.int64)
    rows, cols, tgts = [], [], []
    for i, (prompt, cands) in enumerate(zip(prompts, candidates, strict=True)):
        p = len(prompt)
        ids[i, p_end - p : p_end] = prompt
        pos[i, p_end - p : p_end] = np.arange(p)
        seg[i, p_end - p : p_end] = 0
        n = len(cands)
        if n:
            block = slice(p_end, p_end + n * levels)
            ids[i, block] = np.asarray(cands, dtype=np.int64).reshape(-1)
            pos[i, block] = np.tile(np.arange(p, p + levels), n)
            seg[i, block] = np.repeat(np.arange(1, n + 1), levels)
            rows.append(np.full(n, i))
            cols.append(p_end + np.arange(n) * levels)
            tgts.append(np.concatenate([cands, np.full((n, 1), eos_id)], axis=1))

    def cat(xs, shape):
        return np.concatenate(xs) if xs else np.zeros(shape, dtype=np.int64)

    return Packed(
        input_ids=torch.from_numpy(ids),
        position_ids=torch.from_numpy(pos),
        segment=torch.from_numpy(seg),
        prompt_end=p_end,
        cand_row=torch.from_numpy(cat(rows, (0,)).astype(np.int64)),
        cand_col=torch.from_numpy(cat(cols, (0,)).astype(np.int64)),
        targets=torch.from_numpy(cat(tgts, (0, levels + 1)).astype(np.int64)),
        levels=levels,
    )


def candidate_logps(model, packed: Packed, hidden: bool = False, text_vectors: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [C, L+1] of every packed candidate (SID tokens, then EOS), and their EOS hidden states.

    One forward pass for the whole batch. `hidden=True` also returns the final hidden state at
    the position that generates EOS, [C, D]. `text_vectors` [B, D_text]: each row's text-vector slot
    (a `TextInputLM` model only).
    """
    dtype = next(model.parameters()).dtype
    first = packed.prompt_end - 1
    keep = packed.input_ids.shape[1] - first
    out = model(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask(dtype),
        position_ids=packed.position_ids,
        logits_to_keep=keep,
        output_hidden_states=hidden,
        use_cache=False,
        **({} if text_vectors is None else {"text_vectors": text_vectors}),
    )
    logits = out.logits  # [B, keep, V]: column j here is column first + j of the row
    levels = packed.levels
    steps = torch.arange(levels, device=logits.device)
    # Column predicting token i of candidate c: P-1 for i = 0, else the column of its token i-1.
    pred = torch.cat(
        [torch.full_like(packed.cand_col[:, None], first), packed.cand_col[:, None] + steps[None, :]], dim=1
    ) - first  # [C, L+1]
    row = packed.cand_row[:, None].expand_as(pred)
    lse = torch.logsumexp(logits.float(), dim=-1)  # [B, keep]
    picked = logits[row, pred, packed.targets].float()
    token_logps = picked - lse[row, pred]
    eos_hidden = None
    if hidden:
        last = packed.cand_col + levels - 1
        eos_hidden = out.hidden_states[-1][packed.cand_row, last]
    return token_logps, eos_hidden
