"""The HTTP API in process (FastAPI's test client): responses, every 4xx path, auth, overload, deadlines, metrics."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.engine import BatchStats, Hits
from server.lifecycle import Loaded, load
from server.native_engine import NativeEngine
from server.retriever import Retriever, check_compatible
from server.settings import ServerSettings
from sid_index.errors import RadgrError
from sid_index.tokens import format_sid

from .test_engines import SlowEngine


def settings_for(served_path, tiny_index, **kw) -> ServerSettings:
    kw.setdefault("engine", "native")
    return ServerSettings(model=str(served_path), index=str(tiny_index.root), dtype="float32", **kw)


def wait_ready(client: TestClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/readyz")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"not ready: {r.json()}")


@pytest.fixture(scope="module")
def client(served_path, tiny_index):
    app = create_app(settings_for(served_path, tiny_index, beam_width=16, max_beam_width=64, max_top_k=50,
                                  max_query_chars=40, max_history=5, max_user_features=2))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def test_retrieve_ranks_skus_of_valid_sids(client, served, tiny_index, requests):
    query, history = next((q, h) for q, h in requests if q and h)
    r = client.post("/v1/retrieve", json={"query": query, "history": history[:5], "top_k": 30},
                    headers={"x-request-id": "abc-123"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == "abc-123" and r.headers["x-request-id"] == "abc-123"
    assert body["beam_width"] == 16 and body["engine"] == "native" and body["index"] == tiny_index.index_id
    items = body["items"]
    assert 0 < len(items) <= 30
    assert len({i["sku_id"] for i in items}) == len(items)
    # The expected list, computed another way: every SKU of the engine's SIDs with its SID's log-prob split
    # evenly among the SKUs on it (p(SKU) = p(SID) / n), best first, ties in SID then index order.
    retriever = Retriever(served, tiny_index)
    hits = NativeEngine(served, tiny_index).search_many([retriever.prompt(query, history[:5])], 16)[0]
    pool = [(float(np.exp(hits.scores[i])) / len(tiny_index.skus_of(c)), -i, -j, sku, i)
            for i, c in enumerate(hits.codes.tolist()) for j, sku in enumerate(tiny_index.skus_of(c))]
    expected = [(sku, i) for *_, sku, i in sorted(pool, reverse=True)][:30]
    assert [(i["sku_id"], i["rank"]) for i in items] == expected
    crowded = max(hits.codes.tolist()[:4], key=lambda c: len(tiny_index.skus_of(c)))
    assert len(tiny_index.skus_of(crowded)) > 1  # the split is exercised on this request
    for item in items:
        assert format_sid(tiny_index.sid_of(item["sku_id"])) == item["sid"]
        n = len(tiny_index.skus_of(tiny_index.sid_of(item["sku_id"])))
        np.testing.assert_allclose(item["score"], hits.scores[item["rank"]] - np.log(n), atol=1e-5)


def test_response_names_sku_id_keeps_the_deprecated_alias_and_says_what_was_reachable(client):
    body = client.post("/v1/retrieve", json={"query": "red shoes", "beam_width": 2, "top_k": 50}).json()
    assert all(i["sku"] == i["sku_id"] for i in body["items"])
    assert body["reachable"] == len(body["items"]) < 50  # two SIDs' worth of SKUs, not the 50 asked for
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Hit"]["properties"]
    assert schema["sku"].get("deprecated") is True
    full = client.post("/v1/retrieve", json={"query": "red shoes", "top_k": 3}).json()
    assert len(full["items"]) == 3 and full["reachable"] >= 3


def test_beam_width_and_top_k_per_request(client):
    r = client.post("/v1/retrieve", json={"query": "red shoes", "beam_width": 2, "top_k": 50}).json()
    assert r["beam_width"] == 2
    assert {i["rank"] for i in r["items"]} <= {0, 1}
    r = client.post("/v1/retrieve", json={"query": "red shoes", "top_k": 1}).json()
    assert len(r["items"]) == 1


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({}, "needs a non-empty query or a history"),
        ({"query": "   "}, "needs a non-empty query or a history"),
        ({"query": "x", "colour": "red"}, "extra_forbidden"),
        ({"query": "x" * 41}, "string_too_long"),
        ({"history": ["a"] * 6}, "too_long"),
        ({"query": "x", "user": {"a": "1", "b": "2", "c": "3"}}, "too_long"),
        ({"query": "x", "beam_width": 65}, "less_than_equal"),
        ({"query": "x", "beam_width": 0}, "greater_than_equal"),
        ({"query": "x", "top_k": 51}, "less_than_equal"),
        ({"query": "x", "top_k": "many"}, "int_type"),
        ({"query": "x", "top_k": "5"}, "int_type"),  # strict: a number is a number
        ({"query": "x", "top_k": True}, "int_type"),
        ({"query": "x", "beam_width": 4.0}, "int_type"),
        ({"query": 5}, "string_type"),
        ({"query": "x", "user": {"k" * 257: "v"}}, "string_too_long"),
        ({"query": "x", "user": {"k": "v" * 257}}, "string_too_long"),
        ({"query": "x", "user": {"k": 1}}, "string_type"),
        ({"history": ["s" * 129]}, "string_too_long"),
        ({"history": [""]}, "string_too_short"),
    ],
)
def test_bad_requests_get_422_with_a_reason(client, body, fragment):
    r = client.post("/v1/retrieve", json=body)
    assert r.status_code == 422
    assert fragment in r.text


def test_oversized_bodies_get_413_unread_and_the_server_keeps_answering(client):
    big = b'{"query": "a", "user": {"k": "' + b"v" * (10 * 2**20) + b'"}}'
    t0 = time.perf_counter()
    r = client.post("/v1/retrieve", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"] == "request body over 65536 bytes"
    assert time.perf_counter() - t0 < 2.0  # refused by its Content-Length, never parsed (10 MB of JSON takes longer)

    def chunks():  # no Content-Length: refused once the running total passes the limit
        yield b'{"query": "a", "user": {"k": "'
        for _ in range(200):
            yield b"v" * 4096
        yield b'"}}'

    r = client.post("/v1/retrieve", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/retrieve", json={"query": "lamp"}).status_code == 200


def test_non_json_bodies_get_415(client):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": ctype} if ctype else {}
        r = client.post("/v1/retrieve", content=b'{"query": "lamp"}', headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = client.post("/v1/retrieve", content=b'{"query": "lamp"}',
                    headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_request_id_is_echoed_only_when_it_looks_like_one(client):
    r = client.post("/v1/retrieve", json={"query": "lamp"}, headers={"x-request-id": "x" * 60_000})
    assert r.status_code == 200 and len(r.headers["x-request-id"]) == 32 and r.json()["request_id"] != "x" * 60_000
    r = client.post("/v1/retrieve", json={"query": "lamp"}, headers={"x-request-id": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"


def test_unknown_history_skus_are_named(client, tiny_index):
    known = tiny_index.sku_to_sid.keys()[0]
    r = client.post("/v1/retrieve", json={"history": [known, "NOPE-1", "NOPE-2"]})
    assert r.status_code == 422
    assert r.json()["detail"]["unknown_skus"] == ["NOPE-1", "NOPE-2"]


def test_malformed_json_is_a_422(client):
    r = client.post("/v1/retrieve", content=b'{"query": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json_invalid" in r.text


def test_metrics_export_what_operators_watch(client):
    client.post("/v1/retrieve", json={"query": "lamp"})
    client.post("/v1/retrieve", json={})
    text = client.get("/metrics").text
    for name in ("radgr_request_latency_seconds_bucket", "radgr_requests_in_flight", "radgr_queue_depth",
                 "radgr_beams_per_step_bucket", "radgr_batch_requests_bucket", "radgr_invalid_sids_total",
                 'radgr_errors_total{status="422"}', 'radgr_requests_total{status="200"}', "radgr_server_info{"):
        assert name in text, name
    assert "radgr_invalid_sids_total 0.0" in text
    assert client.get("/openapi.json").json()["paths"]["/v1/retrieve"]["post"]


def fake_loader(engine_factory):
    """A loader that serves the real retriever with a stand-in engine."""

    def loader(settings, metrics):
        from sid_index.index import load_index
        from trainer.model import load_checkpoint

        index = load_index(settings.index)
        ckpt = load_checkpoint(settings.model, with_model=False)
        engine = engine_factory(metrics)
        engine.start()
        return Loaded(engine, Retriever(ckpt, index), "fake", index.index_id)

    return loader


class FixedEngine(SlowEngine):
    """Answers every prompt with the index's first SID after a delay."""

    def __init__(self, delay, sid, **kw):
        super().__init__(delay, **kw)
        self.sid = sid

    def decode(self, prompts, widths, vectors=None, priors=None, lexicals=None):
        time.sleep(self.delay)
        hits = [Hits(codes=np.array([self.sid]), scores=np.array([-1.0])) for _ in prompts]
        return hits, BatchStats(len(prompts), [len(prompts)], 0, self.delay)


