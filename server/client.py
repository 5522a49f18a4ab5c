"""The one HTTP client of the retrieval server: `radgr query`, the load test's readiness wait, the image's
health check, the benchmarks and the tests speak to a server through it (paths and bodies: `server.api`)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from server.api import HEALTH_PATH, METRICS_PATH, READY_PATH, RETRIEVE_PATH, error_reason
from sid_index.errors import RadgrError

POLL_S = 0.5  # between readiness checks while waiting


class ServerError(RadgrError):
    """The server answered with an error status; `status` and the one-line `reason`."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"server answered {status}: {reason}")
        self.status, self.reason = status, reason


class RetrievalClient:
    """Requests to one server (`url`), with its bearer token when it has one."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout_s: float = 60.0):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s

    def ready(self) -> tuple[dict[str, Any] | None, str]:
        """(/readyz's answer, "") when the server is ready, else (None, why not)."""
        try:
            resp = httpx.get(self.url + READY_PATH, headers=self.headers, timeout=min(self.timeout_s, 5.0))
        except httpx.HTTPError as exc:
            return None, f"cannot connect ({type(exc).__name__}: {exc})"
        if resp.status_code == 200:
            return resp.json(), ""
        return None, f"{READY_PATH} answered {resp.status_code}: {resp.text[:200]}"

    def wait_ready(self, wait_s: float = 0.0) -> dict[str, Any]:
        """/readyz's answer once the server is ready; a clear error if it is not within `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            answer, why = self.ready()
            if answer is not None:
                return answer
            if time.monotonic() >= deadline:
                raise RadgrError(f"server {self.url} is not ready: {why}")
            time.sleep(POLL_S)

    def retrieve_response(self, body: dict[str, Any] | None = None, content: bytes | None = None) -> httpx.Response:
        """The raw answer to one retrieval request (a JSON body, or raw `content` sent as JSON)."""
        headers = self.headers | ({"content-type": "application/json"} if content is not None else {})
        return httpx.post(self.url + RETRIEVE_PATH, json=body if content is None else None, content=content,
                          headers=headers, timeout=self.timeout_s)

    def retrieve(self, query: str | None = None, history: list[str] | None = None,
                 user: dict[str, str] | None = None, top_k: int = 10, beam_width: int | None = None,
                 with_titles: bool = False) -> dict[str, Any]:
        """One retrieval: the response body; `ServerError` (one line) on an error status."""
        body: dict[str, Any] = {"query": query, "history": history or [], "user": user or {}, "top_k": top_k}
        if beam_width is not None:
            body["beam_width"] = beam_width
        if with_titles:
            body["with_titles"] = True
        resp = self.retrieve_response(body)
        if resp.status_code != 200:
            try:
                payload = resp.json()
            except ValueError:
                payload = None
            raise ServerError(resp.status_code, error_reason(payload, resp.text))
        return resp.json()

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + HEALTH_PATH, timeout=min(self.timeout_s, 5.0)).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        """The Prometheus exposition text."""
        return httpx.get(self.url + METRICS_PATH, headers=self.headers, timeout=self.timeout_s).text
