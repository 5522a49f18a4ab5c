"""Packing equivalence: one packed forward pass per batch equals a separate forward pass per candidate.

A tiny random Qwen3ForCausalLM (float32, eval mode) scores every prompt + candidate + EOS alone;
`candidate_logps(model, pack(...), hidden=True)` must give the same per-token log-probs (the L SID
tokens and EOS) and the same final hidden state at the last SID token (the position that predicts
EOS, h(y, x) of eq. 5). Tolerance: max abs diff <= 1e-5 in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from trainer.packing import candidate_logps, pack

ATOL = 1e-5  # max abs diff, float32
VOCAB, L, EOS, PAD = 100, 3, 1, 0


def tiny_model(attn: str) -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, tie_word_embeddings=False,
        attn_implementation=attn,
    )
    model = Qwen3ForCausalLM(config).to(torch.float32).eval()
    assert model.config._attn_implementation == attn
    return model


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def model(request):
    return tiny_model(request.param)


def random_batch(seed: int, prompt_lengths, cands_per_row):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(2, VOCAB, size=n).tolist() for n in prompt_lengths]
    cands = [rng.integers(2, VOCAB, size=(c, L)).astype(np.int64) for c in cands_per_row]
    return prompts, cands


def separate(model, prompt, cand) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: prompt + candidate + EOS alone, default positions, no custom mask."""
    seq = torch.tensor(list(prompt) + [int(x) for x in cand] + [EOS])[None]
    with torch.no_grad():
        out = model(input_ids=seq, output_hidden_states=True, use_cache=False)
    logp = torch.log_softmax(out.logits[0].float(), dim=-1)
    p = len(prompt)
    # Target i (SID tokens, then EOS) sits at column p + i and is predicted at column p + i - 1.
    tok = torch.stack([logp[p - 1 + i, seq[0, p + i]] for i in range(L + 1)])
    return tok, out.hidden_states[-1][0, p + L - 1]


BATCHES = [
    (0, [5, 9, 3, 7], [2, 4, 1, 3]),
    (1, [1, 6], [5, 2]),
    (2, [4, 4, 8], [3, 0, 2]),  # a row without candidates
    (3, [12], [6]),
]


@pytest.mark.parametrize(("seed", "prompt_lengths", "cands_per_row"), BATCHES)
def test_packed_equals_separate(model, seed, prompt_lengths, cands_per_row):
    prompts, cands = random_batch(seed, prompt_lengths, cands_per_row)
    packed = pack(prompts, cands, eos_id=EOS, pad_id=PAD)
    assert packed.num_candidates == sum(cands_per_row)
    with torch.no_grad():
        tok, hid = candidate_logps(model, packed, hidden=True)
    assert tok.shape == (sum(cands_per_row), L + 1) and hid.shape == (sum(cands_per_row), 64)
    c = 0
    for prompt, rows in zip(prompts, cands, strict=True):
        for cand in rows:  # candidates are numbered row by row, in order
            ref_tok, ref_hid = separate(model, prompt, cand)
            assert (tok[c] - ref_tok).abs().max().item() <= ATOL
            assert (hid[c] - ref_hid).abs().max().item() <= ATOL
            assert packed.targets[c].tolist() == [int(x) for x in cand] + [EOS]
            c += 1
    assert c == packed.num_candidates
    assert (tok < 0).all()


def test_eager_and_sdpa_agree():
    prompts, cands = random_batch(0, [5, 9, 3, 7], [2, 4, 1, 3])
    packed = pack(prompts, cands, eos_id=EOS, pad_id=PAD)
    with torch.no_grad():
        a = candidate_logps(tiny_model("eager"), packed, hidden=True)
        b = candidate_logps(tiny_model("sdpa"), packed, hidden=True)
    assert (a[0] - b[0]).abs().max().item() <= ATOL
    assert (a[1] - b[1]).abs().max().item() <= ATOL