def test_overload_gets_503_with_retry_after_then_recovers(served_path, tiny_index):
    sid = tiny_index.trie.sids()[0].tolist()
    s = settings_for(served_path, tiny_index, max_pending=2, max_batch_requests=1, warmup=False, retry_after_s=3)
    app = create_app(s, loader=fake_loader(lambda m: FixedEngine(0.3, sid, max_batch=1, max_pending=2,
                                                                 on_batch=m.observe_batch)))
    with TestClient(app) as c:
        wait_ready(c)
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: c.post("/v1/retrieve", json={"query": "q"}), range(8)))
        statuses = sorted(r.status_code for r in codes)
        assert statuses.count(200) >= 2 and statuses.count(503) >= 4, statuses
        refused = next(r for r in codes if r.status_code == 503)
        assert refused.headers["retry-after"] == "3" and "overloaded" in refused.text
        assert time.monotonic() - start < 3  # refusals are immediate, not queued
        assert c.get("/readyz").status_code == 200
        assert c.post("/v1/retrieve", json={"query": "q"}).status_code == 200


def test_one_flooding_client_gets_429_past_its_share_and_the_others_are_still_served(served_path, tiny_index):
    """Issue 21's flood: one address holding its `max_pending_per_client` share is refused (429, at once), while
    another address's requests are admitted into the slots left and answered."""
    sid = tiny_index.trie.sids()[0].tolist()
    s = settings_for(served_path, tiny_index, max_pending=8, max_pending_per_client=3, max_batch_requests=1,
                     warmup=False, retry_after_s=2)
    app = create_app(s, loader=fake_loader(lambda m: FixedEngine(0.3, sid, max_batch=1, max_pending=8,
                                                                 on_batch=m.observe_batch)))
    async def addressed(scope, receive, send):  # the client address from a test header, as a proxy would set it
        if scope["type"] == "http":
            scope = {**scope, "client": (dict(scope["headers"]).get(b"x-test-client", b"-").decode(), 1)}
        await app(scope, receive, send)

    def post(address):
        return c.post("/v1/retrieve", json={"query": "q"}, headers={"x-test-client": address})

    with TestClient(addressed) as c:
        wait_ready(c)
        with ThreadPoolExecutor(10) as pool:
            flooded = [pool.submit(post, "10.0.0.1") for _ in range(8)]
            time.sleep(0.1)  # the flood holds its three slots
            polite = [pool.submit(post, "10.0.0.2") for _ in range(2)]
            flood_codes = sorted(f.result().status_code for f in flooded)
            polite_codes = [f.result().status_code for f in polite]
        assert flood_codes == [200] * 3 + [429] * 5, flood_codes
        assert polite_codes == [200, 200], [f.result().text for f in polite]
        refused = next(f.result() for f in flooded if f.result().status_code == 429)
        assert refused.headers["retry-after"] == "2" and "10.0.0.1" in refused.json()["detail"]
        assert post("10.0.0.1").status_code == 200  # its slots were given back


