"""What the broker's attack tests share: valid identities (real host keys), a member's request
headers, raw TLS connections from a chosen loopback address, and the controller's metrics."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlparse

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.broker.staging import StagedMember
from tests.controller_process import ControllerProcess

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def host_key() -> str:
    """A real SSH host public key, as an agent reads it from /etc/ssh."""
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


def identity(hostname: str, address: str, key: str | None = None) -> dict[str, Any]:
    return {"hostname": hostname, "fqdn": f"{hostname}.oneclick.local", "addresses": [address],
            "sshHostKeys": [key or host_key()]}


def headers(member: StagedMember, namespace: str, cluster: str,
            token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token if token is not None else member.token}",
            "OneClick-Member": f"{namespace}/{cluster}/{member.name}"}


_trust: dict[str, ssl.SSLContext] = {}


def trust(controller: ControllerProcess) -> ssl.SSLContext:
    """A client context trusting the broker's CA (read once: it outlives restarts)."""
    if controller.namespace not in _trust:
        _trust[controller.namespace] = controller.tls()
    return _trust[controller.namespace]


async def open_tls(controller: ControllerProcess, source: str = "127.0.0.1") -> Connection:
    """A TLS connection to the broker from `source` (any 127.x address is this machine)."""
    url = urlparse(controller.broker_url)
    return await asyncio.wait_for(asyncio.open_connection(
        url.hostname, url.port, ssl=trust(controller), server_hostname=url.hostname,
        local_addr=(source, 0)), 30)


async def refused(controller: ControllerProcess, source: str) -> bool:
    """Whether the broker closes a new connection from `source` before TLS is up."""
    try:
        _, writer = await open_tls(controller, source)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return True
    writer.close()
    return False


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server ends the connection within `within` seconds (reading what it says)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except (OSError, ssl.SSLError):
        pass  # a reset is an end too
    return True


def metric(controller: ControllerProcess, name: str, **labels: str) -> float:
    """One sample of the controller's Prometheus metrics (0 when it has none yet)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
                     if labels else "")
    for line in httpx.get(controller.metrics_url, timeout=10).text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return 0.0
