"""Beam search over SIDs: exact against brute-force scoring of every SID, padding-invariant, no duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sid_index.constraint import SidConstraint
from sid_index.decoding import beam_search, score_sids
from sid_index.tokens import SidVocab
from sid_index.trie import build_trie, unique_sids

SIZES = (4, 5, 6)
BASE = 40  # ordinary tokens 0..39 (0 = pad, 1 = EOS), then the SID tokens
EOS = 1
VOCAB = SidVocab(SIZES, (BASE, BASE + 4, BASE + 9))
PROMPTS = [[5, 6, 7, 8, 9], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17], [BASE + 1, BASE + 6, BASE + 12, 20]]


def make_model(init: float, dtype=torch.float32, seed: int = 0):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=BASE + sum(SIZES), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, initializer_range=init,
        tie_word_embeddings=False, eos_token_id=EOS, pad_token_id=0, bos_token_id=None,
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg).to(dtype).eval()


def make_trie(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, k, n) for k in SIZES], 1)
    sids, _ = unique_sids(codes)
    return build_trie(sids, SIZES)


@pytest.fixture(scope="module")
def peaked():
    """A random model whose scores are spread out (no near-ties), in float64 so comparisons are tight."""
    return make_model(0.3, torch.float64)


@pytest.fixture(scope="module")
def trie():
    return make_trie(60)


def brute_force(model, prompt, sids: np.ndarray, include_eos: bool):
    s = score_sids(model, prompt, torch.from_numpy(sids), VOCAB, EOS, include_eos=include_eos)
    order = torch.argsort(s, descending=True)
    return torch.from_numpy(sids)[order], s[order]


@pytest.mark.parametrize("include_eos", [True, False])
def test_exact_against_brute_force(peaked, trie, include_eos):
    sids = trie.sids()
    n = len(sids)
    width = 64
    assert n <= width and max(trie.nodes(level) for level in range(3)) <= width  # the search is exact
    res = beam_search(peaked, PROMPTS, VOCAB, EOS, width=width, constraint=SidConstraint(trie), include_eos=include_eos)
    assert res.codes.shape == (len(PROMPTS), width, 3) and res.scores.shape == (len(PROMPTS), width)
    for b, prompt in enumerate(PROMPTS):
        codes, scores = brute_force(peaked, prompt, sids, include_eos)
        assert torch.equal(res.codes[b, :n], codes)
        torch.testing.assert_close(res.scores[b, :n], scores, rtol=0, atol=1e-5)
        assert res.valid[b, :n].all()
        # fewer SIDs than beams: the rest are empty slots, never repeats
        assert torch.isinf(res.scores[b, n:]).all() and not res.valid[b, n:].any()
        assert (res.codes[b, n:] == -1).all()
        assert res.sids(b) == [tuple(r) for r in codes.tolist()]


def test_left_padding_changes_nothing(peaked, trie):
    con = SidConstraint(trie)
    batched = beam_search(peaked, PROMPTS, VOCAB, EOS, width=16, constraint=con)
    for b, prompt in enumerate(PROMPTS):
        alone = beam_search(peaked, [prompt], VOCAB, EOS, width=16, constraint=con)
        assert torch.equal(alone.codes[0], batched.codes[b])
        torch.testing.assert_close(alone.scores[0], batched.scores[b], rtol=0, atol=1e-9)


def test_padded_constraint_layout_same_beams(peaked, trie):
    """The CUDA layout of the constraint (fixed-width CSR gather) gives the CPU one's beams, on CPU."""
    for width in (5, 64):
        ragged = beam_search(peaked, PROMPTS, VOCAB, EOS, width=width, constraint=SidConstraint(trie, ragged=True))
        padded = beam_search(peaked, PROMPTS, VOCAB, EOS, width=width,
                             constraint=SidConstraint(trie, ragged=False, dense_budget=0))
        assert torch.equal(ragged.codes, padded.codes) and torch.equal(ragged.scores, padded.scores)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(trie):
    model = make_model(0.3)
    cpu = beam_search(model, PROMPTS, VOCAB, EOS, width=32, constraint=SidConstraint(trie))
    gpu = beam_search(model.to("cuda"), PROMPTS, VOCAB, EOS, width=32, constraint=SidConstraint(trie, "cuda"))
    assert gpu.codes.device.type == "cuda"
    torch.testing.assert_close(gpu.scores.cpu(), cpu.scores, rtol=0, atol=1e-3)
    assert (gpu.valid.cpu() == cpu.valid).all()
    free = beam_search(model, PROMPTS, VOCAB, EOS, width=32)
    assert free.codes.device.type == "cuda"


