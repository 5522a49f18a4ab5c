"""The training objectives against naive references written another way.

Every reference below is plain Python on floats (float64): loops over sessions, candidates and
pairs, explicit sums, math.log / math.exp, written from the paper (eq. 1, 2, 4, 6, 7) and the
baselines' own definitions, never from trainer/losses.py. The module gets float64 tensors, so
values must agree to 1e-6 relative.

Gradients are checked two independent ways: central finite differences of the Python reference
(the value of the loss does not depend on TLGD, only its gradient does: with TLGD on, the gradient
at tokens after the shared prefix is the ordinary partial derivative and it is exactly 0 on the
prefix), and torch autograd on a scalar-by-scalar float64 reimplementation with an explicit
per-token stop-gradient (eq. 4).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainer.losses import (
    common_prefix,
    detach_shared_prefix,
    dpo_loss,
    orpo_loss,
    rad_dpo_loss,
    sft_loss,
    simpo_loss,
)

S, P, N, L = 3, 3, 5, 3
T = L + 1  # L SID tokens, then EOS
SEEDS = [0, 1, 2, 3]
REL = 1e-6
PAD_VALUE = -1000.0  # what padded positive slots hold: any leak through the mask shows at once


def neg_log_sigmoid(z: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-z)))


def make_inputs(seed: int, dtype=torch.float64):
    """Random per-token log-probs, a positive mask with slot 0 valid and padded slots, LCPs and weights."""
    g = torch.Generator().manual_seed(seed)
    pos_tok = -(torch.rand(S, P, T, generator=g, dtype=dtype) * 3.0 + 0.05)
    neg_tok = -(torch.rand(S, N, T, generator=g, dtype=dtype) * 3.0 + 0.05)
    pos_mask = torch.rand(S, P, generator=g) < 0.6
    pos_mask[:, 0] = True
    pos_mask[0, 1:] = False  # one session with a single positive
    pos_mask[1, :] = True  # one session with every slot valid
    pos_tok = torch.where(pos_mask[:, :, None], pos_tok, torch.full_like(pos_tok, PAD_VALUE))
    neg_lcp = torch.randint(0, L + 1, (S, N), generator=g)
    neg_lcp[0, :L + 1] = torch.arange(L + 1)  # every prefix length 0..L occurs
    weights = (torch.rand(S, N, generator=g, dtype=dtype) * 0.5 + 0.5)
    return pos_tok, pos_mask, neg_tok, neg_lcp, weights


def as_lists(*tensors):
    return [t.tolist() for t in tensors]


# --------------------------------------------------------------------------------------------
# Naive references (plain Python floats)
# --------------------------------------------------------------------------------------------


def ref_rad_dpo(pos, mask, neg, weights, beta, form, multi_label_sft, sft_weight=1.0, pos_off=None, neg_off=None):
    """Eq. 1 + eq. 2/7 ('paper') or the softmax-DPO form; mean over sessions. `pos_off` / `neg_off`: a
    fixed score added to each candidate's sequence log-prob in the rewards (not in the SFT term)."""
    total = 0.0
    for s in range(len(pos)):
        seq_pos = []
        for p in range(len(pos[s])):
            acc = 0.0
            for t in range(len(pos[s][p])):
                acc += pos[s][p][t]
            seq_pos.append(acc)
        if multi_label_sft:
            valid = [seq_pos[p] for p in range(len(seq_pos)) if mask[s][p]]
            sft = -sum(valid) / len(valid)
        else:
            sft = -seq_pos[0]
        y_len = len(pos[s][0])
        r_w = (seq_pos[0] + (pos_off[s][0] if pos_off else 0.0)) / y_len
        inner = 0.0
        for j in range(len(neg[s])):
            r_j = (sum(neg[s][j]) + (neg_off[s][j] if neg_off else 0.0)) / len(neg[s][j])
            w_j = 1.0 if weights is None else weights[s][j]
            if form == "paper":
                inner += w_j * math.exp(r_w - r_j)
            else:
                inner += w_j * math.exp(beta * (r_j - r_w))
        z = beta * math.log(inner) if form == "paper" else -math.log(inner)
        total += sft_weight * sft + neg_log_sigmoid(z)
    return total / len(pos)


def ref_pairs(pos, mask, neg):
    """(s, positive slot, negative) of every valid pair, session by session."""
    for s in range(len(pos)):
        for p in range(len(pos[s])):
            if not mask[s][p]:
                continue
            for j in range(len(neg[s])):
                yield s, p, j


