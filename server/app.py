"""The retrieval HTTP API (FastAPI): POST /v1/retrieve, /healthz, /readyz, /metrics, OpenAPI at /docs.

The model loads in the background after start-up, so /healthz answers at once and /readyz turns
ready only once the checkpoint, the index and one warm-up search are done. Requests go to the
engine's bounded queue: past `max_pending` they get 503 + Retry-After, past their deadline 504;
one client address past `max_pending_per_client` gets 429.
uvicorn's graceful shutdown lets in-flight requests finish before the engine is closed.
"""


import asyncio
import json
import logging
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
from server.engine import BatchingEngine, DeadlineExceeded, QueueFull
from server.metrics import ServerMetrics
from server.middleware import REQUEST_ID, BodyLimit, ClientSlots
from server.retriever import Retriever, UnknownSkus, model_version
from server.settings import ServerSettings, with_checkpoint_prior
from sid_index.index import load_index
from trainer.model import load_checkpoint

log = logging.getLogger("radgr.server")
DRAIN_MARGIN_S = 0.5  # before the shutdown grace period ends, requests still running answer 503


@dataclass
class Loaded:
    engine: BatchingEngine
    retriever: Retriever
    model_version: str
    index_id: str


def load(settings: ServerSettings, metrics: ServerMetrics) -> Loaded:
    """Checkpoint + index + engine, checked against each other (raises RadgrError on a mismatch)."""
    index = load_index(settings.index)
    ckpt = load_checkpoint(settings.model, with_model=False)
    settings = with_checkpoint_prior(settings, ckpt.index_prior)
    native = resolve_engine(settings.engine, ckpt.prompts.config.align) == "native"
    if native:
        ckpt = load_checkpoint(settings.model, device="cpu", dtype=settings.dtype)
    retriever = Retriever(ckpt, index, index_prior=settings.index_prior)  # checks the pair before any engine starts
    common = dict(max_batch=settings.max_batch_requests, max_pending=settings.max_pending,
                  on_batch=metrics.observe_batch)
    if native:  # the engine chosen is imported, not both: importing vLLM costs seconds
        from server.native_engine import NativeEngine

        engine: BatchingEngine = NativeEngine(ckpt, index, settings.device, settings.score_eos, settings.index_prior,
                                              **common)
    else:
        from server.vllm_engine import VllmEngine

        engine = VllmEngine(ckpt, index, settings, **common)
    engine.start()
    return Loaded(engine, retriever, model_version(ckpt), index.index_id)


def resolve_engine(name: str, prompt_align: int) -> str:
    """"auto": vLLM where it is installed and the checkpoint's prompts fill whole KV blocks
    (`--prompt-align 32`), else native: on unaligned prompts every vLLM beam recomputes the
    prompt's last partial block, which made it 1.8-8x slower than the native engine (README)."""
    if name != "auto":
        return name
    import importlib.util

    aligned = prompt_align % 32 == 0
    return "vllm" if aligned and importlib.util.find_spec("vllm") is not None else "native"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log collectors parse without a grammar."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


def create_app(settings: ServerSettings, loader=load) -> FastAPI:
    """The app; `loader(settings, metrics) -> Loaded` runs in a thread after start-up (tests swap it)."""
    metrics = ServerMetrics()
    state: dict[str, Any] = {"loaded": None, "error": None, "draining": False, "loop": None, "stop_now": None}
    Req = request_model(settings)
    bearer = HTTPBearer(auto_error=False)

    def startup() -> None:
        try:
            loaded = loader(settings, metrics)
            if settings.warmup:
                req = loaded.retriever.encode("warm up")
                loaded.engine.submit(req.prompt, settings.beam_width, 600, req.vector, req.prior).result()
            metrics.info.info({
                "model": loaded.model_version, "index": loaded.index_id, "engine": loaded.engine.name,
            })
            metrics.queue_depth.set_function(lambda: loaded.engine.queue_depth)
            state["loaded"] = loaded
            log.info("ready", extra={"fields": {"model": loaded.model_version, "index": loaded.index_id,
                                                "engine": loaded.engine.name}})
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log, then `on_fatal`
            state["error"] = str(exc)
            log.error("start-up failed", exc_info=True, extra={"fields": {"error": str(exc)}})
            if app.state.on_fatal is not None:  # `radgr serve`: stop the process, so a restart policy acts
                app.state.on_fatal()

    def begin_drain() -> None:
        """Shutdown begins (SIGTERM/SIGINT, from the server's signal handler): /readyz and new requests answer
        503 at once while the listener is still open; requests still running `DRAIN_MARGIN_S` before the
        grace period ends answer 503 + Retry-After instead of being cut off by the server."""
        if state["draining"]:
            return
        state["draining"] = True
        loop, stop = state["loop"], state["stop_now"]
        if loop is not None:
            delay = max(0.0, settings.shutdown_grace_s - DRAIN_MARGIN_S)
            loop.call_soon_threadsafe(lambda: loop.call_later(delay, stop.set))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["loop"], state["stop_now"] = asyncio.get_running_loop(), asyncio.Event()
        task = asyncio.get_running_loop().run_in_executor(None, startup)
        yield
        begin_drain()
        await task
        if state["loaded"] is not None:
            await asyncio.to_thread(state["loaded"].engine.close, True)

    app = FastAPI(
        title="radgr retrieval",
        version="0.1.0",
        description="Generative retrieval: a request -> the best Semantic IDs of the catalog -> SKUs.",
        lifespan=lifespan,
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
        loaded: Loaded | None = state["loaded"]
        retry = {"Retry-After": str(settings.retry_after_s)}
        if loaded is None or state["draining"]:
            return error(503, "not ready" if not state["draining"] else "shutting down", retry)
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
            loaded.engine.search(req.prompt, width, settings.request_timeout_s, req.vector, req.prior))
        stop = asyncio.ensure_future(state["stop_now"].wait())
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
        items = loaded.retriever.items(hits, body.top_k)
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
        if state["error"] is not None:
            return error(503, f"start-up failed: {state['error']}")
        if state["loaded"] is None or state["draining"]:
            return error(503, "loading" if not state["draining"] else "shutting down")
        loaded = state["loaded"]
        return {"status": "ready", "model": loaded.model_version, "index": loaded.index_id,
                "engine": loaded.engine.name}

    @app.get(METRICS_PATH, include_in_schema=False)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # outermost: before routing, auth or parsing
    app.state.metrics = metrics
    app.state.server = state
    app.state.begin_drain = begin_drain
    app.state.on_fatal = None  # called after a failed start-up (radgr serve: shut the server down)
    return app