def test_float32_model_matches_reference():
    model, trie = make_model(0.2), make_trie(40, seed=1)
    res = beam_search(model, PROMPTS[:2], VOCAB, EOS, width=64, constraint=SidConstraint(trie))
    n = trie.num_sids
    for b, prompt in enumerate(PROMPTS[:2]):
        codes, scores = brute_force(model, prompt, trie.sids(), True)
        torch.testing.assert_close(res.scores[b, :n], scores, rtol=0, atol=1e-4)
        gap = (scores[:-1] - scores[1:]).min()
        if gap > 1e-4:  # order is only defined up to float32 noise
            assert torch.equal(res.codes[b, :n], codes)


@pytest.mark.parametrize("width", [1, 3, 7, 20])
def test_small_width_valid_distinct_sorted(peaked, trie, width):
    con = SidConstraint(trie)
    res = beam_search(peaked, PROMPTS, VOCAB, EOS, width=width, constraint=con)
    assert res.valid.all()  # 51 SIDs >= width: every slot is filled
    assert con.contains(res.codes.view(-1, 3)).all()
    for b, prompt in enumerate(PROMPTS):
        sids = res.sids(b)
        assert len(set(sids)) == width
        assert (res.scores[b, :-1] >= res.scores[b, 1:]).all()
        ref = score_sids(peaked, prompt, res.codes[b], VOCAB, EOS)
        torch.testing.assert_close(res.scores[b], ref, rtol=0, atol=1e-9)
        best = brute_force(peaked, prompt, trie.sids(), True)[1][0]
        assert res.scores[b, 0] <= best + 1e-9


def test_index_smaller_than_width():
    trie = build_trie(np.array([[0, 1, 2], [0, 1, 3], [3, 4, 5]]), SIZES)
    res = beam_search(make_model(0.3), PROMPTS, VOCAB, EOS, width=8, constraint=SidConstraint(trie))
    for b in range(len(PROMPTS)):
        assert sorted(res.sids(b)) == [(0, 1, 2), (0, 1, 3), (3, 4, 5)]
        assert res.valid[b].sum() == 3 and torch.isinf(res.scores[b, 3:]).all()
        assert (res.codes[b, 3:] == -1).all()


def test_unconstrained_hallucinates_constrained_never():
    model, trie = make_model(0.02), make_trie(30, seed=2)  # untrained: near-uniform over 55 tokens
    con = SidConstraint(trie)
    free = beam_search(model, PROMPTS, VOCAB, EOS, width=16, constraint=con, constrained=False)
    finite = torch.isfinite(free.scores)
    assert finite.all()
    assert (~free.valid).sum() > 0  # invalid SIDs come out
    assert torch.equal(free.valid, con.contains(free.codes.view(-1, 3)).view(free.valid.shape))
    bare = beam_search(model, PROMPTS, VOCAB, EOS, width=16)  # no constraint at all: same beams
    assert torch.equal(bare.tokens, free.tokens)
    assert torch.equal(bare.valid, (bare.codes >= 0).all(-1))
    held = beam_search(model, PROMPTS, VOCAB, EOS, width=16, constraint=con)
    assert held.valid.all() and con.contains(held.codes.view(-1, 3)).all()
    for b in range(len(PROMPTS)):  # free beams are distinct token sequences
        assert len({tuple(r) for r in free.tokens[b].tolist()}) == 16