def ref_dpo(pos, mask, neg, ref_pos, ref_neg, beta):
    losses = []
    for s, p, j in ref_pairs(pos, mask, neg):
        pw, pl = sum(pos[s][p]), sum(neg[s][j])
        rw, rl = sum(ref_pos[s][p]), sum(ref_neg[s][j])
        losses.append(neg_log_sigmoid(beta * ((pw - rw) - (pl - rl))))
    return sum(losses) / len(losses)


def ref_simpo(pos, mask, neg, beta, gamma):
    losses = []
    for s, p, j in ref_pairs(pos, mask, neg):
        yw, yl = len(pos[s][p]), len(neg[s][j])
        losses.append(neg_log_sigmoid(beta * (sum(pos[s][p]) / yw - sum(neg[s][j]) / yl) - gamma))
    return sum(losses) / len(losses)


def ref_orpo(pos, mask, neg, lam):
    def log_odds(tokens):
        p = math.exp(sum(tokens) / len(tokens))  # length-normalised probability
        return math.log(p / (1.0 - p))

    losses = []
    for s, p, j in ref_pairs(pos, mask, neg):
        nll = -sum(pos[s][p]) / len(pos[s][p])  # token-mean NLL of the chosen
        losses.append(nll + lam * neg_log_sigmoid(log_odds(pos[s][p]) - log_odds(neg[s][j])))
    return sum(losses) / len(losses)


def ref_sft(pos, mask):
    nlls = []
    for s in range(len(pos)):
        for p in range(len(pos[s])):
            if mask[s][p]:
                nlls.append(-sum(pos[s][p]) / len(pos[s][p]))
    return sum(nlls) / len(nlls)


def torch_ref_rad_dpo(pos, mask, neg, lcp, weights, beta, form, tlgd, multi_label_sft, sft_weight=1.0):
    """Scalar-by-scalar torch reimplementation (float64), TLGD as a per-token stop-gradient (eq. 4)."""
    n_s, n_p, n_t = pos.shape
    total = torch.zeros((), dtype=torch.float64)
    for s in range(n_s):
        seq_pos = []
        for p in range(n_p):
            acc = torch.zeros((), dtype=torch.float64)
            for t in range(n_t):
                acc = acc + pos[s, p, t]
            seq_pos.append(acc)
        if multi_label_sft:
            valid = [seq_pos[p] for p in range(n_p) if bool(mask[s, p])]
            sft = -sum(valid) / len(valid)
        else:
            sft = -seq_pos[0]
        r_w = seq_pos[0] / n_t
        inner = torch.zeros((), dtype=torch.float64)
        for j in range(neg.shape[1]):
            acc = torch.zeros((), dtype=torch.float64)
            for t in range(n_t):
                x = neg[s, j, t]
                if tlgd and t < int(lcp[s, j]):  # 1_diff(t) = 0: SG[log pi(y_l^t | ...)]
                    x = x.detach()
                acc = acc + x
            r_j = acc / n_t
            w_j = 1.0 if weights is None else float(weights[s, j])
            arg = (r_w - r_j) if form == "paper" else beta * (r_j - r_w)
            inner = inner + w_j * torch.exp(arg)
        z = beta * torch.log(inner) if form == "paper" else -torch.log(inner)
        total = total + sft_weight * sft + torch.log1p(torch.exp(-z))
    return total / n_s


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

RAD_SWITCHES = list(itertools.product(["paper", "softmax"], [True, False], [True, False], [False, True]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("form", "tlgd", "multi_label_sft", "weighted"), RAD_SWITCHES)
def test_rad_dpo_value_matches_reference(seed, form, tlgd, multi_label_sft, weighted):
    pos_tok, pos_mask, neg_tok, neg_lcp, weights = make_inputs(seed)
    beta = [1.0, 0.5, 2.0, 3.7][seed]
    w = weights if weighted else None
    loss, stats = rad_dpo_loss(pos_tok, pos_mask, neg_tok, neg_lcp, w, beta=beta, form=form, tlgd=tlgd,
                               multi_label_sft=multi_label_sft)
    pos, mask, neg = as_lists(pos_tok, pos_mask, neg_tok)
    wl = None if w is None else w.tolist()
    expected = ref_rad_dpo(pos, mask, neg, wl, beta, form, multi_label_sft)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=REL)
    # The statistics split the loss into its two parts.
    pref_only = ref_rad_dpo(pos, mask, neg, wl, beta, form, multi_label_sft, sft_weight=0.0)
    assert stats["pref"].item() == pytest.approx(pref_only, rel=REL)
    assert (stats["sft"] + stats["pref"]).item() == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("form", ["paper", "softmax"])