def test_shutdown_turns_ready_off_at_once_and_answers_running_requests_before_the_grace_ends(served_path,
                                                                                               tiny_index):
    """Drain (what SIGTERM starts): /readyz and new requests 503 while the listener is still open; a request still
    decoding when the grace period is about to end gets 503 + Retry-After, not a cut connection or a 500."""
    sid = tiny_index.trie.sids()[0].tolist()
    s = settings_for(served_path, tiny_index, warmup=False, shutdown_grace_s=1.0, request_timeout_s=30)
    app = create_app(s, loader=fake_loader(lambda m: FixedEngine(5.0, sid, max_batch=1)))
    with TestClient(app) as c:
        wait_ready(c)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(c.post, "/v1/retrieve", json={"query": "q"})
            time.sleep(0.3)  # inside the engine now
            t0 = time.monotonic()
            app.state.lifecycle.begin_drain()
            ready = c.get("/readyz")
            assert ready.status_code == 503 and "shutting down" in ready.text
            assert c.post("/v1/retrieve", json={"query": "q"}).status_code == 503
            r = running.result(10)
        assert r.status_code == 503 and r.json()["detail"] == "shutting down" and r.headers["retry-after"]
        assert time.monotonic() - t0 < 1.0 + 0.5  # before the grace period (1 s) was over, not after the 5 s decode


