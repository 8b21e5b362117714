"""The broker's client: identity, context (long poll) and report, with retries.

Reusable on its own: a benchmark runs thousands of simulated agents in one process with it,
sharing one connection pool. Transient trouble (no connection, timeouts, 5xx, 429) is retried
with capped exponential backoff and jitter until the agent's deadline; refusals (400, 401, 403,
410) are final. Each retry says what failed and when the next attempt is (the first few, then
one line per LOG_EVERY seconds), and after a failed connection the bootstrap is read again: a
broker that moved for good is followed to the address its new bootstrap names.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx
from pydantic import ValidationError

from oneclick import __version__
from oneclick.api import errors
from oneclick.api.protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    Bootstrap,
    Context,
    Identity,
    Pending,
    Report,
)

T = TypeVar("T")
FINAL = {400, 401, 403, 404, 410, 413, 422}  # 422: what this agent sent is not acceptable
LOG_FIRST = 5  # retries logged one by one before the rate limit applies
LOG_EVERY = 30.0  # then at most one line per this many seconds

logger = logging.getLogger("occ-agent")

# Where the bootstrap came from, read again: None when it cannot be read now.
Reload = Callable[[], Awaitable[Bootstrap | None]]


@dataclass(frozen=True)
class Versioned:
    """A complete context and its version (the broker's ETag)."""

    context: Context
    version: str


class BrokerRefused(Exception):
    """The broker said no, for good; the message is the broker's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the broker refused ({status}): {message}")
        self.status = status


class BrokerUnreachable(Exception):
    """The broker could not be reached within the agent's time limit."""


@dataclass
class Backoff:
    first: float = 0.5
    cap: float = 15.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.first * 2 ** attempt))  # noqa: S311