def test_rad_dpo_sft_weight_and_unit_weights(form):
    pos_tok, pos_mask, neg_tok, neg_lcp, _ = make_inputs(7)
    pos, mask, neg = as_lists(pos_tok, pos_mask, neg_tok)
    loss, _ = rad_dpo_loss(pos_tok, pos_mask, neg_tok, neg_lcp, beta=1.3, form=form, sft_weight=0.25)
    assert loss.item() == pytest.approx(ref_rad_dpo(pos, mask, neg, None, 1.3, form, True, 0.25), rel=REL)
    ones, _ = rad_dpo_loss(pos_tok, pos_mask, neg_tok, neg_lcp, torch.ones(S, N, dtype=torch.float64),
                           beta=1.3, form=form, sft_weight=0.25)
    assert ones.item() == pytest.approx(loss.item(), rel=1e-12)


@pytest.mark.parametrize("form", ["paper", "softmax"])
def test_rad_dpo_reward_offsets(form):
    """The index prior enters the rewards as a per-candidate offset: in L_PL only, with no gradient."""
    pos_tok, pos_mask, neg_tok, neg_lcp, weights = make_inputs(5)
    g = torch.Generator().manual_seed(11)
    pos_off = torch.randn(S, P, generator=g, dtype=torch.float64) * 4
    neg_off = torch.randn(S, N, generator=g, dtype=torch.float64) * 4
    pos_off.requires_grad_(True)
    pos_tok.requires_grad_(True)
    loss, stats = rad_dpo_loss(pos_tok, pos_mask, neg_tok, neg_lcp, weights, beta=1.5, form=form,
                               pos_offset=pos_off, neg_offset=neg_off)
    pos, mask, neg = as_lists(pos_tok.detach(), pos_mask, neg_tok)
    expected = ref_rad_dpo(pos, mask, neg, weights.tolist(), 1.5, form, True, 1.0, pos_off.tolist(), neg_off.tolist())
    assert loss.item() == pytest.approx(expected, rel=REL)
    plain = ref_rad_dpo(pos, mask, neg, weights.tolist(), 1.5, form, True)
    assert abs(expected - plain) > 1e-3  # the offsets matter
    assert stats["sft"].item() == pytest.approx(rad_dpo_loss(pos_tok, pos_mask, neg_tok, neg_lcp, weights, beta=1.5,
                                                             form=form)[1]["sft"].item(), rel=1e-12)
    loss.backward()
    assert pos_off.grad is None  # a fixed score: nothing flows back into it
    assert pos_tok.grad is not None and bool(pos_tok.grad.abs().sum() > 0)


def test_rad_dpo_unknown_form():
    pos_tok, pos_mask, neg_tok, neg_lcp, _ = make_inputs(0)
    with pytest.raises(ValueError, match="unknown list-wise form"):
        rad_dpo_loss(pos_tok, pos_mask, neg_tok, neg_lcp, form="pairwise")


@pytest.mark.parametrize("seed", SEEDS)
def test_dpo_value_matches_reference(seed):
    pos_tok, pos_mask, neg_tok, _, _ = make_inputs(seed)
    ref_pos_tok, _, ref_neg_tok, _, _ = make_inputs(seed + 100)
    beta = [0.1, 0.5, 1.0, 2.0][seed]
    loss, stats = dpo_loss(pos_tok, pos_mask, neg_tok, ref_pos_tok, ref_neg_tok, beta=beta)
    expected = ref_dpo(*as_lists(pos_tok, pos_mask, neg_tok, ref_pos_tok, ref_neg_tok), beta)
    assert loss.item() == pytest.approx(expected, rel=REL)
    assert stats["pref"].item() == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("seed", SEEDS)
def test_simpo_value_matches_reference(seed):
    pos_tok, pos_mask, neg_tok, _, _ = make_inputs(seed)
    beta, gamma = [(2.0, 1.0), (2.5, 0.5), (1.0, 0.0), (10.0, 3.0)][seed]
    loss, _ = simpo_loss(pos_tok, pos_mask, neg_tok, beta=beta, gamma=gamma)
    expected = ref_simpo(*as_lists(pos_tok, pos_mask, neg_tok), beta, gamma)
    assert loss.item() == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("seed", SEEDS)
