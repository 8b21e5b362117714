"""The broker's HTTPS endpoints: identity, context (long poll), report and the agent file.

Every request is authenticated first (`auth`: the member's bootstrap token, the member it
names); its body is read strictly (`bodies`); every accepted identity and report is in the
member's status before the answer goes out.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from oneclick import __version__
from oneclick.api.protocol import PROTOCOL_VERSION, Identity, Pending, Report
from oneclick.controller import metrics
from oneclick.controller.broker import identity_rules, openapi
from oneclick.controller.broker.agent_file import AgentFile, Downloads, send_file
from oneclick.controller.broker.auth import Authenticator
from oneclick.controller.broker.bodies import BODY_LIMIT, read_body
from oneclick.controller.broker.context import ContextBuilder, DataUnavailable, LaunchGone
from oneclick.controller.broker.domains import Domains
from oneclick.controller.broker.hearing import Hearing
from oneclick.controller.broker.limits import Limits
from oneclick.controller.broker.listener import GatedTLSSite
from oneclick.controller.broker.member_status import member_status
from oneclick.controller.broker.problem import RETRY_AFTER, Problem
from oneclick.controller.cache import Key, LaunchCache, MemberRecord
from oneclick.kits.kube import JSON, ApiError, Invalid, KubeClient
from oneclick.kits.resources import apply_body, custom_path

logger = logging.getLogger(__name__)

FIELD_MANAGER = "occ-broker"
MAX_WAIT = 60.0
IDENTITY_CHANGES = 20  # per member, over its life: each one is a status write of up to 64 KiB

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Broker:
    def __init__(self, kube: KubeClient, cache: LaunchCache,
                 hearing: Hearing | None = None, domains: Domains | None = None,
                 agent_file: AgentFile | None = None) -> None:
        self._kube, self._cache = kube, cache
        self.agent_file = agent_file or AgentFile(None)
        self.hearing = hearing or Hearing()
        self._auth = Authenticator(cache, self.hearing)
        self._context = ContextBuilder(cache, kube, domains)
        # names no two members share, each under its launch's domain
        self._claims = identity_rules.LaunchClaims(cache, domains)
        self._writing: set[Key] = set()  # members whose status write is in flight
        self._downloads = Downloads()  # members being sent the agent file

    def app(self) -> web.Application:
        app = web.Application(client_max_size=BODY_LIMIT, middlewares=[self._errors])
        app.router.add_post("/v1/identity", self.identity)
        app.router.add_get("/v1/context", self.context)
        app.router.add_post("/v1/report", self.report)
        app.router.add_get("/v1/agent", self.agent)
        app.router.add_get("/v1/openapi.json", self.openapi)
        app.router.add_get("/healthz", self.healthz)
        return app

    # -- cross-cutting --------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = request.match_info.route.resource.canonical if (
            request.match_info.route.resource is not None) else "unknown"
        try:
            response = await handler(request)
        except Problem as problem:
            response = problem.response()
        except web.HTTPException as error:  # routing: 404, 405
            response = web.json_response({"status": error.status, "message": error.reason},
                                         status=error.status)
        except ApiError as error:
            logger.warning("API server refused a broker write: %s", error)
            if isinstance(error, Invalid):  # what was sent can never be stored: no retry
                response = Problem(422, "the API server refused to store this: "
                                        f"{str(error.reason)[:1024]}").response()
            else:
                response = Problem(503, "the broker cannot store this right now; retry",
                                   {"Retry-After": RETRY_AFTER}).response()
        metrics.BROKER_REQUESTS.labels(endpoint, str(response.status)).inc()
        return response

    def close(self) -> None:
        """Answer every long poll now and hold no new one (before the server stops)."""
        self._context.close()

    @contextlib.contextmanager
    def _one_write(self, record: MemberRecord) -> Iterator[None]:
        """One status write per member at a time: concurrent requests would each read the same
        identity count and each write 64 KiB (the agent sends one request at a time)."""
        key = (record.namespace, record.name)
        if key in self._writing:
            raise Problem(429, f"a write for member {record.name} is in progress; retry",
                          {"Retry-After": "1"})
        self._writing.add(key)
        try:
            yield
        finally:
            self._writing.discard(key)

    async def _store(self, record: MemberRecord, status: JSON) -> None:
        """Write the broker's part of a member's status; the cache sees it at once."""
        path = custom_path("LaunchMember", record.namespace, record.name, "status")
        body = apply_body("LaunchMember", record.name, record.namespace, status=status)
        self._cache.put_member(await self._kube.apply(path, body, FIELD_MANAGER))

    # -- endpoints ------------------------------------------------------------------------

    async def identity(self, request: web.Request) -> web.Response:
        record = self._auth.member(request)
        identity = (await read_body(request, Identity)).wire()
        record = self._auth.current(record)
        if record.identity == identity:  # a retry: nothing to write
            return web.json_response({"stored": True})
        if record.report is not None:
            raise Problem(409, "this member already reported; its identity is final")
        changes = int(record.status.get("identityChanges") or 0)
        if record.identity is not None:
            if changes >= IDENTITY_CHANGES:
                raise Problem(429, f"member {record.name} changed its identity "
                                   f"{IDENTITY_CHANGES} times already; no more changes are "
                                   "accepted")
            changes += 1
        clash = self._claims.conflict(record, identity)
        if clash is not None:
            raise Problem(422, f"invalid Identity: {clash}")
        with self._one_write(record):
            status = member_status(record, identity, None)
            if changes:
                status["identityChanges"] = changes
            await self._store(record, status)
        return web.json_response({"stored": True})

    async def context(self, request: web.Request) -> web.StreamResponse:
        record = self._auth.member(request)
        try:
            wait = float(request.query.get("wait", "0"))
        except ValueError as error:
            raise Problem(400, "wait must be a number of seconds") from error
        if not 0 <= wait <= MAX_WAIT:
            raise Problem(400, f"wait must be between 0 and {MAX_WAIT:.0f} seconds")
        known = request.headers.get("If-None-Match")
        with self.hearing.waiting(record.uid):
            if known is None:
                return await self._long_poll(request, record, time.monotonic() + wait)
            return await self._follow(request, record, known, time.monotonic() + wait)

    async def _answer(self, record: MemberRecord) -> bytes | Pending:
        try:
            return await self._context.context_json(record)
        except LaunchGone as gone:
            raise Problem(410, str(gone)) from gone
        except DataUnavailable as error:
            raise Problem(503, str(error), {"Retry-After": RETRY_AFTER}) from error

    async def _long_poll(self, request: web.Request, record: MemberRecord,
                         deadline: float) -> web.StreamResponse:
        """The context once it is complete, or what it waits for at the deadline."""
        while True:
            answer = await self._answer(record)
            if isinstance(answer, bytes):
                return await self._send_context(request, answer)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._context.closing:
                return self._pending(answer)
            await self._context.wait_complete(record, remaining)
            # The member may have changed too (deleted, token revoked): look it up again.
            record = self._auth.current(record)

    async def _follow(self, request: web.Request, record: MemberRecord, known: str,
                      deadline: float) -> web.StreamResponse:
        """A contextualized agent following its launch: the context once it is complete and
        differs from the version the agent has (members were added or removed), else 304 at
        the deadline."""
        while True:
            seen = self._context.changes(record.cluster_key)
            answer = await self._answer(record)
            if isinstance(answer, bytes) and context_version(answer) != known:
                return await self._send_context(request, answer)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._context.closing:
                return web.Response(status=304, headers={"ETag": known})
            await self._context.wait_changed(record, remaining, seen)
            record = self._auth.current(record)

    @staticmethod
    async def _send_context(request: web.Request, body: bytes) -> web.StreamResponse:
        # Written out rather than returned as a Response: aiohttp keeps the last response of a
        # kept-alive connection until the next request is done, and an agent's report waits
        # for its write while thousands of others do (5 KiB each, at 5,000 agents 25 MiB).
        response = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "ETag": context_version(body)})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    def _pending(self, pending: Pending) -> web.Response:
        return web.json_response(pending.wire(), status=202, headers={"Retry-After": RETRY_AFTER})

    async def report(self, request: web.Request) -> web.Response:
        record = self._auth.member(request)
        report = (await read_body(request, Report)).wire()
        record = self._auth.current(record)
        if record.report is not None:
            if record.report == report:  # a retry of a report that was stored
                return web.json_response({"stored": True})
            raise Problem(409, "this member already reported")
        if record.identity is None:
            raise Problem(409, "provide identity before reporting")
        with self._one_write(record):
            await self._store(record, member_status(record, record.identity, report))
        return web.json_response({"stored": True})

    async def agent(self, request: web.Request) -> web.StreamResponse:
        """The agent as one file, for a member whose image has none (its token opens it, as
        every endpoint); Content-Digest carries its SHA-256 to check before running it."""
        record = self._auth.member(request)
        try:
            served = self.agent_file.current()  # (read and hashed once per change of the file)
        except LookupError as error:
            raise Problem(404, str(error)) from error
        if not self._downloads.start(record.uid):
            raise Problem(429, f"the agent is being sent to {len(self._downloads.members)} "
                               "members now (at most one download each); retry",
                          {"Retry-After": RETRY_AFTER})
        try:
            return await send_file(request, served)
        finally:
            self._downloads.end(record.uid)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.document())

    async def healthz(self, request: web.Request) -> web.Response:
        ready = self._cache.synced.is_set()
        return web.json_response({"synced": ready, "version": __version__,
                                  "protocol": PROTOCOL_VERSION}, status=200 if ready else 503)


async def serve(app: web.Application, host: str, port: int, tls: ssl.SSLContext,
                limits: Limits | None = None) -> web.AppRunner:
    """Start serving `app` over TLS; the caller cleans the returned runner up."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await GatedTLSSite(runner, host, port, tls, limits).start()
    return runner


def context_version(body: bytes) -> str:
    """The ETag of a context answer: an agent that has it sends it back (If-None-Match) to
    hear only of a context that differs."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful when asked for port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            port: int = address[1]
            return port
    raise RuntimeError("the broker is not listening")

