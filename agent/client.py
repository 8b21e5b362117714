"""The broker's client: identity, context (long poll) and report, with retries.

Reusable on its own: a benchmark runs thousands of simulated agents in one process with it,
sharing one connection pool. Transient trouble (no connection, timeouts, 5xx, 429) is retried
with capped exponential backoff and jitter; refusals (400, 401, 403, 410) are final.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from api.protocol import Bootstrap, Context, Identity, Pending, Report

T = TypeVar("T")
FINAL = {400, 401, 403, 404, 410, 413}


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


class BrokerClient:
    def __init__(self, bootstrap: Bootstrap, http: httpx.AsyncClient | None = None,
                 deadline: float | None = None, backoff: Backoff | None = None) -> None:
        self._bootstrap = bootstrap
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(verify=tls_context(bootstrap.ca_cert),
                                               timeout=httpx.Timeout(90.0, connect=10.0))
        self._headers = {
            "Authorization": f"Bearer {bootstrap.token}",
            "OneClick-Member": f"{bootstrap.namespace}/{bootstrap.cluster}/{bootstrap.member}",
        }
        self._base = bootstrap.broker_url.rstrip("/")
        self._deadline = deadline if deadline is not None else time.monotonic() + 1800
        self._backoff = backoff or Backoff()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def _retrying(self, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        attempt = 0
        while True:
            problem: str
            try:
                response = await call()
                if response.status_code < 400 or response.status_code == 409:
                    return response
                message = _message(response)
                if response.status_code in FINAL:
                    raise BrokerRefused(response.status_code, message)
                problem = f"{response.status_code} {message}"
                wait = float(response.headers.get("Retry-After", "0") or 0)
            except httpx.HTTPError as error:
                problem, wait = f"{type(error).__name__}: {error}", 0.0
            delay = max(wait, self._backoff.delay(attempt))
            if time.monotonic() + delay > self._deadline:
                raise BrokerUnreachable(f"gave up on the broker at {self._base}: {problem}")
            attempt += 1
            await asyncio.sleep(delay)

    async def provide_identity(self, identity: Identity) -> bool:
        """True when stored; False when the broker has this member's final report already."""
        response = await self._retrying(lambda: self._http.post(
            f"{self._base}/v1/identity", json=identity.wire(), headers=self._headers))
        return response.status_code != 409

    async def fetch_context(self, wait: float = 30.0) -> Context | Pending:
        response = await self._retrying(lambda: self._http.get(
            f"{self._base}/v1/context", params={"wait": f"{wait:g}"}, headers=self._headers))
        if response.status_code == 202:
            return Pending.model_validate_json(response.content)
        return Context.model_validate_json(response.content)

    async def context(self, wait: float = 30.0) -> Context:
        """Long-poll until the context is complete."""
        while True:
            answer = await self.fetch_context(wait)
            if isinstance(answer, Context):
                return answer
            if time.monotonic() > self._deadline:
                raise BrokerUnreachable(
                    f"the context never completed; still waiting for {answer.missing}: "
                    + ", ".join(answer.waiting_for))

    async def report(self, report: Report) -> bool:
        """True when stored; False when the broker already had a (different) final report."""
        response = await self._retrying(lambda: self._http.post(
            f"{self._base}/v1/report", json=report.wire(), headers=self._headers))
        return response.status_code != 409


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text[:200]
