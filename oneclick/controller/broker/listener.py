"""The broker's listener: HTTPS whose TLS handshakes wait for one of a few slots.

asyncio starts the handshake of every accepted connection at once. When thousands of agents
connect together, thousands of half-done handshakes each hold OpenSSL's record buffers and
key exchange state; freed afterwards, that memory stays stranded in the heap between the
connections' long-lived state. Measured with 2,000 long polls held open: 67 KiB a connection
with every handshake at once, 34 KiB with 64 at a time (`bench/README.md`). So an accepted
connection stays plain TCP, its ClientHello waiting in the kernel, until a slot is free; then
it is upgraded with `loop.start_tls` and handed to the HTTP server's handler.

A client that stalls its handshake must not hold a slot for long (64 of them would stop every
agent): a slot is lent for SLOT_LEASE seconds, then given back while that handshake goes on to
its own timeout. And the kernel hands a connection over only once it has bytes to read
(TCP_DEFER_ACCEPT), so connections that never say anything take no slot at all.

Every accepted connection counts against the caps of `limits.Admission` from accept until it
closes; one over a cap is closed there and then, before its handshake. Once up, a connection
is served by `heads.TimedHeadHandler`: heads on a deadline, idle connections closed.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import functools
import logging
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

from oneclick.controller.broker.heads import TimedHeadHandler
from oneclick.controller.broker.limits import MAX_FIELD, MAX_HEADERS, MAX_LINE, Admission, Limits

logger = logging.getLogger(__name__)

HANDSHAKES = 64
SLOT_LEASE = 1.0
HANDSHAKE_TIMEOUT = 10.0
BACKLOG = 2048
# asyncio gives every TLS connection a 256 KiB read buffer of its own; agents' requests are
# a few KiB, and a connection read in smaller pieces costs a few more calls, not more memory.
TLS_READ_BUFFER = 4 * 1024

# Makes the HTTP handler of a connection that is up; it calls its argument when it ends.
HandlerFactory = Callable[[Callable[[], None]], asyncio.Protocol]


class _GatedConnection(asyncio.Protocol):
    """One connection: plain TCP until a handshake slot is free, then TLS, then the handler.

    While `start_tls` completes, this object is the TLS transport's protocol: bytes that
    arrive before the handler takes over (a request right behind the client's Finished) are
    kept and handed over with it."""

    def __init__(self, handler_factory: HandlerFactory, context: ssl.SSLContext,
                 slots: asyncio.Semaphore, upgrades: set[asyncio.Task[None]],
                 admission: Admission) -> None:
        self._handler_factory, self._context, self._slots = handler_factory, context, slots
        self._upgrades, self._admission = upgrades, admission
        self._source: str | None = None  # counted against the caps while not None
        self._task: asyncio.Task[None] | None = None
        self._upgrading = False
        self._early = bytearray()
        self._eof = False
        self._lost = False
        self._lost_reason: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._source = self._admission.admit(transport.get_extra_info("peername"))
        if self._source is None:  # over a cap: closed before any TLS, which would cost us
            transport.abort()
            return
        transport.pause_reading()  # the ClientHello waits in the kernel, not in our heap
        self._task = asyncio.get_running_loop().create_task(self._upgrade(transport))
        self._upgrades.add(self._task)
        self._task.add_done_callback(self._upgrades.discard)

    def _closed(self) -> None:
        """The connection is over: it no longer counts against the caps."""
        if self._source is not None:
            source, self._source = self._source, None
            self._admission.release(source)

    async def _upgrade(self, tcp: asyncio.Transport) -> None:
        try:
            await self._handshake(tcp)
        finally:
            self._closed()  # (nothing to do once the handler has taken over)

    async def _handshake(self, tcp: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        await self._slots.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots.release()

        lease = loop.call_later(SLOT_LEASE, release)
        self._upgrading = True
        try:
            secure = await loop.start_tls(tcp, self, self._context, server_side=True,
                                          ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, RuntimeError) as error:  # the client's
            logger.debug("TLS handshake with %s failed: %s",
                         tcp.get_extra_info("peername"), error)
            tcp.abort()
            return
        finally:
            lease.cancel()
            release()
        assert secure is not None and self._source is not None
        # From here on the handler tells when the connection ends (and this object can go).
        source, self._source = self._source, None
        handler = self._handler_factory(functools.partial(self._admission.release, source))
        secure.set_protocol(handler)
        handler.connection_made(secure)
        if self._early:
            handler.data_received(bytes(self._early))
        if self._eof:
            handler.eof_received()
        if self._lost:
            handler.connection_lost(self._lost_reason)

    def data_received(self, data: bytes) -> None:
        self._early += data

    def eof_received(self) -> bool:
        self._eof = True
        return True  # keep the transport: the handler decides once it has it

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._upgrading and self._task is not None:
            self._task.cancel()  # gone while waiting for a slot: its turn is not needed
            self._closed()  # (a task cancelled before it ran runs no `finally`)
            return
        self._lost, self._lost_reason = True, exc


class GatedTLSSite(web.BaseSite):
    """An aiohttp site served over TLS with at most `handshakes` handshakes in flight."""

    __slots__ = ("_admission", "_context", "_handshakes", "_host", "_limits", "_port",
                 "_upgrades")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, context: ssl.SSLContext,
                 limits: Limits | None = None, handshakes: int = HANDSHAKES) -> None:
        super().__init__(runner, backlog=BACKLOG)  # TLS is ours, not the site's
        self._host, self._port, self._context = host, port, context
        self._limits = limits or Limits()
        self._admission = Admission(self._limits)
        self._handshakes = handshakes
        self._upgrades: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        limits = self._limits

        def handler(on_close: Callable[[], None]) -> asyncio.Protocol:
            return TimedHeadHandler(
                server, loop=loop, header_timeout=limits.header_timeout, on_close=on_close,
                keepalive_timeout=limits.idle_timeout, access_log=None,
                max_line_size=MAX_LINE, max_field_size=MAX_FIELD, max_headers=MAX_HEADERS)

        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        slots = asyncio.Semaphore(self._handshakes)
        self._server = await loop.create_server(
            lambda: _GatedConnection(handler, self._context, slots, self._upgrades,
                                     self._admission),
            self._host, self._port, backlog=self._backlog)
        if hasattr(socket, "TCP_DEFER_ACCEPT"):  # Linux
            for listening in self._server.sockets:
                listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT,
                                     int(HANDSHAKE_TIMEOUT))

    async def stop(self) -> None:
        for task in list(self._upgrades):
            task.cancel()
        await super().stop()