def tls_context(ca_pem: str) -> ssl.SSLContext:
    """Trust the broker's CA from the bootstrap, and nothing else."""
    context = ssl.create_default_context(cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


ERRNO_WORDS = {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "no route to host",
               errno.ENETUNREACH: "network unreachable", errno.ETIMEDOUT: "connection timed out",
               errno.ECONNRESET: "connection reset"}


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what caused it, down the chain (and into exception groups: a name with
    several addresses fails once per address)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending += list(current.exceptions)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def describe_failure(error: httpx.HTTPError) -> str:
    """A few words for what went wrong on the way to the broker."""
    text = str(error)
    if isinstance(error, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(error, httpx.ConnectError):
        for cause in _causes(error):
            if isinstance(cause, ssl.SSLCertVerificationError):
                return f"TLS verification failed: {cause.verify_message}"
            if isinstance(cause, socket.gaierror):
                return f"name not resolved: {cause.strerror}"
            if isinstance(cause, OSError) and cause.errno in ERRNO_WORDS:
                return ERRNO_WORDS[cause.errno]
        return f"cannot connect: {text or type(error).__name__}"
    if isinstance(error, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "connection dropped"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _seconds(delay: float) -> str:
    return f"{delay:.0f}" if delay >= 1 else f"{delay:.1f}"


class BrokerClient:
    def __init__(self, bootstrap: Bootstrap, http: httpx.AsyncClient | None = None,
                 deadline: float | None = None, backoff: Backoff | None = None,
                 reload: Reload | None = None) -> None:
        self._bootstrap = bootstrap
        self._own_http = http is None
        self._http = http or _http_client(bootstrap.ca_cert)
        self._headers = {
            "Authorization": f"Bearer {bootstrap.token}",
            "OneClick-Member": f"{bootstrap.namespace}/{bootstrap.cluster}/{bootstrap.member}",
            PROTOCOL_HEADER: str(PROTOCOL_VERSION),
            "User-Agent": f"occ-agent/{__version__}",
        }
        self._base = bootstrap.broker_url.rstrip("/")
        self._deadline = deadline if deadline is not None else time.monotonic() + 1800
        self._backoff = backoff or Backoff()
        self._reload = reload
        self._failures = 0  # consecutive failed attempts, whatever the call
        self._logged_at = float("-inf")

    @property
    def broker_url(self) -> str:
        return self._base

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def _retrying(self, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        while True:
            problem: str
            unreachable = False
            try:
                response = await call()
                if response.status_code < 400 or response.status_code == 409:
                    self._recovered()
                    return response
                message = _message(response)
                if response.status_code in FINAL:
                    raise BrokerRefused(response.status_code, message)
                problem = f"{response.status_code} {message}"
                wait = float(response.headers.get("Retry-After", "0") or 0)
            except httpx.HTTPError as error:
                problem, wait, unreachable = describe_failure(error), 0.0, True
            self._failures += 1
            delay = max(wait, self._backoff.delay(self._failures - 1))
            if time.monotonic() + delay > self._deadline:
                raise BrokerUnreachable(f"gave up on the broker at {self._base} after "
                                        f"{self._failures} attempts: {problem}")
            self._log_retry(("broker unreachable" if unreachable else "broker busy")
                            + f" ({problem}), attempt {self._failures}, next in "
                            f"{_seconds(delay)} s")
            await asyncio.sleep(delay)
            if unreachable:
                await self._follow_bootstrap()

    def _log_retry(self, line: str) -> None:
        """The first few retries, then one line per LOG_EVERY seconds."""
        now = time.monotonic()
        if self._failures <= LOG_FIRST or now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            logger.info("%s", line)

    def _recovered(self) -> None:
        if self._failures > 0:
            logger.info("broker at %s answered after %d failed attempts", self._base,
                        self._failures)
        self._failures = 0
        self._logged_at = float("-inf")

    async def _follow_bootstrap(self) -> None:
        """Read the bootstrap again; when it names another broker for this same member (the
        operator moved the broker for good), talk to that one from now on."""
        if self._reload is None:
            return
        fresh = await self._reload()
        if fresh is None or fresh.broker_url.rstrip("/") == self._base:
            return
        mine = self._bootstrap
        if (fresh.token, fresh.member, fresh.cluster, fresh.namespace) != (
                mine.token, mine.member, mine.cluster, mine.namespace):
            logger.warning("the bootstrap now belongs to another member or token; keeping %s",
                           self._base)
            return
        logger.info("the bootstrap now names the broker at %s (was %s); switching",
                    fresh.broker_url, self._base)
        if fresh.ca_cert != mine.ca_cert and self._own_http:
            await self._http.aclose()
            self._http = _http_client(fresh.ca_cert)
        self._bootstrap = fresh
        self._base = fresh.broker_url.rstrip("/")

    async def provide_identity(self, identity: Identity) -> bool:
        """True when stored; False when the broker has this member's final report already."""
        response = await self._retrying(lambda: self._http.post(
            f"{self._base}/v1/identity", json=identity.wire(), headers=self._headers))
        return response.status_code != 409

    async def fetch_context(self, wait: float = 30.0,
                            known: str | None = None) -> Versioned | Pending | None:
        """One long poll: the complete context, what it waits for, or (with `known`, the
        version the agent has) None while the context is still that one."""
        headers = self._headers if known is None else {**self._headers, "If-None-Match": known}
        response = await self._retrying(lambda: self._http.get(
            f"{self._base}/v1/context", params={"wait": f"{wait:g}"}, headers=headers))
        if response.status_code == 304:
            return None
        if response.status_code == 202:
            return Pending.model_validate_json(response.content)
        try:  # as strictly as the broker checks identities: the agent writes what it gets
            context = Context.model_validate_json(response.content)
        except ValidationError as error:
            raise ValueError("the broker's context is not acceptable: " + errors.describe(
                error, errors.parsed(response.content))) from None
        return Versioned(context, response.headers.get("ETag", ""))

    async def context(self, wait: float = 30.0) -> Versioned:
        """Long-poll until the context is complete."""
        while True:
            answer = await self.fetch_context(wait)
            if isinstance(answer, Versioned):
                return answer
            if answer is None:
                continue  # (no version was sent: a broker that answers 304 anyway is retried)
            if time.monotonic() > self._deadline:
                raise BrokerUnreachable(
                    f"the context never completed; still waiting for {answer.missing}: "
                    + ", ".join(answer.waiting_for))

    async def next_context(self, known: str, wait: float = 30.0) -> Versioned | None:
        """The context once it differs from version `known` (members were added or removed),
        or None after `wait` seconds without a change."""
        answer = await self.fetch_context(wait, known)
        return answer if isinstance(answer, Versioned) else None

    def retry_forever(self) -> None:
        """From now on, never give up on the broker (an agent that follows its launch waits
        out a controller that is down)."""
        self._deadline = math.inf

    async def report(self, report: Report) -> bool:
        """True when stored; False when the broker already had a (different) final report."""
        response = await self._retrying(lambda: self._http.post(
            f"{self._base}/v1/report", json=report.wire(), headers=self._headers))
        return response.status_code != 409


def _http_client(ca_pem: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=tls_context(ca_pem), timeout=httpx.Timeout(90.0, connect=10.0))


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text[:200]
