"""The broker's HTTPS endpoints: identity, context (long poll) and report.

Every request is authenticated by the member's bootstrap token alone (looked up by its hash,
compared in constant time) and must say which member it speaks for; every accepted identity
and report is in the member's status before the answer goes out.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.protocol import Identity, Pending, Report
from controller import metrics
from controller.broker import openapi, tokens
from controller.broker.context import ContextBuilder, DataUnavailable, LaunchGone
from controller.broker.listener import GatedTLSSite
from controller.cache import LaunchCache, MemberRecord
from kits.kube import JSON, ApiError, KubeClient, apply_body, custom_path

logger = logging.getLogger(__name__)

FIELD_MANAGER = "occ-broker"
MEMBER_HEADER = "OneClick-Member"
BODY_LIMIT = 64 * 1024
BODY_TIMEOUT = 10.0
MAX_WAIT = 60.0
RETRY_AFTER = "2"

Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """An answer other than success, with a message that says what to change."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self) -> web.Response:
        return web.json_response({"status": self.status, "message": self.message},
                                 status=self.status, headers=self.headers)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


def _condition(type: str, status: bool, reason: str, message: str,
               conditions: list[JSON]) -> JSON:
    """A condition whose transition time moves only when its status does."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type), None)
    since = previous["lastTransitionTime"] if previous and previous["status"] == value else _now()
    return {"type": type, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since}


class Broker:
    def __init__(self, kube: KubeClient, cache: LaunchCache) -> None:
        self._kube, self._cache = kube, cache
        self._context = ContextBuilder(cache, kube)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=BODY_LIMIT, middlewares=[self._errors])
        app.router.add_post("/v1/identity", self.identity)
        app.router.add_get("/v1/context", self.context)
        app.router.add_post("/v1/report", self.report)
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
            response = Problem(503, "the broker cannot store this right now; retry",
                               {"Retry-After": RETRY_AFTER}).response()
        metrics.BROKER_REQUESTS.labels(endpoint, str(response.status)).inc()
        return response

    async def _member(self, request: web.Request) -> MemberRecord:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "a bootstrap token is required (Authorization: Bearer ...)",
                          {"WWW-Authenticate": "Bearer"})
        if not self._cache.synced.is_set():
            raise Problem(503, "the broker is starting; retry", {"Retry-After": RETRY_AFTER})
        token = token.strip()
        record = self._cache.member_by_token_hash(tokens.token_hash(token))
        if record is None or record.token_hash is None or not tokens.matches(
                token, record.token_hash):
            raise Problem(401, "unknown or revoked bootstrap token",
                          {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        claimed = request.headers.get(MEMBER_HEADER, "")
        namespace, cluster, member = [*claimed.split("/"), "", ""][:3]
        if not claimed:
            raise Problem(400, f"the {MEMBER_HEADER} header (namespace/cluster/member) is "
                               "required")
        if (namespace, cluster) != record.cluster_key:
            raise Problem(403, f"this token is not valid for cluster {namespace}/{cluster}")
        if member != record.name:
            raise Problem(403, f"this token is not valid for member {member}")
        return record

    async def _body(self, request: web.Request, model: type[Model]) -> Model:
        if request.content_length is not None and request.content_length > BODY_LIMIT:
            raise Problem(413, f"the body is larger than {BODY_LIMIT} bytes")
        try:
            raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT)
        except web.HTTPRequestEntityTooLarge as error:
            raise Problem(413, f"the body is larger than {BODY_LIMIT} bytes") from error
        except TimeoutError as error:
            raise Problem(408, f"the body did not arrive within {BODY_TIMEOUT:.0f}s") from error
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise Problem(400, f"the body is not valid JSON: {error}") from error
        try:
            return model.model_validate(data)
        except ValidationError as error:
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in error.errors()[:10])
            raise Problem(400, f"invalid {model.__name__}: {fields}") from error

    async def _store(self, record: MemberRecord, status: JSON) -> None:
        """Write the broker's part of a member's status; the cache sees it at once."""
        path = custom_path("LaunchMember", record.namespace, record.name, "status")
        body = apply_body("LaunchMember", record.name, record.namespace, status=status)
        self._cache.put_member(await self._kube.apply(path, body, FIELD_MANAGER))

    def _status(self, record: MemberRecord, identity: JSON, report: JSON | None) -> JSON:
        """Everything the broker owns of a member's status (server-side apply drops the
        fields a manager stops sending, so every write carries all of them)."""
        known = record.conditions
        address = (identity.get("addresses") or ["?"])[0]
        conditions = [_condition("IdentityProvided", True, "AgentReported",
                                 f"{identity['hostname']} at {address}", known)]
        status: JSON = {"identity": identity, "phase": "Contextualizing"}
        if report is not None:
            ok = bool(report["ok"])
            message = report.get("message") or ("contextualized" if ok else "failed")
            conditions.append(_condition("Contextualized", ok,
                                         "ReportedOk" if ok else "StepFailed", message, known))
            status.update(report=report, phase="Ready" if ok else "Failed")
        status["conditions"] = conditions
        return status

    # -- endpoints ------------------------------------------------------------------------

    async def identity(self, request: web.Request) -> web.Response:
        record = await self._member(request)
        identity = (await self._body(request, Identity)).wire()
        if record.report is not None:
            if record.identity == identity:
                return web.json_response({"stored": True})
            raise Problem(409, "this member already reported; its identity is final")
        if record.identity != identity:
            await self._store(record, self._status(record, identity, None))
        return web.json_response({"stored": True})

    async def context(self, request: web.Request) -> web.StreamResponse:
        record = await self._member(request)
        try:
            wait = float(request.query.get("wait", "0"))
        except ValueError as error:
            raise Problem(400, "wait must be a number of seconds") from error
        if not 0 <= wait <= MAX_WAIT:
            raise Problem(400, f"wait must be between 0 and {MAX_WAIT:.0f} seconds")
        deadline = time.monotonic() + wait
        while True:
            try:
                answer = await self._context.context_json(record)
            except LaunchGone as gone:
                raise Problem(410, str(gone)) from gone
            except DataUnavailable as error:
                raise Problem(503, str(error), {"Retry-After": RETRY_AFTER}) from error
            if isinstance(answer, bytes):
                return await self._send_context(request, answer)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._pending(answer)
            await self._context.wait_complete(record, remaining)
            # The member may have changed too (deleted, token revoked): look it up again.
            current = self._cache.members.get((record.namespace, record.name))
            if current is None or current.token_hash != record.token_hash:
                raise Problem(410, f"member {record.name} no longer exists")
            record = current

    @staticmethod
    async def _send_context(request: web.Request, body: bytes) -> web.StreamResponse:
        # Written out rather than returned as a Response: aiohttp keeps the last response of a
        # kept-alive connection until the next request is done, and an agent's report waits
        # for its write while thousands of others do (5 KiB each, at 5,000 agents 25 MiB).
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    def _pending(self, pending: Pending) -> web.Response:
        return web.json_response(pending.wire(), status=202, headers={"Retry-After": RETRY_AFTER})

    async def report(self, request: web.Request) -> web.Response:
        record = await self._member(request)
        report = (await self._body(request, Report)).wire()
        if record.report is not None:
            if record.report == report:  # a retry of a report that was stored
                return web.json_response({"stored": True})
            raise Problem(409, "this member already reported")
        if record.identity is None:
            raise Problem(409, "provide identity before reporting")
        await self._store(record, self._status(record, record.identity, report))
        return web.json_response({"stored": True})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.document())

    async def healthz(self, request: web.Request) -> web.Response:
        ready = self._cache.synced.is_set()
        return web.json_response({"synced": ready}, status=200 if ready else 503)


async def serve(app: web.Application, host: str, port: int,
                tls: ssl.SSLContext) -> web.AppRunner:
    """Start serving `app` over TLS; the caller cleans the returned runner up."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await GatedTLSSite(runner, host, port, tls).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful when asked for port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            port: int = address[1]
            return port
    raise RuntimeError("the broker is not listening")


__all__: list[Any] = ["Broker", "Problem", "bound_port", "serve"]
