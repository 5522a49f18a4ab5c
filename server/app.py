"""The retrieval HTTP API (FastAPI), routes only: POST /v1/retrieve, /healthz, /readyz, /metrics, OpenAPI at
/docs. Loading, readiness and draining live in server/lifecycle.py, the request/response contract in
server/api.py. Requests go to the engine's bounded queue: past `max_pending` they get 503 + Retry-After,
past their deadline 504; one client address past `max_pending_per_client` gets 429.
"""

import asyncio
import secrets
import time
import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from server.api import (
    HEALTH_PATH,
    METRICS_PATH,
    READY_PATH,
    RETRIEVE_PATH,
    ErrorResponse,
    Hit,
    RetrieveResponse,
    request_model,
)
from server.engine import DeadlineExceeded, QueueFull
from server.lifecycle import Lifecycle, Loaded, load, log
from server.metrics import ServerMetrics
from server.middleware import REQUEST_ID, BodyLimit, ClientSlots
from server.retriever import UnknownSkus
from server.settings import ServerSettings


def create_app(settings: ServerSettings, loader=load) -> FastAPI:
    """The app; `loader(settings, metrics) -> Loaded` runs in a thread after start-up (tests swap it).
    `app.state.lifecycle` is its `Lifecycle` (radgr serve drains it and sets its `on_fatal`)."""
    metrics = ServerMetrics()
    life = Lifecycle(settings, metrics, loader)
    Req = request_model(settings)
    bearer = HTTPBearer(auto_error=False)

    app = FastAPI(
        title="radgr retrieval",
        version="0.1.0",
        description="Generative retrieval: a request -> the best Semantic IDs of the catalog -> SKUs.",
        lifespan=life.lifespan,
    )

    def error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.middleware("http")
    async def request_id_and_log(request: Request, call_next):
        given = request.headers.get("x-request-id") or ""
        rid = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.state.request_id = rid
        start = time.perf_counter()
        response = await call_next(request)
        ms = (time.perf_counter() - start) * 1e3
        response.headers["x-request-id"] = rid
        if request.url.path == RETRIEVE_PATH:
            metrics.requests.labels(str(response.status_code)).inc()
            if response.status_code >= 400:
                metrics.errors.labels(str(response.status_code)).inc()
            log.info("request", extra={"fields": {"request_id": rid, "path": request.url.path,
                                                  "status": response.status_code, "ms": round(ms, 2)}})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # Pydantic's errors, minus the echoed input (which may be large) and internal context objects.
        detail = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
        return error(422, detail)

    def authorize(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.api_token is None:
            return
        if cred is None or not secrets.compare_digest(cred.credentials.encode(), settings.api_token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    responses = {code: {"model": ErrorResponse} for code in (401, 422, 429, 503, 504)}

    per_client = ClientSlots(settings.max_pending_per_client)

    @app.post(RETRIEVE_PATH, response_model=RetrieveResponse, responses=responses, dependencies=[Depends(authorize)])
    async def retrieve(body: Req, request: Request):  # type: ignore[valid-type]
        """The best `top_k` SKUs for a query and/or a history, from trie-constrained beam search."""
        start = time.perf_counter()
        loaded = life.loaded
        retry = {"Retry-After": str(settings.retry_after_s)}
        if loaded is None or life.draining:
            return error(503, "not ready" if not life.draining else "shutting down", retry)
        client = request.client.host if request.client else "-"
        if not per_client.take(client):
            return error(429, f"too many requests in flight from {client} (limit {per_client.limit})", retry)
        try:
            return await answer(body, request, loaded, retry, start)
        finally:
            per_client.give_back(client)

    async def answer(body, request: Request, loaded: Loaded, retry: dict[str, str], start: float):
        try:  # tokenising and embedding run off the event loop: /healthz and other requests keep answering
            req = await run_in_threadpool(loaded.retriever.encode, body.query, body.history, body.user)
        except UnknownSkus as exc:
            return error(422, {"msg": str(exc), "unknown_skus": exc.skus})
        width = body.beam_width or settings.beam_width
        embed_s = req.embed_s
        metrics.in_flight.inc()
        search = asyncio.ensure_future(
            loaded.engine.search(req.prompt, width, settings.request_timeout_s, req.vector, req.prior, req.lexical))
        stop = asyncio.ensure_future(life.stop_now.wait())
        try:
            await asyncio.wait({search, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not search.done():  # the shutdown grace period is ending: answer now, cleanly
                search.cancel()
                return error(503, "shutting down", retry)
            hits = search.result()
        except QueueFull as exc:
            return error(503, f"overloaded: {exc}", retry)
        except (TimeoutError, DeadlineExceeded):
            return error(504, f"deadline of {settings.request_timeout_s} s passed")
        finally:
            stop.cancel()
            metrics.in_flight.dec()
        items = loaded.retriever.items(hits, body.top_k, req)
        reachable = loaded.retriever.reachable(hits)
        total = time.perf_counter() - start
        metrics.latency.observe(total)
        return RetrieveResponse(
            request_id=request.state.request_id,
            items=[Hit(sku_id=i.sku, sku=i.sku, sid=i.sid, score=i.score, rank=i.rank,
                       title=loaded.retriever.title_of(i.sku) if body.with_titles else None) for i in items],
            beam_width=width,
            reachable=reachable,
            model=loaded.model_version,
            index=loaded.index_id,
            engine=loaded.engine.name,
            timing_ms={"total": round(total * 1e3, 3),
                       **({} if embed_s is None else {"text_embedding": round(embed_s * 1e3, 3)})},
        )

    @app.get(HEALTH_PATH)
    async def healthz():
        """Alive (the process answers); says nothing about the model."""
        return {"status": "ok"}

    @app.get(READY_PATH, responses={503: {"model": ErrorResponse}})
    async def readyz():
        """Ready: model and index loaded and warmed up; 503 while loading, after a failed start-up or when draining."""
        if life.error is not None:
            return error(503, f"start-up failed: {life.error}")
        loaded = life.loaded
        if loaded is None or life.draining:
            return error(503, "loading" if not life.draining else "shutting down")
        return {"status": "ready", "model": loaded.model_version, "index": loaded.index_id,
                "engine": loaded.engine.name}

    @app.get(METRICS_PATH, include_in_schema=False)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # outermost: before routing, auth or parsing
    app.state.metrics = metrics
    app.state.lifecycle = life
    return app