def test_orpo_value_matches_reference(seed):
    pos_tok, pos_mask, neg_tok, _, _ = make_inputs(seed)
    lam = [0.1, 0.25, 1.0, 2.0][seed]
    loss, stats = orpo_loss(pos_tok, pos_mask, neg_tok, lam=lam)
    pos, mask, neg = as_lists(pos_tok, pos_mask, neg_tok)
    expected = ref_orpo(pos, mask, neg, lam)
    assert loss.item() == pytest.approx(expected, rel=REL)
    assert stats["sft"].item() == pytest.approx(ref_orpo(pos, mask, neg, 0.0), rel=REL)


@pytest.mark.parametrize("seed", SEEDS)
def test_sft_value_matches_reference(seed):
    pos_tok, pos_mask, _, _, _ = make_inputs(seed)
    loss, _ = sft_loss(pos_tok, pos_mask)
    assert loss.item() == pytest.approx(ref_sft(*as_lists(pos_tok, pos_mask)), rel=REL)


def test_common_prefix_and_detach_match_loops():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 3, (40, 4), generator=g)
    b = torch.randint(0, 3, (40, 4), generator=g)
    b[0] = a[0]
    lcp = common_prefix(a, b)
    for i in range(a.shape[0]):
        k = 0
        while k < a.shape[1] and int(a[i, k]) == int(b[i, k]):
            k += 1
        assert int(lcp[i]) == k
    x = torch.randn(40, 5, dtype=torch.float64, requires_grad=True)
    y = detach_shared_prefix(x, lcp)
    assert torch.equal(y, x)  # values untouched
    y.sum().backward()
    for i in range(40):
        for t in range(5):
            assert x.grad[i, t].item() == (0.0 if t < int(lcp[i]) else 1.0)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def finite_difference(fn, values: list, h: float = 1e-6) -> list:
    """Central differences of fn(nested list) w.r.t. every leaf of a [S, X, T] nested list."""
    grad = []
    for s in range(len(values)):
        grad.append([])
        for x in range(len(values[s])):
            grad[s].append([])
            for t in range(len(values[s][x])):
                old = values[s][x][t]
                values[s][x][t] = old + h
                up = fn(values)
                values[s][x][t] = old - h
                down = fn(values)
                values[s][x][t] = old
                grad[s][x].append((up - down) / (2 * h))
    return grad


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("form", "tlgd", "multi_label_sft", "weighted"), RAD_SWITCHES)
def test_rad_dpo_gradients(seed, form, tlgd, multi_label_sft, weighted):
    pos_tok, pos_mask, neg_tok, neg_lcp, weights = make_inputs(seed)
    beta = [1.0, 2.0][seed]
    w = weights if weighted else None
    pos_tok.requires_grad_(True)
    neg_tok.requires_grad_(True)
    loss, _ = rad_dpo_loss(pos_tok, pos_mask, neg_tok, neg_lcp, w, beta=beta, form=form, tlgd=tlgd,
                           multi_label_sft=multi_label_sft)
    g_pos, g_neg = torch.autograd.grad(loss, (pos_tok, neg_tok))

    # 1. Autograd through the scalar reimplementation with an explicit per-token stop-gradient.
    ref = torch_ref_rad_dpo(pos_tok, pos_mask, neg_tok, neg_lcp, w, beta, form, tlgd, multi_label_sft)
    r_pos, r_neg = torch.autograd.grad(ref, (pos_tok, neg_tok))
    torch.testing.assert_close(g_pos, r_pos, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g_neg, r_neg, rtol=1e-9, atol=1e-12)

    # 2. Finite differences of the plain-Python reference (which knows nothing of TLGD).
    pos, mask, neg = as_lists(pos_tok.detach(), pos_mask, neg_tok.detach())
    wl = None if w is None else w.tolist()
    fd_pos = torch.tensor(finite_difference(
        lambda v: ref_rad_dpo(v, mask, neg, wl, beta, form, multi_label_sft), pos), dtype=torch.float64)
    fd_neg = torch.tensor(finite_difference(
        lambda v: ref_rad_dpo(pos, mask, v, wl, beta, form, multi_label_sft), neg), dtype=torch.float64)
    torch.testing.assert_close(g_pos, fd_pos, rtol=1e-5, atol=1e-7)
    shared = torch.arange(T)[None, None, :] < neg_lcp[:, :, None]  # t < lcp: the prefix shared with y_w*
    if tlgd:
        assert (g_neg[shared] == 0).all()  # exactly zero, not merely small
        assert (g_neg[~shared] != 0).all()  # every token after the prefix still learns
        torch.testing.assert_close(g_neg[~shared], fd_neg[~shared], rtol=1e-5, atol=1e-7)
    else:
        assert (g_neg != 0).all()
        torch.testing.assert_close(g_neg, fd_neg, rtol=1e-5, atol=1e-7)

    # Padded positive slots get nothing; without multi-label SFT neither do slots past y_w*.
    assert (g_pos[~pos_mask] == 0).all()
    if not multi_label_sft:
        assert (g_pos[:, 1:] == 0).all()
    else:
        assert (g_pos[pos_mask] != 0).all()


