"""The training objectives, on per-token log-probs grouped by session.

Shapes: S sessions, P positive slots (padded, `pos_mask`), N negatives, T = L+1 target tokens
(L SID tokens and EOS; every target has the same length, |y| = T). Positive slot 0 is the
session's top-tier positive y_w* (examples are ordered by grade, best first).

RAD-DPO (paper eq. 1-7):
    L = L_SFT + L_PL
    L_SFT = -1/|Y_pos| sum_y log pi(y|x)                                  (eq. 1)
    r(x, y) = log pi(y|x) / |y|  (negatives: log pi_hat with TLGD, eq. 4)
    "paper":   L_PL = -log sigma(beta * log sum_j w_j exp(r_w - r_j))      (eq. 2, 7)
    "softmax": L_PL = -log sigma(-log sum_j w_j exp(beta * (r_j - r_w)))   (softmax-DPO form)
As written, the "paper" log-sum-exp grows with the largest margin r_w - r_j, so its gradient
goes mostly to the easiest negative; the softmax form weighs the hardest negatives most.

Baselines decompose each session into (positive, negative) pairs: every valid positive with
every negative, each pair one sample, as pairwise methods see them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

ListwiseForm = Literal["paper", "softmax"]


def detach_shared_prefix(token_logps: torch.Tensor, lcp: torch.Tensor) -> torch.Tensor:
    """TLGD (eq. 3-4): tokens t < lcp keep their value but pass no gradient. [..., T] with lcp [...]."""
    t = torch.arange(token_logps.shape[-1], device=token_logps.device)
    shared = t < lcp[..., None]
    return torch.where(shared, token_logps.detach(), token_logps)


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Length of the longest common prefix of code rows a [..., L] and b [..., L]."""
    return torch.cumprod((a == b).long(), dim=-1).sum(-1)


def rad_dpo_loss(
    pos_tok: torch.Tensor,
    pos_mask: torch.Tensor,
    neg_tok: torch.Tensor,
    neg_lcp: torch.Tensor,
    weights: torch.Tensor | None = None,
    beta: float = 1.0,
    form: ListwiseForm = "softmax",
    tlgd: bool = True,
    multi_label_sft: bool = True,
    sft_weight: float = 1.0,
    pos_offset: torch.Tensor | None = None,
    neg_offset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RAD-DPO loss (mean over sessions) and detached statistics.

    pos_tok [S, P, T], pos_mask [S, P] (slot 0 always valid), neg_tok [S, N, T], neg_lcp [S, N]
    (longest common prefix of each negative with y_w*, in SID tokens), weights [S, N] (RDRW,
    no gradient; None = all 1). Switches: `tlgd`, `multi_label_sft` (off: SFT on y_w* only).
    `pos_offset` [S, P] / `neg_offset` [S, N]: fixed scores added to each candidate's log pi(y|x)
    in the preference term only (the index prior: the rewards become those of the fused search).
    """
    t = pos_tok.shape[-1]
    pos_seq = pos_tok.sum(-1)  # log pi(y|x) [S, P]
    if multi_label_sft:
        mask = pos_mask.to(pos_seq.dtype)
        sft = -(pos_seq * mask).sum(-1) / mask.sum(-1)
    else:
        sft = -pos_seq[:, 0]
    neg = detach_shared_prefix(neg_tok, neg_lcp) if tlgd else neg_tok
    neg_seq = neg.sum(-1)
    if pos_offset is not None:
        pos_seq = pos_seq + pos_offset.detach().to(pos_seq.dtype)  # after L_SFT: it is on the model alone
    if neg_offset is not None:
        neg_seq = neg_seq + neg_offset.detach().to(neg_seq.dtype)
    r_w = pos_seq[:, :1] / t  # [S, 1]
    r_l = neg_seq / t  # [S, N]
    log_w = torch.zeros_like(r_l) if weights is None else torch.log(weights.detach().to(r_l.dtype))
    if form == "paper":
        z = beta * torch.logsumexp(r_w - r_l + log_w, dim=-1)
    elif form == "softmax":
        z = -torch.logsumexp(beta * (r_l - r_w) + log_w, dim=-1)
    else:
        raise ValueError(f"unknown list-wise form {form!r}")
    pl = -F.logsigmoid(z)
    loss = (sft_weight * sft + pl).mean()
    stats = {
        "sft": sft.mean().detach(),
        "pref": pl.mean().detach(),
        "margin": (r_w - r_l).mean().detach(),
        "accuracy": (r_w[:, 0] > r_l.max(-1).values).float().mean().detach(),
    }
    return loss, stats


def _pairs(pos_tok, pos_mask, neg_tok):
    """Every (valid positive, negative) pair of every session: sequence log-probs [S, P, N] and pair mask."""
    pw = pos_tok.sum(-1)[:, :, None]
    pl = neg_tok.sum(-1)[:, None, :]
    mask = pos_mask[:, :, None].expand(-1, -1, neg_tok.shape[1])
    return pw, pl, mask


def _pair_mean(losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(losses.dtype)
    return (losses * m).sum() / m.sum()


def dpo_loss(
    pos_tok, pos_mask, neg_tok, ref_pos_tok, ref_neg_tok, beta: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al.) against a frozen reference, over all pairs."""
    pw, pl, mask = _pairs(pos_tok, pos_mask, neg_tok)
    rw, rl, _ = _pairs(ref_pos_tok, pos_mask, ref_neg_tok)
    logits = beta * ((pw - rw) - (pl - rl))
    loss = _pair_mean(-F.logsigmoid(logits), mask)
    return loss, {"pref": loss.detach(), "accuracy": _pair_mean((logits > 0).float(), mask).detach()}


def simpo_loss(
    pos_tok, pos_mask, neg_tok, beta: float = 2.0, gamma: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO (Meng et al.): length-normalised reward, target margin gamma, no reference."""
    t = pos_tok.shape[-1]
    pw, pl, mask = _pairs(pos_tok, pos_mask, neg_tok)
    logits = beta * (pw - pl) / t - gamma
    loss = _pair_mean(-F.logsigmoid(logits), mask)
    return loss, {"pref": loss.detach(), "accuracy": _pair_mean((pw > pl).float(), mask).detach()}


def orpo_loss(
    pos_tok, pos_mask, neg_tok, lam: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO (Hong et al.): NLL of the chosen + lam * odds-ratio term, with length-normalised log-probs."""
    t = pos_tok.shape[-1]
    pw, pl, mask = _pairs(pos_tok, pos_mask, neg_tok)
    mw, ml = (pw / t).clamp(max=-1e-6), (pl / t).clamp(max=-1e-6)  # log p < 0 keeps log(1 - p) finite
    log_odds = (mw - torch.log(-torch.expm1(mw))) - (ml - torch.log(-torch.expm1(ml)))
    nll = -mw.expand_as(log_odds)
    ratio = -F.logsigmoid(log_odds)
    loss = _pair_mean(nll + lam * ratio, mask)
    return loss, {
        "sft": _pair_mean(nll, mask).detach(),
        "pref": _pair_mean(ratio, mask).detach(),
        "accuracy": _pair_mean((log_odds > 0).float(), mask).detach(),
    }


def sft_loss(pos_tok: torch.Tensor, pos_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage-1 SFT: token-mean negative log-likelihood of every positive path."""
    nll = -pos_tok.mean(-1)
    m = pos_mask.to(nll.dtype)
    loss = (nll * m).sum() / m.sum()
    return loss, {"sft": loss.detach()}
