"""The decoding engine interface and the request micro-batcher both engines share.

An engine turns prompts (token ids) into the best SIDs of the index with their scores. The
HTTP layer never calls the model: it submits a `Job` and awaits its future. One worker
thread takes every job waiting (up to `max_batch`) and decodes them together, so requests
that arrive while a batch runs share the next one's forward passes: the engines run each
decoder step over all live beams of all requests of the batch at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Hits:
    """The valid SIDs found for one prompt, best first."""

    codes: np.ndarray  # [n, L] int64
    scores: np.ndarray  # [n] float: sum of token log-probs (and log p(EOS) when scored)


@dataclass
class BatchStats:
    """What one decoded batch looked like (for metrics)."""

    requests: int
    beams_per_step: list[int]  # live beams summed over the batch's requests, per decoder step
    invalid: int  # beams the decoder finished that are not SIDs of the index (must stay 0)
    seconds: float


class QueueFull(Exception):
    """More requests are waiting than the engine accepts."""


class DeadlineExceeded(Exception):
    """A request's deadline passed before its batch started."""


@dataclass
class Job:
    prompt: list[int]
    width: int
    deadline: float  # time.monotonic() after which the job is dropped unstarted
    vector: np.ndarray | None = None  # the prompt's text vector (checkpoints with text inputs)
    prior: np.ndarray | None = None  # the request vector of the index prior (servers with one)
    lexical: np.ndarray | None = None  # [SKUs] the weighted BM25 term of the item-form prior (servers with one)
    future: Future = field(default_factory=Future)


class BatchingEngine:
    """A worker thread that decodes queued jobs in batches; subclasses implement `decode`."""

    name = "base"

    def __init__(self, max_batch: int = 8, max_pending: int = 64, on_batch: Callable[[BatchStats], None] | None = None):
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_batch = on_batch
        self._pending: deque[Job] = deque()
        self._running = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- to implement -------------------------------------------------------------------------
    def decode(self, prompts: list[list[int]], widths: list[int], vectors: list[np.ndarray | None] | None = None,
               priors: list[np.ndarray | None] | None = None, lexicals: list[np.ndarray | None] | None = None
               ) -> tuple[list[Hits], BatchStats]:
        """Decode a batch synchronously (called from the worker thread only); `vectors`: the prompts'
        text vectors (None where a prompt has no text-vector slot); `priors`: their index-prior request
        vectors (engines built with an index prior); `lexicals`: their weighted BM25 rows (engines with the
        item form and a lexical term; None where a request has no query)."""
        raise NotImplementedError

    def shutdown_backend(self) -> None:
        """Free the model (after the worker stopped)."""

    # -- shared -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"{self.name}-engine", daemon=True)
            self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for a batch (not counting the one running)."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._pending) + self._running

    def submit(self, prompt: list[int], width: int, timeout_s: float, vector: np.ndarray | None = None,
               prior: np.ndarray | None = None, lexical: np.ndarray | None = None) -> Future:
        """Queue one prompt; the future resolves to its `Hits`. Raises `QueueFull` past `max_pending`."""
        job = Job(prompt=list(prompt), width=int(width), deadline=time.monotonic() + timeout_s, vector=vector,
                  prior=prior, lexical=lexical)
        with self._cond:
            if self._stop:
                raise RuntimeError("engine is shut down")
            if self.in_flight >= self.max_pending:
                raise QueueFull(f"{self.in_flight} requests in flight (limit {self.max_pending})")
            self._pending.append(job)
            self._cond.notify()
        return job.future

    async def search(self, prompt: list[int], width: int, timeout_s: float, vector: np.ndarray | None = None,
                     prior: np.ndarray | None = None, lexical: np.ndarray | None = None) -> Hits:
        """Async form of `submit`: raises `asyncio.TimeoutError` past the deadline (and cancels the job)."""
        fut = self.submit(prompt, width, timeout_s, vector, prior, lexical)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            fut.cancel()  # a job not yet started is skipped by the worker
            raise

    def search_many(self, prompts: list[list[int]], width: int, vectors: list[np.ndarray | None] | None = None,
                    priors: list[np.ndarray | None] | None = None,
                    lexicals: list[np.ndarray | None] | None = None) -> list[Hits]:
        """Synchronous batch decode (benchmarks, offline use); bypasses the queue."""
        hits, _ = self.decode(prompts, [width] * len(prompts), vectors, priors, lexicals)
        return hits

    def close(self, drain: bool = True) -> None:
        """Stop the worker: finish queued jobs first when `drain`, else fail them."""
        with self._cond:
            self._stop = True
            if not drain:
                while self._pending:
                    self._pending.popleft().future.set_exception(RuntimeError("engine shut down"))
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.shutdown_backend()

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._pending and not self._stop:
                self._cond.wait()
            if not self._pending:
                return None
            jobs = []
            now = time.monotonic()
            while self._pending and len(jobs) < self.max_batch:
                job = self._pending.popleft()
                if not job.future.set_running_or_notify_cancel():
                    continue  # the caller gave up
                if now > job.deadline:
                    job.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                    continue
                jobs.append(job)
            self._running = len(jobs)
            return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            if not jobs:
                continue
            try:
                hits, stats = self.decode([j.prompt for j in jobs], [j.width for j in jobs], [j.vector for j in jobs],
                                          [j.prior for j in jobs], [j.lexical for j in jobs])
            except Exception as exc:  # noqa: BLE001 - reported to every caller of the batch
                for job in jobs:
                    job.future.set_exception(exc)
            else:
                for job, h in zip(jobs, hits, strict=True):
                    job.future.set_result(h)
                if self.on_batch is not None:
                    self.on_batch(stats)
            finally:
                with self._cond:
                    self._running = 0