def test_no_hidden_by_default(model):
    prompts, cands = random_batch(0, [5, 9], [2, 1])
    with torch.no_grad():
        tok, hid = candidate_logps(model, pack(prompts, cands, eos_id=EOS, pad_id=PAD))
    assert hid is None and tok.shape == (3, L + 1)


def test_candidates_do_not_see_each_other(model):
    """Changing one candidate's tokens changes nothing for any other candidate, in its row or elsewhere."""
    prompts, cands = random_batch(5, [5, 9, 3], [3, 4, 2])
    with torch.no_grad():
        tok, hid = candidate_logps(model, pack(prompts, cands, eos_id=EOS, pad_id=PAD), hidden=True)
    changed = [c.copy() for c in cands]
    changed[1][1] = (changed[1][1] + 7) % (VOCAB - 2) + 2  # row 1, candidate 1 (a middle one): global index 4
    target = 3 + 1
    with torch.no_grad():
        tok2, hid2 = candidate_logps(model, pack(prompts, changed, eos_id=EOS, pad_id=PAD), hidden=True)
    others = [i for i in range(tok.shape[0]) if i != target]
    assert (tok2[others] - tok[others]).abs().max().item() <= 1e-6
    assert (hid2[others] - hid[others]).abs().max().item() <= 1e-6
    assert (tok2[target] - tok[target]).abs().max().item() > 1e-3  # the changed one did change
    assert (hid2[target] - hid[target]).abs().max().item() > 1e-3


def test_layout_positions_and_segments():
    prompts, cands = random_batch(0, [5, 9, 3], [2, 4, 1])
    packed = pack(prompts, cands, eos_id=EOS, pad_id=PAD)
    p_end = max(len(p) for p in prompts)
    assert packed.prompt_end == p_end
    assert packed.input_ids.shape[1] == p_end + 4 * L
    c = 0
    for b, (prompt, rows) in enumerate(zip(prompts, cands, strict=True)):
        p = len(prompt)
        ids, pos, seg = packed.input_ids[b].tolist(), packed.position_ids[b].tolist(), packed.segment[b].tolist()
        assert ids[:p_end - p] == [PAD] * (p_end - p) and seg[:p_end - p] == [-1] * (p_end - p)
        assert ids[p_end - p:p_end] == prompt  # left-padded: every prompt ends at column P-1
        assert pos[p_end - p:p_end] == list(range(p))
        assert seg[p_end - p:p_end] == [0] * p
        for j, cand in enumerate(rows):
            col = p_end + j * L
            assert int(packed.cand_row[c]) == b and int(packed.cand_col[c]) == col
            assert ids[col:col + L] == cand.tolist()
            assert pos[col:col + L] == list(range(p, p + L))  # each candidate starts right after its prompt
            assert seg[col:col + L] == [j + 1] * L
            c += 1
        tail = p_end + len(rows) * L
        assert ids[tail:] == [PAD] * (len(ids) - tail) and seg[tail:] == [-1] * (len(ids) - tail)


def test_attention_mask_matches_rules():
    """The mask element by element, against the rules written as a loop."""
    prompts, cands = random_batch(0, [4, 2], [3, 1])
    packed = pack(prompts, cands, eos_id=EOS, pad_id=PAD)
    mask = packed.attention_mask(torch.float32)
    b_, t_ = packed.input_ids.shape
    assert mask.shape == (b_, 1, t_, t_) and mask.dtype == torch.float32
    blocked = torch.finfo(torch.float32).min
    for b in range(b_):
        seg = packed.segment[b].tolist()
        for q in range(t_):
            for k in range(t_):
                if seg[q] == -1:  # padding: only itself, so no row is empty
                    allowed = k == q
                elif seg[q] == 0:  # prompt: causal within the prompt
                    allowed = seg[k] == 0 and k <= q
                else:  # candidate: the whole prompt and its own earlier tokens
                    allowed = seg[k] == 0 or (seg[k] == seg[q] and k <= q)
                assert mask[b, 0, q, k].item() == (0.0 if allowed else blocked), (b, q, k)
