"""What the app's routes stand on: loading the model in the background, readiness, draining on shutdown.

The model loads in a thread after start-up, so /healthz answers at once and /readyz turns ready only
once the checkpoint, the index and one warm-up search are done. On SIGTERM/SIGINT the server drains:
new requests get 503 at once, and requests still running shortly before the grace period ends answer
503 + Retry-After instead of being cut off.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from server.engine import BatchingEngine
from server.metrics import ServerMetrics
from server.retriever import Retriever, model_version
from server.settings import ServerSettings, with_checkpoint_prior
from sid_index.index import load_index
from trainer.model import load_checkpoint

log = logging.getLogger("radgr.server")
DRAIN_MARGIN_S = 0.5  # before the shutdown grace period ends, requests still running answer 503
WARMUP_TIMEOUT_S = 600


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
    settings = with_checkpoint_prior(settings, ckpt.index_prior, ckpt.item_prior, ckpt.index_prior_form,
                                     ckpt.lexical_prior)
    native = resolve_engine(settings.engine, ckpt.prompts.config.align) == "native"
    if native:
        ckpt = load_checkpoint(settings.model, device="cpu", dtype=settings.dtype)
    retriever = Retriever(ckpt, index, index_prior=settings.index_prior, item_prior=settings.item_prior,
                          index_prior_form=settings.index_prior_form,
                          lexical_prior=settings.lexical_prior)  # checks the pair before any engine starts
    common = dict(max_batch=settings.max_batch_requests, max_pending=settings.max_pending,
                  on_batch=metrics.observe_batch)
    if native:  # the engine chosen is imported, not both: importing vLLM costs seconds
        from server.native_engine import NativeEngine

        engine: BatchingEngine = NativeEngine(ckpt, index, settings.device, settings.score_eos, settings.index_prior,
                                              index_prior_form=settings.index_prior_form, **common)
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


class Lifecycle:
    """One server's state: `loaded` once ready, `error` after a failed start-up, `draining` once shutdown
    began; `stop_now` is set when the requests still running must answer. `loader(settings, metrics)` runs in
    a thread after start-up (tests swap it); `on_fatal` is called after a failed start-up (`radgr serve`
    stops the process then, so a restart policy acts)."""

    def __init__(self, settings: ServerSettings, metrics: ServerMetrics,
                 loader: Callable[[ServerSettings, ServerMetrics], Loaded] = load):
        self.settings, self.metrics, self.loader = settings, metrics, loader
        self.loaded: Loaded | None = None
        self.error: str | None = None
        self.draining = False
        self.on_fatal: Callable[[], None] | None = None
        self.stop_now: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def startup(self) -> None:
        try:
            loaded = self.loader(self.settings, self.metrics)
            if self.settings.warmup:
                req = loaded.retriever.encode("warm up")
                loaded.engine.submit(req.prompt, self.settings.beam_width, WARMUP_TIMEOUT_S, req.vector,
                                     req.prior).result()
            self.metrics.info.info({"model": loaded.model_version, "index": loaded.index_id,
                                    "engine": loaded.engine.name})
            self.metrics.queue_depth.set_function(lambda: loaded.engine.queue_depth)
            self.loaded = loaded
            log.info("ready", extra={"fields": {"model": loaded.model_version, "index": loaded.index_id,
                                                "engine": loaded.engine.name}})
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log, then `on_fatal`
            self.error = str(exc)
            log.error("start-up failed", exc_info=True, extra={"fields": {"error": str(exc)}})
            if self.on_fatal is not None:
                self.on_fatal()

    def begin_drain(self) -> None:
        """Shutdown begins (from the server's signal handler): /readyz and new requests answer 503 at once
        while the listener is still open; `stop_now` is set `DRAIN_MARGIN_S` before the grace period ends."""
        if self.draining:
            return
        self.draining = True
        loop, stop = self._loop, self.stop_now
        if loop is not None:
            delay = max(0.0, self.settings.shutdown_grace_s - DRAIN_MARGIN_S)
            loop.call_soon_threadsafe(lambda: loop.call_later(delay, stop.set))

    @asynccontextmanager
    async def lifespan(self, app):
        self._loop, self.stop_now = asyncio.get_running_loop(), asyncio.Event()
        task = self._loop.run_in_executor(None, self.startup)
        yield
        self.begin_drain()
        await task
        if self.loaded is not None:
            await asyncio.to_thread(self.loaded.engine.close, True)
