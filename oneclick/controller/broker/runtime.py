"""The broker as a running service: CA, certificate and HTTPS server together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from oneclick.controller.broker.agent_file import AgentFile
from oneclick.controller.broker.domains import Domains
from oneclick.controller.broker.hearing import Hearing
from oneclick.controller.broker.limits import Limits
from oneclick.controller.broker.server import Broker, bound_port, serve
from oneclick.controller.broker.tls import load_or_create_ca, server_context
from oneclick.controller.cache import LaunchCache
from oneclick.controller.settings import Settings
from oneclick.kits.kube import JSON, KubeClient


@dataclass
class RunningBroker:
    port: int
    ca_pem: str
    _runner: web.AppRunner
    _broker: Broker
    hearing: Hearing  # when each member was last heard from (memory only)

    def agent_sha256(self) -> str | None:
        """The SHA-256 (hex) of the agent this broker serves, if it serves one now."""
        try:
            return self._broker.agent_file.current().sha256.hex()
        except LookupError:
            return None

    async def stop(self) -> None:
        self._broker.close()  # (the server waits for its handlers: the long polls end now)
        await self._runner.cleanup()


async def start_broker(kube: KubeClient, settings: Settings, cache: LaunchCache,
                       names: tuple[str, ...], domains: Domains | None = None,
                       owner: JSON | None = None) -> RunningBroker:
    """Serve the broker with a certificate for `names` (every address members may use);
    members' FQDNs live under their launch's domain (`domains`)."""
    ca = await load_or_create_ca(kube, settings.namespace, settings.broker_ca_secret, owner)
    tls = server_context(ca, names)
    broker = Broker(kube, cache, domains=domains, agent_file=AgentFile(
        Path(settings.agent_bundle) if settings.agent_bundle else None))
    runner = await serve(broker.app(), settings.broker_listen, settings.broker_port, tls,
                         Limits.of(settings))
    return RunningBroker(bound_port(runner), ca.cert_pem.decode(), runner, broker,
                         broker.hearing)