def test_unconstrained_width_one_is_greedy(peaked):
    res = beam_search(peaked, PROMPTS[:1], VOCAB, EOS, width=1, include_eos=False)
    ids = torch.tensor([PROMPTS[0]])
    for _ in range(3):
        nxt = peaked(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    assert res.tokens[0, 0].tolist() == ids[0, -3:].tolist()


def test_score_sids_chunks_and_eos(peaked, trie):
    sids = torch.from_numpy(trie.sids())
    whole = score_sids(peaked, PROMPTS[0], sids, VOCAB, EOS)
    torch.testing.assert_close(score_sids(peaked, PROMPTS[0], sids, VOCAB, EOS, chunk=7), whole, rtol=0, atol=1e-9)
    no_eos = score_sids(peaked, PROMPTS[0], sids, VOCAB, EOS, include_eos=False)
    assert (no_eos > whole).all()
    assert score_sids(peaked, PROMPTS[0], sids[:0], VOCAB, EOS).shape == (0,)


@pytest.mark.parametrize("include_eos", [True, False])
def test_index_prior_exact_against_brute_force(peaked, trie, include_eos):
    """Model score + weight * (|q|^2 - |q - v_SID|^2), ranked over every SID, equals the fused search."""
    from sid_index.decoding import IndexPrior

    rng = np.random.default_rng(4)
    centroids = [rng.normal(size=(k, 8)) for k in SIZES]
    vectors = rng.normal(size=(len(PROMPTS), 8))
    vectors[1] = 0  # no vector: the prior only shifts every SID by -|v|^2 (it still ranks)
    prior = IndexPrior.of(centroids, vectors, 3.0, "cpu")
    sids = torch.from_numpy(trie.sids())
    res = beam_search(peaked, PROMPTS, VOCAB, EOS, width=64, constraint=SidConstraint(trie), include_eos=include_eos,
                      prior=prior)
    n = len(sids)
    for b, prompt in enumerate(PROMPTS):
        model = score_sids(peaked, prompt, sids, VOCAB, EOS, include_eos=include_eos)
        fused = model + prior.score(sids[None])[b].double()  # [B, S]: one row per request
        order = torch.argsort(fused, descending=True)
        assert torch.equal(res.codes[b, :n], sids[order])
        torch.testing.assert_close(res.scores[b, :n], fused[order], rtol=1e-6, atol=1e-4)  # float32 centroids
    plain = beam_search(peaked, PROMPTS, VOCAB, EOS, width=64, constraint=SidConstraint(trie), include_eos=include_eos)
    assert not torch.equal(plain.codes, res.codes)  # the prior changed the rankings
    with pytest.raises(ValueError, match="constrained search"):
        beam_search(peaked, PROMPTS, VOCAB, EOS, width=8, constraint=SidConstraint(trie), constrained=False,
                    prior=prior)


def item_table(trie, seed: int = 5):
    """Every SID with one item, plus 90 more items on random SIDs (several items per SID), random vectors."""
    from sid_index.decoding import ItemPriorTable

    rng = np.random.default_rng(seed)
    sids = trie.sids()
    item_sids = np.concatenate([sids, sids[rng.integers(0, len(sids), 90)]])
    item_vectors = rng.normal(size=(len(item_sids), 8))
    return ItemPriorTable(trie, item_vectors, item_sids), item_sids, item_vectors


@pytest.mark.parametrize("lexical", [False, True])
def test_item_prior_heads_are_the_best_item_below_each_node(trie, lexical):
    """heads[t][b, node] = weight x max over the items below that node of 2 q.e - |e|^2 (+ the request's
    lexical score of the item), by a naive loop over prefixes; a request without a vector gets no prior."""
    from sid_index.decoding import lexical_stack

    table, item_sids, item_vectors = item_table(trie)
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(3, 8))
    vectors[2] = 0
    lex = np.zeros((3, len(item_vectors)))
    if lexical:
        lex[0] = rng.uniform(0, 4, size=len(item_vectors))  # request 1 has no lexical row: zeros
        rows = lexical_stack([lex[0], None, None], table)
        np.testing.assert_array_equal(rows, lex.astype(np.float32))
    else:
        rows = lexical_stack([None] * 3, table)
        assert rows is None
    prior = table.prior(vectors, 2.5, rows)
    sids = trie.sids()
    for level in range(1, 4):
        prefixes = sorted({tuple(s[:level]) for s in sids.tolist()})  # node order: sorted prefixes
        assert prior.heads[level - 1].shape == (3, len(prefixes))
        for node, prefix in enumerate(prefixes):
            below = [i for i, s in enumerate(item_sids.tolist()) if tuple(s[:level]) == prefix]
            for b in range(2):
                e = item_vectors[below]
                want = 2.5 * max(2 * e @ vectors[b] - (e * e).sum(-1) + lex[b, below])
                assert prior.heads[level - 1][b, node].item() == pytest.approx(want, rel=1e-5, abs=1e-4)
        assert (prior.heads[level - 1][2] == 0).all()
    import itertools

    from sid_index.decoding import ItemPriorTable

    missing = next(c for c in itertools.product(*map(range, SIZES)) if not (sids == c).all(1).any())
    with pytest.raises(ValueError, match="not in the trie"):
        ItemPriorTable(trie, item_vectors[:1], np.asarray([missing]))


