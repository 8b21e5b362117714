"""aiohttp's request handler, with a deadline and a size bound for each request's head.

aiohttp bounds each line of a head but not the time it takes, nor the whole: a client that
sends a header a byte at a time holds its connection, and its half-read head, until the
keep-alive timeout. Here a head must be complete within `header_timeout` of its first byte
and within HEAD_LIMIT bytes; otherwise the client gets a 408 or 431 and the connection is
closed. (The body has its own deadline in the handlers; the time between requests is
aiohttp's keep-alive timeout.)

Whether bytes belong to a head is told by aiohttp's queue of parsed requests (`_messages`,
the one private attribute read here): bytes that arrive while no request is parsed and
unanswered are the next head. The broker's tests send heads slowly and too large, so an
aiohttp that changed this fails them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from oneclick.controller import metrics
from oneclick.controller.broker.limits import HEAD_LIMIT

logger = logging.getLogger(__name__)


def _answer(status: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


_TOO_SLOW = _answer("408 Request Timeout", "the request head came in too slowly\n")
_TOO_LARGE = _answer("431 Request Header Fields Too Large", "the request head is too large\n")


class TimedHeadHandler(RequestHandler):
    """One connection's HTTP: aiohttp's handler, with heads on a deadline."""

    __slots__ = ("_head_bytes", "_head_deadline", "_header_timeout", "_in_flight", "_on_close")

    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop,
                 header_timeout: float, on_close: Callable[[], None], **options: Any) -> None:
        super().__init__(manager, loop=loop, **options)
        self._header_timeout = header_timeout
        self._on_close: Callable[[], None] | None = on_close
        self._in_flight = 0  # requests parsed and not yet answered
        self._head_bytes = 0  # bytes of the next request's head so far
        self._head_deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        parsed = len(self._messages) - queued  # (only the handler's own task takes them)
        if parsed > 0:
            self._in_flight += parsed
            self._head_complete()
        elif self._in_flight == 0 and data and self.transport is not None:
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_LIMIT:
                self._cut("header_size", _TOO_LARGE)
            elif self._head_deadline is None:
                self._head_deadline = self._loop.call_later(
                    self._header_timeout, self._cut, "header_timeout", _TOO_SLOW)

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._in_flight = max(0, self._in_flight - 1)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_complete()
        super().connection_lost(exc)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def _head_complete(self) -> None:
        self._head_bytes = 0
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _cut(self, reason: str, answer: bytes) -> None:
        self._head_deadline = None
        if self._in_flight or self.transport is None:
            return  # the head came after all
        metrics.BROKER_CONNECTIONS_CUT.labels(reason).inc()
        logger.debug("closing a connection from %s: %s", self.peername, reason)
        self.transport.write(answer)
        self.force_close()
