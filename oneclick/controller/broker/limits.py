"""How far a client may go with the broker's connections, and who is let in.

A stranger without a token must not exhaust the controller: every accepted connection costs
memory (tens of KiB once TLS is up), so connections are counted from the moment they are
accepted, in all and by source address. Beyond either cap a new connection is closed at once,
before any TLS (which is what would cost the broker something), counted in
`occ_broker_connections_refused_total` and told in a warning at most every WARN_EVERY seconds.

A source is an address; an IPv6 /64 counts as one (a single host usually holds a whole /64).
Members behind one NAT address, or a Service that rewrites source addresses, are one source:
the per-source cap must stay above the largest launch that may come from behind one.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any

from oneclick.controller import metrics
from oneclick.controller.settings import Settings

logger = logging.getLogger(__name__)

WARN_EVERY = 10.0
# A request's head: its request line, each header line, how many, and all of it together.
# The broker's own requests need a few hundred bytes (the longest header names a member).
MAX_LINE = 4096
MAX_FIELD = 4096
MAX_HEADERS = 32
HEAD_LIMIT = 16 * 1024


@dataclass(frozen=True)
class Limits:
    idle_timeout: float = 75.0  # between requests (agents long-poll up to 60 s)
    header_timeout: float = 10.0  # from a request's first byte until its head is complete
    max_connections: int = 12_000
    max_per_source: int = 6_000

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.broker_idle_timeout, settings.broker_header_timeout,
                   settings.broker_max_connections, settings.broker_max_connections_per_source)


def source_of(peername: Any) -> str:
    """The source a connection counts against: its address, or its /64 for IPv6."""
    host = str(peername[0] if isinstance(peername, tuple) else peername)
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Admission:
    """Open connections, in all and by source; refuses those beyond the limits."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._open = 0
        self._by_source: dict[str, int] = {}
        self._refused: dict[str, int] = {}  # since the last warning, by source
        self._warned = 0.0

    @property
    def open(self) -> int:
        return self._open

    def admit(self, peername: Any) -> str | None:
        """The connection's source when it may stay; None when it must be closed."""
        source = source_of(peername)
        from_source = self._by_source.get(source, 0)
        if from_source >= self._limits.max_per_source:
            self._refuse(source, "per_source")
            return None
        if self._open >= self._limits.max_connections:
            self._refuse(source, "total")
            return None
        self._by_source[source] = from_source + 1
        self._open += 1
        metrics.BROKER_CONNECTIONS.set(self._open)
        return source

    def release(self, source: str) -> None:
        left = self._by_source.get(source, 0) - 1
        if left > 0:
            self._by_source[source] = left
        else:
            self._by_source.pop(source, None)
        self._open = max(0, self._open - 1)
        metrics.BROKER_CONNECTIONS.set(self._open)

    def _refuse(self, source: str, reason: str) -> None:
        metrics.BROKER_CONNECTIONS_REFUSED.labels(reason).inc()
        self._refused[source] = self._refused.get(source, 0) + 1
        now = time.monotonic()
        if now - self._warned < WARN_EVERY:
            return
        self._warned = now
        worst = sorted(self._refused.items(), key=lambda item: -item[1])[:5]
        self._refused.clear()
        logger.warning(
            "too many connections: refused %s (%d open, at most %d in all and %d from one "
            "source; OCC_BROKER_MAX_CONNECTIONS, OCC_BROKER_MAX_CONNECTIONS_PER_SOURCE)",
            ", ".join(f"{count} from {address}" for address, count in worst), self._open,
            self._limits.max_connections, self._limits.max_per_source)
