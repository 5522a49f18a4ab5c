"""Both engines against brute-force scoring of every SID of the index, and the request micro-batcher."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from server.engine import BatchingEngine, BatchStats, DeadlineExceeded, Hits, QueueFull
from server.native_engine import NativeEngine
from server.settings import ServerSettings
from sid_index.decoding import score_sids

from .conftest import exact_width

TOP = 20


def brute_force(ckpt, index, prompt, score_eos):
    sids = torch.from_numpy(index.trie.sids().astype(np.int64))
    scores = score_sids(ckpt.model, prompt, sids, ckpt.vocab, ckpt.eos_id, include_eos=score_eos)
    order = torch.argsort(scores, descending=True, stable=True)
    return sids[order].numpy(), scores[order].numpy()


def assert_same_ranking(hits: Hits, ref_codes, ref_scores, k: int = TOP, tol: float = 1e-4):
    """Top-k equal to the reference: same scores, and the same SIDs wherever scores are not tied."""
    assert len(hits.codes) >= k
    np.testing.assert_allclose(hits.scores[:k], ref_scores[:k], atol=tol, rtol=0)
    ref = {tuple(c): s for c, s in zip(ref_codes.tolist(), ref_scores.tolist(), strict=True)}
    for codes, score in zip(hits.codes[:k].tolist(), hits.scores[:k].tolist(), strict=True):
        assert tuple(codes) in ref, f"{codes} is not a SID of the index"
        assert abs(ref[tuple(codes)] - score) < tol
    clear = ref_scores[:k] > ref_scores[k] + tol  # not tied with anything outside the top k
    assert {tuple(c) for c in ref_codes[:k][clear].tolist()} <= {tuple(c) for c in hits.codes[:k].tolist()}


def prompts_of(served, tiny_index, requests):
    from server.retriever import Retriever

    r = Retriever(served, tiny_index)
    return [r.prompt(q, h) for q, h in requests]


@pytest.mark.parametrize("score_eos", [False, True])
def test_native_engine_exact(served, tiny_index, requests, score_eos):
    prompts = prompts_of(served, tiny_index, requests)
    engine = NativeEngine(served, tiny_index, score_eos=score_eos)
    width = exact_width(tiny_index, score_eos)
    hits = engine.search_many(prompts, width)
    for prompt, h in zip(prompts, hits, strict=True):
        assert_same_ranking(h, *brute_force(served, tiny_index, prompt, score_eos))


def test_native_engine_mixed_widths_equal_separate_searches(served, tiny_index, requests):
    prompts = prompts_of(served, tiny_index, requests)[:4]
    engine = NativeEngine(served, tiny_index)
    widths = [3, 16, 1, 7]
    together, stats = engine.decode(prompts, widths)
    assert stats.requests == 4 and stats.invalid == 0
    for prompt, w, h in zip(prompts, widths, together, strict=True):
        alone = engine.search_many([prompt], w)[0]
        assert len(h.codes) == w
        np.testing.assert_array_equal(h.codes, alone.codes)
        np.testing.assert_allclose(h.scores, alone.scores, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("score_eos", [False, True])
def test_vllm_engine_exact_and_equal_to_native(served_path, served, tiny_index, requests, score_eos):
    pytest.importorskip("vllm")
    from server.vllm_engine import VllmEngine
    from trainer.model import load_checkpoint

    prompts = prompts_of(served, tiny_index, requests)
    width = exact_width(tiny_index, score_eos)
    settings = ServerSettings(model=str(served_path), index=str(tiny_index.root), engine="vllm", dtype="float32",
                              score_eos=score_eos, max_beam_width=width, beam_width=width, vllm_kv_cache_gib=0.25)
    engine = VllmEngine(load_checkpoint(served_path, with_model=False), tiny_index, settings, max_batch=8)
    engine.start()
    try:
        hits, stats = engine.decode(prompts, [width] * len(prompts))  # one batch: all requests share each step
        assert stats.invalid == 0
        native = NativeEngine(served, tiny_index, score_eos=score_eos).search_many(prompts, width)
        for prompt, h, n in zip(prompts, hits, native, strict=True):
            assert_same_ranking(h, *brute_force(served, tiny_index, prompt, score_eos))
            assert_same_ranking(h, n.codes, n.scores, k=min(len(h.codes), len(n.codes)) - 1)
        narrow = engine.search_many(prompts[:2], 4)  # narrow beams: same as the native engine's narrow search
        for h, n in zip(narrow, NativeEngine(served, tiny_index, score_eos=score_eos).search_many(prompts[:2], 4),
                        strict=True):
            np.testing.assert_allclose(h.scores, n.scores, atol=1e-4)
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.parametrize(("form", "lexical"), [("sid", 0.0), ("item", 0.0), ("item", 1.5)])
def test_both_engines_fuse_the_index_prior_exactly(served_path, served, tiny_index, requests, form, lexical):
    """With `index_prior` both engines return the brute-force ranking of model log-prob + the prior's score,
    computed here over every SID (`IndexPrior.score`: the centroid sum; `ItemPrior.score`: the SID's best
    item, with the query's weighted BM25 score in each item's when `lexical`), with the same scores."""
    from server.retriever import Retriever
    from sid_index.decoding import IndexPrior, ItemPriorTable
    from sid_index.index import load_centroids
    from trainer.model import load_checkpoint

    weight = 2.0
    encoded = [Retriever(served, tiny_index, index_prior=weight, index_prior_form=form,
                         lexical_prior=lexical).encode(q, h) for q, h in requests]
    prompts, priors, lexicals = [e.prompt for e in encoded], [e.prior for e in encoded], [e.lexical for e in encoded]
    assert sum(x is not None for x in lexicals) == (sum(bool(q) for q, _ in requests) if lexical else 0)
    assert not lexical or any(x is not None and x.max() == lexical for x in lexicals)  # some query's words match
    width = exact_width(tiny_index, False)
    sids = torch.from_numpy(tiny_index.trie.sids().astype(np.int64))  # row i: leaf i of the trie
    centroids, table = load_centroids(tiny_index), ItemPriorTable.of(tiny_index)

    def prior_score(prior: np.ndarray, lex: np.ndarray | None) -> np.ndarray:
        if form == "item":
            return table.prior(prior[None], weight, None if lex is None else lex[None]).score(
                torch.arange(len(sids))[None])[0].numpy()
        return IndexPrior.of(centroids, prior[None], weight, "cpu").score(sids[None])[0].numpy()

    engines = [NativeEngine(served, tiny_index, index_prior=weight, index_prior_form=form)]
    if __import__("importlib").util.find_spec("vllm") is not None:
        from server.vllm_engine import VllmEngine

        settings = ServerSettings(model=str(served_path), index=str(tiny_index.root), engine="vllm", dtype="float32",
                                  max_beam_width=width, beam_width=width, vllm_kv_cache_gib=0.25, index_prior=weight,
                                  index_prior_form=form)
        engines.append(VllmEngine(load_checkpoint(served_path, with_model=False), tiny_index, settings, max_batch=8))
    narrow = []
    for engine in engines:
        engine.start()
        try:
            hits, stats = engine.decode(prompts, [width] * len(prompts), None, priors, lexicals)
            assert stats.invalid == 0
            for prompt, prior, lex, h in zip(prompts, priors, lexicals, hits, strict=True):
                model = score_sids(served.model, prompt, sids, served.vocab, served.eos_id, include_eos=False)
                fused = model.numpy() + prior_score(prior, lex)
                order = np.argsort(-fused, kind="stable")
                assert_same_ranking(h, sids.numpy()[order], fused[order])
            narrow.append(engine.decode(prompts[:3], [4] * 3, None, priors[:3], lexicals[:3])[0])  # pruned beams
        finally:
            engine.close()
    for h, n in zip(narrow[-1], narrow[0], strict=True):  # vLLM's narrow search = the native one's
        np.testing.assert_array_equal(h.codes, n.codes)
        np.testing.assert_allclose(h.scores, n.scores, atol=1e-4)
    assert len(engines) == 2 or pytest.skip("vLLM not installed: native engine checked only")


@pytest.mark.slow
def test_vllm_serves_text_input_checkpoints_through_prompt_embeddings(text_served_path, tiny_index, requests):
    """A text-input checkpoint on vLLM (prompt embeddings) gives the native engine's ranking and scores, with the
    query vector and with history SID tokens shifted by their centroids; 0 invalid SIDs."""
    pytest.importorskip("vllm")
    from server.retriever import Retriever
    from server.vllm_engine import VllmEngine
    from trainer.model import load_checkpoint

    ckpt = load_checkpoint(text_served_path, dtype=torch.float32)
    retriever = Retriever(ckpt, tiny_index)
    history_only = [(None, h) for _, h in requests if h][:2]
    encoded = [retriever.encode(q, h) for q, h in [*requests, *history_only]]
    prompts, vectors = [e.prompt for e in encoded], [e.vector for e in encoded]
    assert any(v is not None for v in vectors) and any(v is None for v in vectors)
    width = exact_width(tiny_index)
    settings = ServerSettings(model=str(text_served_path), index=str(tiny_index.root), engine="vllm", dtype="float32",
                              max_beam_width=width, beam_width=width, vllm_kv_cache_gib=0.25)
    engine = VllmEngine(load_checkpoint(text_served_path, with_model=False), tiny_index, settings, max_batch=8)
    engine.start()
    try:
        hits, stats = engine.decode(prompts, [width] * len(prompts), vectors)
        assert stats.invalid == 0
        native = NativeEngine(ckpt, tiny_index).search_many(prompts, width, vectors)
        for h, n in zip(hits, native, strict=True):
            assert_same_ranking(h, n.codes, n.scores, k=min(len(h.codes), len(n.codes)) - 1)
    finally:
        engine.close()


class SlowEngine(BatchingEngine):
    """Sleeps instead of decoding; records the batches it saw."""

    name = "slow"

    def __init__(self, delay: float, **kw):
        super().__init__(**kw)
        self.delay = delay
        self.batches: list[list[int]] = []

    def decode(self, prompts, widths, vectors=None, priors=None, lexicals=None):
        self.batches.append([p[0] for p in prompts])
        time.sleep(self.delay)
        hits = [Hits(codes=np.array([[p[0], 0, 0]]), scores=np.array([-1.0])) for p in prompts]
        return hits, BatchStats(len(prompts), [len(prompts)], 0, self.delay)


def test_batcher_groups_waiting_requests_and_keeps_order():
    engine = SlowEngine(0.2, max_batch=4, max_pending=100)
    engine.start()
    futures = [engine.submit([0], 8, 10)]
    time.sleep(0.05)  # the worker took the first request alone
    futures += [engine.submit([i], 8, 10) for i in range(1, 9)]
    results = [f.result(5) for f in futures]
    engine.close()
    assert [int(r.codes[0, 0]) for r in results] == list(range(9))
    assert engine.batches[0] == [0]  # the first request does not wait for company
    assert max(len(b) for b in engine.batches) == 4  # the others arrived during the first batch: batches of 4
    assert sorted(sum(engine.batches, [])) == list(range(9))


def test_batcher_bounds_its_queue_and_drops_expired_requests():
    engine = SlowEngine(0.3, max_batch=1, max_pending=3)
    engine.start()
    first = engine.submit([0], 8, 10)
    time.sleep(0.05)  # the worker has taken it
    expiring = engine.submit([1], 8, 0.1)  # waits 0.3 s behind the first: expired when its turn comes
    third = engine.submit([2], 8, 10)
    with pytest.raises(QueueFull):
        engine.submit([3], 8, 10)
    assert first.result(5).codes[0, 0] == 0
    with pytest.raises(DeadlineExceeded):
        expiring.result(5)
    assert third.result(5).codes[0, 0] == 2
    assert engine.batches == [[0], [2]]
    engine.close()


def test_close_drains_queued_requests():
    engine = SlowEngine(0.1, max_batch=1, max_pending=10)
    engine.start()
    futures = [engine.submit([i], 8, 10) for i in range(3)]
    closer = threading.Thread(target=engine.close, kwargs={"drain": True})
    closer.start()
    closer.join(5)
    assert [f.result(0).codes[0, 0] for f in futures] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="shut down"):
        engine.submit([9], 8, 10)


def test_decode_errors_reach_every_caller_of_the_batch():
    class Broken(SlowEngine):
        def decode(self, prompts, widths, vectors=None, priors=None, lexicals=None):
            time.sleep(0.1)
            raise ValueError("model exploded")

    engine = Broken(0.0, max_batch=8)
    engine.start()
    futures = [engine.submit([i], 8, 10) for i in range(3)]
    for f in futures:
        with pytest.raises(ValueError, match="exploded"):
            f.result(5)
    engine.close()