@pytest.mark.parametrize("form", ["paper", "softmax"])
def test_tlgd_at_the_logits(form):
    """Through log_softmax + gather, a negative's logits at its shared-prefix positions get exactly 0."""
    torch.manual_seed(0)
    v = 11
    sessions, n_pos, n_neg = 2, 2, 4
    pos_codes = torch.randint(0, v - 1, (sessions, n_pos, L))
    neg_codes = pos_codes[:, :1].expand(-1, n_neg, -1).clone()  # start from y_w*, then diverge at k
    diverge = torch.tensor([[0, 1, 2, 3], [2, 1, 0, 3]])  # k = L: same SID path, EOS still differs in grad
    for s in range(sessions):
        for j in range(n_neg):
            k = int(diverge[s, j])
            if k < L:
                neg_codes[s, j, k] = (neg_codes[s, j, k] + 1 + j) % (v - 1)
                neg_codes[s, j, k + 1:] = torch.randint(0, v - 1, (L - k - 1,))
    lcp = common_prefix(neg_codes, pos_codes[:, :1])
    assert torch.equal(lcp, diverge)
    eos = v - 1
    targets = torch.cat([torch.cat([pos_codes, neg_codes], 1),
                         torch.full((sessions, n_pos + n_neg, 1), eos)], dim=-1)  # [S, C, T]
    logits = torch.randn(sessions, n_pos + n_neg, T, v, dtype=torch.float64, requires_grad=True)
    tok = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    pos_mask = torch.ones(sessions, n_pos, dtype=torch.bool)
    loss, _ = rad_dpo_loss(tok[:, :n_pos], pos_mask, tok[:, n_pos:], lcp, form=form, tlgd=True)
    loss.backward()
    g = logits.grad[:, n_pos:]  # [S, N, T, V]
    for s in range(sessions):
        for j in range(n_neg):
            for t in range(T):
                if t < int(lcp[s, j]):
                    assert (g[s, j, t] == 0).all()
                else:
                    assert (g[s, j, t] != 0).any()
    assert (logits.grad[:, :n_pos] != 0).any(dim=-1).all()  # every positive token is trained


@pytest.mark.parametrize("form", ["paper", "softmax"])
def test_weights_carry_no_gradient(form):
    pos_tok, pos_mask, neg_tok, neg_lcp, weights = make_inputs(3)
    pos_tok.requires_grad_(True)
    w = weights.clone().requires_grad_(True)
    loss, _ = rad_dpo_loss(pos_tok, pos_mask, neg_tok, neg_lcp, w, form=form)
    (g_w,) = torch.autograd.grad(loss, (w,), allow_unused=True, retain_graph=True)
    assert g_w is None  # the loss is not connected to the weights in the graph
    loss.backward()
    assert w.grad is None
    assert pos_tok.grad is not None


def test_easiest_vs_hardest_negative():
    """Which negative the list-wise term pushes on.

    The "paper" form, as eq. 2 is written, is beta * log sum_j exp(r_w - r_j): its gradient share
    is softmax(r_w - r_j), largest for the *easiest* negative (largest margin), which needs it
    least. The softmax-DPO form -log sum_j exp(beta (r_j - r_w)) gives softmax(beta (r_j - r_w)),
    largest for the *hardest* negative (the one scored closest to, or above, y_w*).
    """
    pos_tok = torch.full((1, 1, T), -0.5, dtype=torch.float64)
    pos_mask = torch.ones(1, 1, dtype=torch.bool)
    hard, medium, easy = -0.6, -1.5, -3.0  # per-token log-probs: r_j = value, margins 0.1, 1.0, 2.5
    neg_tok = torch.tensor([[[hard] * T, [medium] * T, [easy] * T]], dtype=torch.float64, requires_grad=True)
    lcp = torch.zeros(1, 3, dtype=torch.long)
    push = {}
    for form in ("paper", "softmax"):
        loss, _ = rad_dpo_loss(pos_tok, pos_mask, neg_tok, lcp, beta=1.0, form=form)
        (g,) = torch.autograd.grad(loss, (neg_tok,))
        push[form] = g[0].sum(-1)  # d loss / d (sequence log-prob) of each negative, all > 0
        assert (push[form] > 0).all()  # lowering any negative's log-prob lowers the loss
    assert push["paper"].argmax() == 2 and push["paper"][2] > push["paper"][1] > push["paper"][0]
    assert push["softmax"].argmax() == 0 and push["softmax"][0] > push["softmax"][1] > push["softmax"][2]
    # The shares are those softmaxes exactly (per sequence log-prob, up to the common factor).
    margins = [(-0.5) - r for r in (hard, medium, easy)]
    for form, logits in (("paper", margins), ("softmax", [-m for m in margins])):
        e = [math.exp(x) for x in logits]
        share = [x / sum(e) for x in e]
        got = (push[form] / push[form].sum()).tolist()
        assert got == pytest.approx(share, rel=1e-9)


