"""The vectorised trie mask against brute-force enumeration over random valid-SID sets."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sid_index.constraint import SidConstraint
from sid_index.tokens import SidVocab
from sid_index.trie import build_trie, unique_sids


@st.composite
def sid_sets(draw):
    levels = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(2, 6), min_size=levels, max_size=levels))
    sids = draw(st.sets(st.tuples(*[st.integers(0, k - 1) for k in sizes]), min_size=1, max_size=60))
    return sizes, sorted(sids)


def brute_mask(valid: list[tuple[int, ...]], prefix: tuple[int, ...], k: int) -> list[bool]:
    t = len(prefix)
    allowed = {v[t] for v in valid if v[:t] == prefix}
    return [c in allowed for c in range(k)]


MODES = {"dense": dict(dense_budget=1 << 26), "csr-ragged": dict(dense_budget=0, ragged=True),
         "csr-padded": dict(dense_budget=0, ragged=False)}


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None)
@given(data=sid_sets())
def test_mask_equals_brute_force(mode, data):
    sizes, valid = data
    trie = build_trie(np.array(valid), sizes)
    con = SidConstraint(trie, **MODES[mode])
    for t in range(len(sizes)):
        # every prefix in the box, plus out-of-range codes, which must be refused
        prefixes = list(itertools.product(*[range(-1, k + 1) for k in sizes[:t]]))
        batch = torch.tensor(prefixes, dtype=torch.long).reshape(len(prefixes), t)
        got = con.mask(batch)
        assert got.shape == (len(prefixes), sizes[t])
        expected = [brute_mask(valid, p, sizes[t]) for p in prefixes]
        assert got.tolist() == expected


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=40, deadline=None)
@given(data=sid_sets())
def test_contains_and_roundtrip(mode, data):
    sizes, valid = data
    trie = build_trie(np.array(valid), sizes)
    assert trie.sids().tolist() == [list(v) for v in valid]
    con = SidConstraint(trie, **MODES[mode])
    box = list(itertools.product(*[range(k) for k in sizes]))
    got = con.contains(torch.tensor(box)).tolist()
    assert got == [b in set(valid) for b in box]


@pytest.mark.parametrize("ragged", [True, False])
def test_node_walk_equals_prefix_mask(ragged):
    rng = np.random.default_rng(1)
    sizes = [16, 8, 32]
    codes = np.stack([rng.integers(0, k, 500) for k in sizes], 1)
    sids, _ = unique_sids(codes)
    con = SidConstraint(build_trie(sids, sizes), dense_budget=100, ragged=ragged)  # level 0 dense, 1-2 CSR
    assert con.is_dense(0) and not con.is_dense(1) and not con.is_dense(2)
    beams = torch.from_numpy(sids[rng.integers(0, len(sids), 128)])
    nodes = con.root(128)
    for level in range(3):
        assert torch.equal(con.mask_nodes(level, nodes), con.mask(beams[:, :level]))
        assert con.mask_nodes(level, nodes)[torch.arange(128), beams[:, level]].all()
        nodes = con.advance(nodes, level, beams[:, level])
    assert (nodes >= 0).all()
    # the leaf node id is the row of the sorted SID table
    assert torch.equal(torch.from_numpy(sids)[nodes], beams)


def test_mask_logits_token_space():
    sizes = [3, 2, 4]
    valid = [(0, 1, 3), (2, 0, 0), (2, 0, 2)]
    con = SidConstraint(build_trie(np.array(valid), sizes))
    vocab = SidVocab(tuple(sizes), offsets=(10, 13, 15))  # tokens 10-12, 13-14, 15-18; EOS = 1
    logits = torch.randn(2, 20)
    out = con.mask_logits(logits, torch.empty(2, 0, dtype=torch.long), vocab, eos_id=1)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [10, 12]
    prefix = torch.tensor([[12, 13], [10, 14]])  # (2,0) valid, (0,1) valid
    out = con.mask_logits(logits, prefix, vocab, eos_id=1)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [15, 17]
    assert torch.isfinite(out[1]).nonzero().flatten().tolist() == [18]
    assert torch.equal(out[0, 15], logits[0, 15])
    full = torch.tensor([[12, 13, 15]])
    out = con.mask_logits(logits[:1], full, vocab, eos_id=1)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [1]
    # a non-SID token inside the prefix allows nothing
    out = con.mask_logits(logits[:1], torch.tensor([[5]]), vocab, eos_id=1)
    assert not torch.isfinite(out).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(2)
    sizes = [64, 32, 16]
    sids, _ = unique_sids(np.stack([rng.integers(0, k, 3000) for k in sizes], 1))
    trie = build_trie(sids, sizes)
    cpu = SidConstraint(trie)
    for ragged in (False, True):
        gpu = SidConstraint(trie, device="cuda", dense_budget=1000, ragged=ragged)
        for t in range(3):
            prefix = torch.from_numpy(sids[rng.integers(0, len(sids), 128), :t])
            assert torch.equal(cpu.mask(prefix), gpu.mask(prefix.cuda()).cpu())


def test_a_memory_mapped_index_gives_a_constraint_without_warnings(tiny_index):
    """The trie arrays of a loaded index are read-only memory maps; the CSR constraint wraps them without a
    copy and without torch's non-writable-array warning (it only reads them), and still answers correctly."""
    import warnings

    from sid_index.index import load_index

    index = load_index(tiny_index.root)  # a fresh load: the warning would fire once per process otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = index.constraint("cpu", dense_budget=0)
    sids = torch.from_numpy(index.trie.sids().astype(np.int64))
    assert c.contains(sids).all() and not c.is_dense(2)