@pytest.mark.parametrize("include_eos", [True, False])
def test_item_prior_exact_against_brute_force(peaked, trie, include_eos):
    """At an exact width the fused search ranks every SID by model score + weight x its best item's score."""
    table, _, _ = item_table(trie)
    rng = np.random.default_rng(7)
    prior = table.prior(rng.normal(size=(len(PROMPTS), 8)), 0.5)
    sids = torch.from_numpy(trie.sids())
    leaves = torch.arange(len(sids))[None].expand(len(PROMPTS), -1)  # sorted SIDs are the leaves in order
    res = beam_search(peaked, PROMPTS, VOCAB, EOS, width=64, constraint=SidConstraint(trie), include_eos=include_eos,
                      prior=prior)
    n = len(sids)
    for b, prompt in enumerate(PROMPTS):
        fused = score_sids(peaked, prompt, sids, VOCAB, EOS, include_eos=include_eos) + prior.score(leaves)[b].double()
        order = torch.argsort(fused, descending=True)
        assert torch.equal(res.codes[b, :n], sids[order])
        torch.testing.assert_close(res.scores[b, :n], fused[order], rtol=1e-6, atol=1e-4)
    plain = beam_search(peaked, PROMPTS, VOCAB, EOS, width=64, constraint=SidConstraint(trie), include_eos=include_eos)
    assert not torch.equal(plain.codes, res.codes)


@pytest.mark.parametrize("width", [1, 3, 7, 20])
@pytest.mark.parametrize("ragged", [True, False])
def test_item_prior_lookahead_finds_the_best_items_sids_at_any_width(peaked, trie, width, ragged):
    """The lookahead is exact: when the prior outweighs the model, a search of any width returns exactly the
    `width` SIDs whose best items score highest, in that order (a prefix-by-prefix increment without the
    lookahead prunes some of them at narrow widths); both constraint layouts."""
    table, item_sids, item_vectors = item_table(trie)
    rng = np.random.default_rng(8)
    vectors = rng.normal(size=(len(PROMPTS), 8))
    prior = table.prior(vectors, 1e4)
    res = beam_search(peaked, PROMPTS, VOCAB, EOS, width=width, constraint=SidConstraint(trie, ragged=ragged),
                      prior=prior)
    for b in range(len(PROMPTS)):
        best = {}
        for s, e in zip(map(tuple, item_sids.tolist()), item_vectors, strict=True):
            best[s] = max(best.get(s, -np.inf), 2 * e @ vectors[b] - e @ e)
        want = sorted(best, key=best.get, reverse=True)[:width]
        assert res.sids(b) == want
