"""uvicorn's h11 protocol with a deadline on reading a request's headers.

uvicorn closes idle keep-alive connections, but once a client has sent a first byte it waits for
the rest of the request line and headers for ever: a client sending one header line a second
(slowloris) holds its connection, and one of `max_connections` slots, as long as it likes. Here
the headers must be complete within `header_timeout_s` of the connection opening (on a kept-alive
connection: of the next request's first byte; uvicorn's keep-alive timeout covers the idle time
between requests); otherwise the connection is closed. The body is
bounded by the app's size limit and the request deadline, so it needs no timer here.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers take longer than `header_timeout_s`."""

    header_timeout_s: float = 10.0

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()  # an idle fresh connection is cut too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._disarm_header_deadline()
        elif self._header_deadline is None:  # first bytes of the next request on a kept-alive connection
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._on_header_deadline)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _on_header_deadline(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers took over %.1f s", self.header_timeout_s)
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn.Config(http=...) with this header deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": float(seconds)})