def test_deadline_gives_504(served_path, tiny_index):
    sid = tiny_index.trie.sids()[0].tolist()
    s = settings_for(served_path, tiny_index, request_timeout_s=0.2, warmup=False)
    app = create_app(s, loader=fake_loader(lambda m: FixedEngine(1.0, sid)))
    with TestClient(app) as c:
        wait_ready(c)
        r = c.post("/v1/retrieve", json={"query": "q"})
        assert r.status_code == 504 and "deadline" in r.text


def test_not_ready_while_loading_and_failed_start_up_reported(served_path, tiny_index):
    gate = threading.Event()

    def slow_loader(settings, metrics):
        gate.wait(10)
        raise RadgrError("index and checkpoint disagree")

    with TestClient(create_app(settings_for(served_path, tiny_index), loader=slow_loader)) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["detail"] == "loading"
        r = c.post("/v1/retrieve", json={"query": "q"})
        assert r.status_code == 503 and "retry-after" in r.headers
        gate.set()
        for _ in range(100):
            r = c.get("/readyz")
            if "start-up failed" in r.text:
                break
            time.sleep(0.05)
        assert r.status_code == 503 and "index and checkpoint disagree" in r.text


def test_a_failed_start_up_stops_radgr_serve(served_path, tiny_index, monkeypatch):
    """Under `radgr serve` a start-up failure after the pre-flight ends the process with one line and exit 2,
    never a half-up server that a restart policy would not notice."""
    import server.app as app_module
    from server.cli import serve_command

    def broken(settings, metrics):
        raise RadgrError("the engine could not start")

    monkeypatch.setattr(app_module, "load", broken)
    monkeypatch.setattr(app_module.create_app, "__defaults__", (broken,))
    with pytest.raises(RadgrError, match="start-up failed: the engine could not start"):
        serve_command(model=str(served_path), index=str(tiny_index.root), engine="native", port=0, host="127.0.0.1")