def test_paper_form_by_hand():
    """Eq. 1 + eq. 7 worked by hand: one positive, two negatives, 3-token SIDs (+ EOS: |y| = 4), no shared
    prefix, beta = 1, w = 1. Per-token log-probs -1 (y_w), -2, -3: r_w = -1, r = (-2, -3), margins (1, 2).
      L_SFT = 4;  z = log(e^1 + e^2) = 1 + log(1 + e);  L_PL = log(1 + e^-z)
      dL_PL/dr_w = -sigma(-z);  dL_PL/dr_j = sigma(-z) p_j, p = (1, e) / (1 + e)  (the easiest negative, margin 2,
      gets e / (1 + e) = 73% of the push);  each token gets 1/|y| of its sequence's reward gradient."""
    pos_tok = torch.full((1, 1, 4), -1.0, dtype=torch.float64, requires_grad=True)
    neg_tok = torch.tensor([[[-2.0] * 4, [-3.0] * 4]], dtype=torch.float64, requires_grad=True)
    loss, stats = rad_dpo_loss(pos_tok, torch.ones(1, 1, dtype=torch.bool), neg_tok,
                               torch.zeros(1, 2, dtype=torch.long), beta=1.0, form="paper")
    e = math.e
    z = 1 + math.log(1 + e)
    s = 1 / (1 + math.exp(z))  # sigma(-z)
    assert stats["sft"].item() == pytest.approx(4.0, rel=1e-12)
    assert stats["pref"].item() == pytest.approx(math.log(1 + math.exp(-z)), rel=1e-12)
    assert loss.item() == pytest.approx(4 + math.log1p(math.exp(-z)), rel=1e-12)
    loss.backward()
    assert pos_tok.grad[0, 0].tolist() == pytest.approx([-1 - s / 4] * 4, rel=1e-12)
    assert neg_tok.grad[0, 0].tolist() == pytest.approx([s / (1 + e) / 4] * 4, rel=1e-12)
    assert neg_tok.grad[0, 1].tolist() == pytest.approx([s * e / (1 + e) / 4] * 4, rel=1e-12)


def test_rdrw_direction_in_each_form():
    """What lowering every RDRW weight (w = 1 -> 0.5, as for a list of likely pseudo-negatives) does to the push on
    the negatives (the summed gradient on their log-probs): the softmax form softens it, as RDRW intends; the
    paper's eq. 7 strengthens it, since beta log sum_j w_j exp(r_w - r_j) falls with w and -log sigma of it rises.
    Sixteen negatives, margins 0..1.5 nats per token, beta = 1."""
    pos_tok = torch.full((1, 1, T), -1.0, dtype=torch.float64)
    neg = torch.tensor([[[-1.0 - 0.1 * j] * T for j in range(16)]], dtype=torch.float64)
    lcp = torch.zeros(1, 16, dtype=torch.long)
    push = {}
    for form in ("paper", "softmax"):
        for w in (1.0, 0.5):
            tok = neg.clone().requires_grad_(True)
            loss, _ = rad_dpo_loss(pos_tok, torch.ones(1, 1, dtype=torch.bool), tok, lcp,
                                   torch.full((1, 16), w, dtype=torch.float64), beta=1.0, form=form)
            (g,) = torch.autograd.grad(loss, (tok,))
            push[form, w] = g.sum().item()
    assert push["softmax", 0.5] < push["softmax", 1.0]  # softened
    assert push["paper", 0.5] > push["paper", 1.0]  # sharpened
