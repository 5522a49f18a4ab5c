"""ASGI middleware and admission control of the app: body limits and per-client request slots."""

from __future__ import annotations

import json
import re

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a client's X-Request-ID is echoed only when it looks like one


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app reads it (by its
    Content-Length, or, when streamed, as soon as the running total passes the limit); POST bodies
    that are not JSON get 415. Nothing else is parsed or buffered here."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            return await _reject(send, 415, "the request body must be JSON (Content-Type: application/json)")
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            return await _reject(send, 400, "bad Content-Length")
        if declared > self.limit:
            return await _reject(send, 413, f"request body over {self.limit} bytes")
        seen = 0
        state = {"replied": False, "rejected": False}

        async def bounded_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not state["replied"]:
                    state["replied"] = state["rejected"] = True
                    await _reject(send, 413, f"request body over {self.limit} bytes")
                    return {"type": "http.disconnect"}  # the app stops reading; its own answer is dropped
            return message

        async def guarded_send(message):
            if state["rejected"]:
                return
            state["replied"] = state["replied"] or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, bounded_receive, guarded_send)


async def _reject(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ClientSlots:
    """Requests in flight per client address (uvicorn's, after trusted X-Forwarded-For): one client, a flood
    or a runaway batch job, cannot take every `max_pending` slot and starve the others; past its share it
    gets 429 at once, before any work."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.counts: dict[str, int] = {}

    def take(self, client: str) -> bool:
        n = self.counts.get(client, 0)
        if self.limit is not None and n >= self.limit:
            return False
        self.counts[client] = n + 1
        return True

    def give_back(self, client: str) -> None:
        n = self.counts.pop(client) - 1
        if n:
            self.counts[client] = n