def test_bearer_token(served_path, tiny_index):
    s = settings_for(served_path, tiny_index, api_token="s3cret", beam_width=4)
    with TestClient(create_app(s)) as c:
        wait_ready(c)
        assert c.post("/v1/retrieve", json={"query": "q"}).status_code == 401
        bad = c.post("/v1/retrieve", json={"query": "q"}, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        ok = c.post("/v1/retrieve", json={"query": "q"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200


def test_checkpoint_for_another_index_is_refused(served, tiny_index, tmp_path):
    from sid_index.index import load_index, write_index

    other = load_index(write_index(tmp_path / "other", ["A", "B"], np.array([[0, 0, 0], [1, 0, 0]]), [8, 8, 8]))
    with pytest.raises(RadgrError, match="trained for index"):
        check_compatible(served, other)


def test_tokenizer_must_hold_exactly_the_index_sid_tokens(served, tiny_index):
    import copy

    ckpt = copy.copy(served)
    ckpt.tokenizer = copy.deepcopy(served.tokenizer)
    ckpt.tokenizer.add_tokens(["<a_8>"])
    with pytest.raises(RadgrError, match="1 extra"):
        check_compatible(ckpt, tiny_index)


def test_load_refuses_a_mismatched_pair(served_path, tmp_path):
    from sid_index.index import write_index

    other = write_index(tmp_path / "other", ["A"], np.array([[0, 0, 0]]), [8, 8, 8])
    with pytest.raises(RadgrError, match="trained for index"):
        load(ServerSettings(model=str(served_path), index=str(other)), metrics=None)


def sid_order(items: list[dict]) -> list[str]:
    """The served SIDs in beam order (their `rank`): the SKUs themselves are ranked by item share."""
    return [sid for _, sid in sorted({(i["rank"], i["sid"]) for i in items})]


def test_text_input_checkpoint_is_served_with_the_query_embedding(text_served_path, tiny_index):
    """The API's ranking equals beam search fed the query's MiniLM embedding computed here by other code."""
    import torch

    from sid_index.decoding import beam_search
    from sid_index.embed import embed_texts
    from trainer.model import load_checkpoint

    ckpt = load_checkpoint(text_served_path)
    query = "red cotton shirt"
    vec = torch.from_numpy(embed_texts([query], progress=False)[0])
    want = beam_search(ckpt.decoder.eval(), [ckpt.prompts.request(query)], ckpt.vocab, ckpt.eos_id, 16,
                       tiny_index.constraint("cpu"), include_eos=False, pad_id=ckpt.pad_id, text_vectors=vec)
    other = beam_search(ckpt.decoder.eval(), [ckpt.prompts.request(query)], ckpt.vocab, ckpt.eos_id, 16,
                        tiny_index.constraint("cpu"), include_eos=False, pad_id=ckpt.pad_id,
                        text_vectors=torch.zeros_like(vec))
    assert want.sids(0) != other.sids(0)  # the vector decides something here
    app = create_app(settings_for(text_served_path, tiny_index, beam_width=16, engine="auto"))
    with TestClient(app) as c:
        wait_ready(c)
        body = c.post("/v1/retrieve", json={"query": query, "top_k": 500}).json()
        assert body["engine"] == "native" and "text_embedding" in body["timing_ms"]
        sids = sid_order(body["items"])
        assert sids == [format_sid(s) for s in want.sids(0)]
        again = c.post("/v1/retrieve", json={"query": query, "top_k": 500}).json()  # answered from the cache
        assert [i["sku_id"] for i in again["items"]] == [i["sku_id"] for i in body["items"]]


def test_index_prior_served_is_the_one_radgr_eval_fuses(served, served_path, tiny_index, requests, tmp_path):
    """`radgr serve --index-prior W` answers exactly what beam search with `IndexPrior` gives offline (computed
    here from `sid_index.retrieve`), for query and history-only requests; with a huge weight and an exhaustive
    width it is the index-only ranking. A checkpoint trained on top of the prior is served with its weight."""
    import torch

    from sid_index.decoding import IndexPrior, beam_search
    from sid_index.embed import embed_texts
    from sid_index.index import load_centroids
    from sid_index.retrieve import IndexRetriever, request_vector
    from trainer.data import history_codes
    from trainer.model import load_checkpoint, save_checkpoint

    width = max(tiny_index.trie.nodes(level) for level in range(tiny_index.levels - 1))
    centroids = load_centroids(tiny_index)
    query, history = next((q, h) for q, h in requests if q and h)
    asks = [{"query": query}, {"history": history[:5]}]
    answers = {}
    for weight in (2.0, 1e4):
        app = create_app(settings_for(served_path, tiny_index, beam_width=width, max_beam_width=width,
                                      index_prior=weight, max_top_k=1000))
        with TestClient(app) as c:
            wait_ready(c)
            for ask in asks:
                body = c.post("/v1/retrieve", json=ask | {"top_k": 1000}).json()
                served_sids = sid_order(body["items"])
                answers[weight, str(ask)] = served_sids
                q = embed_texts([ask["query"]], progress=False)[0][0] if "query" in ask else None
                vec = request_vector(centroids, q, history_codes(tiny_index, ask.get("history", []))[0])
                prompt = Retriever(served, tiny_index).prompt(ask.get("query"), ask.get("history", []))
                res = beam_search(served.decoder, [prompt], served.vocab, served.eos_id, width,
                                  tiny_index.constraint("cpu"), pad_id=served.pad_id, include_eos=False,
                                  prior=IndexPrior.of(centroids, vec[None], weight, "cpu"))
                assert served_sids == [format_sid(c) for c in res.sids(0)], (weight, ask)
                if weight == 1e4:
                    floor = IndexRetriever(tiny_index).search(vec[None], width)[0]
                    assert served_sids[:10] == [format_sid(c) for c in floor[:10]]
    assert torch.isfinite(torch.tensor(body["items"][0]["score"]))
    trained = load_checkpoint(served_path)
    trained.meta["index_prior"] = 2.0  # as `radgr train rad-dpo --index-prior 2` records it
    path = save_checkpoint(trained, tmp_path / "on-prior")
    with TestClient(create_app(settings_for(path, tiny_index, beam_width=width, max_beam_width=width,
                                            max_top_k=1000))) as c:
        wait_ready(c)
        for ask in asks:
            body = c.post("/v1/retrieve", json=ask | {"top_k": 1000}).json()
            assert sid_order(body["items"]) == answers[2.0, str(ask)]


@pytest.mark.parametrize("lexical", [0.0, 4.0])
def test_item_form_index_prior_served_is_the_one_radgr_eval_fuses(served, served_path, tiny_index, requests,
                                                                  tmp_path, lexical):
    """`--index-prior W --index-prior-form item` (with the query's BM25 term: `--lexical-prior`) answers exactly
    what beam search with the `ItemPrior` gives offline, at a narrow width (the lookahead needs none wider), for
    query and history-only requests; with the item prior at the same weight each SKU is scored by its own item
    score in place of its SID's best (`item_form_bonus`); a
    checkpoint whose picked prior is item-form is served with it (the vLLM engine's search is checked against
    the native one in test_engines)."""
    from sid_index.decoding import ItemPriorTable, beam_search
    from sid_index.embed import embed_texts
    from sid_index.retrieve import item_request_vector
    from trainer.model import load_checkpoint, save_checkpoint

    width, weight = 8, 3.0
    table = ItemPriorTable.of(tiny_index)
    query, history = next((q, h) for q, h in requests if q and h)
    asks = [{"query": query}, {"history": history[:5]}]
    settings = settings_for(served_path, tiny_index, beam_width=width, index_prior=weight, index_prior_form="item",
                            max_top_k=1000, lexical_prior=lexical, item_prior=weight)
    answers, bodies = {}, {}
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        for ask in asks:
            bodies[str(ask)] = c.post("/v1/retrieve", json=ask | {"top_k": 1000}).json()["items"]
            answers[str(ask)] = sid_order(bodies[str(ask)])
            q = embed_texts([ask["query"]], progress=False)[0][0] if "query" in ask else None
            vec = item_request_vector(tiny_index, q, ask.get("history", []))
            prompt = Retriever(served, tiny_index).prompt(ask.get("query"), ask.get("history", []))
            lex = lexical * tiny_index.lexical().scores([ask["query"]]) if lexical and "query" in ask else None
            res = beam_search(served.decoder, [prompt], served.vocab, served.eos_id, width,
                              tiny_index.constraint("cpu"), pad_id=served.pad_id, include_eos=False,
                              prior=table.prior(vec[None], weight, lex))
            assert answers[str(ask)] == [format_sid(c) for c in res.sids(0)], ask
            # each SKU: log p(SID) - log |SKUs| + weight x (its own item score - its SID's best), in float64 here
            want = {}
            for sid, score in zip(res.sids(0), res.scores[0].tolist(), strict=False):
                skus = tiny_index.skus_of(sid)
                e = tiny_index.vectors_of(skus).astype(np.float64)
                own = 2 * e @ vec.astype(np.float64) - (e * e).sum(-1)
                if lex is not None:
                    own = own + lex[0][[tiny_index.rows[k] for k in skus]]
                share = score - np.log(len(skus))
                want.update({k: share + weight * (o - own.max()) for k, o in zip(skus, own, strict=True)})
            got = {i["sku"]: i["score"] for i in bodies[str(ask)]}
            assert got.keys() == want.keys()
            assert all(abs(got[k] - want[k]) < 2e-3 for k in want), ask
            assert [i["score"] for i in bodies[str(ask)]] == sorted(got.values(), reverse=True)
            if lex is not None:  # the term moved the answer
                plain = beam_search(served.decoder, [prompt], served.vocab, served.eos_id, width,
                                    tiny_index.constraint("cpu"), pad_id=served.pad_id, include_eos=False,
                                    prior=table.prior(vec[None], weight))
                assert answers[str(ask)] != [format_sid(c) for c in plain.sids(0)]
    picked = load_checkpoint(served_path)
    picked.meta.update(index_prior=weight, index_prior_form="item", item_prior=weight,
                       lexical_prior=lexical)  # as `radgr eval --pick-prior` records them
    path = save_checkpoint(picked, tmp_path / "picked")
    with TestClient(create_app(settings_for(path, tiny_index, beam_width=width, max_top_k=1000))) as c:
        wait_ready(c)
        for ask in asks:
            body = c.post("/v1/retrieve", json=ask | {"top_k": 1000}).json()
            assert sid_order(body["items"]) == answers[str(ask)]


def test_damaged_weights_stop_the_server_before_it_binds(served_path, tiny_index, tmp_path):
    """4 KB of flipped bytes in model.safetensors (same size): refused with one line by the pre-flight check
    `radgr serve` runs before binding its port, instead of serving garbage scores under the same version."""
    import shutil

    from server.cli import preflight

    ck = tmp_path / "m"
    shutil.copytree(served_path, ck)
    preflight(settings_for(ck, tiny_index))  # intact: passes
    weights = bytearray((ck / "model.safetensors").read_bytes())
    weights[-4096:] = bytes(b ^ 0x5A for b in weights[-4096:])
    (ck / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(RadgrError, match="model.safetensors: damaged"):
        preflight(settings_for(ck, tiny_index))


def test_item_prior_served_reorders_the_beams_skus_as_computed_offline(served, served_path, tiny_index, requests,
                                                                       tmp_path):
    """`--item-prior W` keeps the search and re-scores its SKUs: each served score is the plain score (share of
    its SID) + W x (2 q.e - |e|^2) with q the query's embedding, or the recency-weighted history items' own
    vectors (1, 1/2, 1/4, newest first), computed here by hand; the order follows the scores. A checkpoint
    with a picked item prior is served with it."""
    from sid_index.embed import embed_texts
    from trainer.model import load_checkpoint, save_checkpoint

    width, weight = 16, 3.0
    query, history = next((q, h) for q, h in requests if q and len(h) >= 3)
    asks = [{"query": query}, {"history": history}]
    plain = create_app(settings_for(served_path, tiny_index, beam_width=width, max_top_k=1000))
    fused = create_app(settings_for(served_path, tiny_index, beam_width=width, max_top_k=1000, item_prior=weight))
    answers = {}
    with TestClient(plain) as a, TestClient(fused) as b:
        wait_ready(a), wait_ready(b)
        for ask in asks:
            base = {i["sku_id"]: i["score"] for i in a.post("/v1/retrieve", json=ask | {"top_k": 1000}).json()["items"]}
            got = answers[str(ask)] = b.post("/v1/retrieve", json=ask | {"top_k": 1000}).json()["items"]
            if "query" in ask:
                q = embed_texts([ask["query"]], progress=False)[0][0].astype(np.float64)
            else:
                last = history[-3:][::-1]
                q = sum(w * tiny_index.vectors_of([s])[0] for w, s in zip((1, 0.5, 0.25), last, strict=False)) / 1.75
            assert {i["sku_id"] for i in got} == set(base)  # same beam, same SKUs
            for item in got:
                e = tiny_index.vectors_of([item["sku_id"]])[0].astype(np.float64)
                assert item["score"] == pytest.approx(base[item["sku_id"]] + weight * (2 * e @ q - e @ e), abs=1e-4)
            scores = [i["score"] for i in got]
            assert scores == sorted(scores, reverse=True)
            assert [i["sku_id"] for i in got] != list(base)  # the prior moved something
    picked = load_checkpoint(served_path)
    picked.meta["item_prior"] = weight  # as `radgr eval --pick-prior` records it
    path = save_checkpoint(picked, tmp_path / "picked")
    with TestClient(create_app(settings_for(path, tiny_index, beam_width=width, max_top_k=1000))) as c:
        wait_ready(c)
        assert c.post("/v1/retrieve", json=asks[0] | {"top_k": 1000}).json()["items"] == answers[str(asks[0])]
