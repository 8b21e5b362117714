"""A thin async client for the Kubernetes API: the few verbs the controller and broker use.

kopf drives the reconcilers; this client serves the rest (the broker's status writes, its
watch cache, Secrets). Credentials come from the `kubernetes` package's own loaders, so every
kubeconfig it understands works, and in-cluster service accounts too.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

JSON = dict[str, Any]
_SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
CONNECTIONS = 64  # kept-alive connections to the API server, and requests in flight


class ApiError(RuntimeError):
    """The API server answered with an error status (0: it could not be reached). Catch the
    kind that matters: NotFound, Conflict, Invalid, Forbidden, Unreachable."""

    def __init__(self, status: int, body: str, what: str) -> None:
        self.status = status
        try:
            self.reason = json.loads(body).get("message", body)
        except ValueError:
            self.reason = body
        super().__init__(f"{what}: {status} {self.reason}")

    @staticmethod
    def of(status: int, body: str, what: str) -> ApiError:
        """The typed error for `status`."""
        kind = {404: NotFound, 409: Conflict, 400: Invalid, 422: Invalid, 401: Forbidden,
                403: Forbidden, 0: Unreachable}.get(status, ApiError)
        return kind(status, body, what)


class NotFound(ApiError):
    """404: no such object (or collection)."""


class Conflict(ApiError):
    """409: it exists already, or it changed since it was read."""


class Invalid(ApiError):
    """400 or 422: what was sent can never be stored as it is."""


class Forbidden(ApiError):
    """401 or 403: these credentials may not do this."""


class Unreachable(ApiError):
    """The API server did not answer (status 0)."""


def _configuration(kubeconfig: Path | None, context: str | None) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    if kubeconfig is None and Path(_SERVICE_ACCOUNT, "token").exists():
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context,
            client_configuration=configuration,
        )
    return configuration


def _context_namespace(kubeconfig: Path | None, context: str | None) -> str:
    """The namespace the kubeconfig's context names (as kubectl uses it), else default."""
    if kubeconfig is None and Path(_SERVICE_ACCOUNT, "namespace").exists():
        return Path(_SERVICE_ACCOUNT, "namespace").read_text().strip()
    try:
        contexts, active = k8s_config.list_kube_config_contexts(
            config_file=str(kubeconfig) if kubeconfig else None)
    except (k8s_config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def segment(value: str) -> str:
    """One segment of an API path, escaped: a name can never reach another path (`/`, `%`,
    `?` are escaped; `.` and `..`, which clients and servers normalise away, are refused)."""
    if value in ("", ".", ".."):
        raise ValueError(f"{value!r} cannot be a segment of an API path")
    return quote(value, safe="")


# An apply patch is read as YAML, which refuses JSON's surrogate-pair escapes: a character
# beyond the BMP (an emoji in a log tail) goes as YAML's own 8-digit escape instead.
_SURROGATES = re.compile(r"(\\\\)|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _encode(body: Any, content_type: str) -> bytes:
    text = json.dumps(body)
    if content_type == APPLY:
        text = _SURROGATES.sub(_yaml_escape, text)
    return text.encode()


def _yaml_escape(match: re.Match[str]) -> str:
    if match.group(1):  # an escaped backslash stays as it is
        return match.group(1)
    high, low = int(match.group(2), 16), int(match.group(3), 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"


def resource_path(api_version: str, plural: str, namespace: str | None = None,
                  name: str | None = None, subresource: str | None = None) -> str:
    """The URL path of any resource (`api_version` "v1" for the core group, else
    "group/version"): of a namespace, or cluster-wide when `namespace` is None; all of them,
    or the one named (and its subresource)."""
    path = "/api/v1" if api_version == "v1" else "/apis/" + "/".join(
        segment(part) for part in api_version.split("/"))
    if namespace is not None:
        path += f"/namespaces/{segment(namespace)}"
    path += f"/{segment(plural)}"
    if name is not None:
        path += f"/{segment(name)}"
    return path if subresource is None else f"{path}/{segment(subresource)}"


def core_path(plural: str, namespace: str, name: str | None = None) -> str:
    """The URL path of a core (v1) resource of a namespace: all of them, or the one named."""
    return resource_path("v1", plural, namespace, name)


class KubeClient:
    """Kept-alive HTTPS connections to the API server for the lifetime of a process: a pool
    for requests, and one connection per watch."""

    def __init__(
        self,
        kubeconfig: Path | None = None,
        context: str | None = None,
        impersonate: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        configuration = _configuration(kubeconfig, context)
        self.namespace = _context_namespace(kubeconfig, context)
        tls = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if not configuration.verify_ssl:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            tls.load_cert_chain(configuration.cert_file, configuration.key_file)
        headers = {"Accept": "application/json"}
        token = configuration.api_key.get("authorization") or configuration.api_key.get(
            "BearerToken")
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        if impersonate:
            headers["Impersonate-User"] = impersonate
        self.host = configuration.host
        self._tls, self._headers, self._timeout = tls, headers, timeout
        # Requests through aiohttp (its HTTP parser is C: at thousands of status writes, the
        # client's own CPU is what the controller spends most on), every connection kept
        # alive; made on first use, inside the event loop it serves.
        self._session: aiohttp.ClientSession | None = None
        # Requests beyond the pool's connections wait here, holding only their body: aiohttp
        # would build each one's request objects first and queue those (at 5,000 agents'
        # identities at once, ~9 KiB each).
        self._in_flight = asyncio.Semaphore(CONNECTIONS)
        # Watches through httpx on HTTP/1.1, a connection each, read line by line at any
        # length.
        self._watches = httpx.AsyncClient(
            base_url=configuration.host, verify=tls, headers=headers,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._watches.aclose()

    async def _send(self, method: str, path: str, *, content: bytes | None = None,
                    headers: dict[str, str] | None = None,
                    params: dict[str, str] | None = None) -> str:
        """The answer's body; ApiError for an error status, or for no answer (status 0)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(ssl=self._tls, limit=CONNECTIONS),
                # The time a request may wait for one of the pool's connections is not
                # limited (in a burst of thousands, waiting is normal): only connecting and
                # each read are.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0,
                                              sock_read=self._timeout))
        try:
            async with self._in_flight, self._session.request(
                    method, self.host + path, data=content, headers=headers,
                    params=params) as response:
                status, text = response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError.of(0, f"cannot reach the API server at {self.host}: "
                              f"{error or type(error).__name__}", f"{method} {path}") from error
        if status >= 400:
            raise ApiError.of(status, text, f"{method} {path}")
        return text

    async def request(self, method: str, path: str, *, body: Any = None,
                      content_type: str = "application/json",
                      params: dict[str, str] | None = None) -> JSON:
        content = None if body is None else _encode(body, content_type)
        headers = {"Content-Type": content_type} if content is not None else {}
        result: JSON = json.loads(await self._send(method, path, content=content,
                                                   headers=headers, params=params))
        return result

    async def get(self, path: str) -> JSON:
        return await self.request("GET", path)

    async def table(self, path: str, **params: str) -> JSON:
        """The API server's own table of the objects (the printer columns kubectl shows)."""
        result: JSON = json.loads(await self._send("GET", path, params=params, headers={
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}))
        return result

    async def text(self, path: str) -> str:
        """A non-JSON endpoint (the API server's /metrics, say)."""
        return await self._send("GET", path, headers={"Accept": "text/plain"})

    async def list(self, path: str, **params: str) -> JSON:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, body: JSON) -> JSON:
        return await self.request("PATCH", path, body=body, content_type=MERGE)

    async def json_patch(self, path: str, operations: Sequence[JSON]) -> JSON:
        """RFC 6902 operations; a failed `test` operation is a 422 and changes nothing."""
        return await self.request("PATCH", path, body=list(operations), content_type=JSON_PATCH)

    async def apply(self, path: str, body: JSON, manager: str) -> JSON:
        """Server-side apply: each writer owns only the fields (and condition types) it sets."""
        return await self.request("PATCH", path, body=body, content_type=APPLY,
                                  params={"fieldManager": manager, "force": "true"})

    async def delete(self, path: str) -> JSON:
        return await self.request("DELETE", path)

    async def watch(self, path: str, resource_version: str, timeout_seconds: int = 300,
                    params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None) -> AsyncIterator[JSON]:
        """Events of one watch request, until the server ends it (`params`: selectors, say;
        `headers`: an Accept of tables, as kubectl get -w asks)."""
        query = urlencode({**(params or {}), "watch": "true",
                           "resourceVersion": resource_version,
                           "allowWatchBookmarks": "true", "timeoutSeconds": timeout_seconds})
        async with self._watches.stream(
            "GET", f"{path}?{query}", headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout_seconds + 30, connect=10.0)
        ) as response:
            if response.status_code >= 400:
                raise ApiError.of(response.status_code, (await response.aread()).decode(),
                               f"watch {path}")
            async for line in response.aiter_lines():
                if line:
                    yield json.loads(line)
