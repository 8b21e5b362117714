"""The broker as a running service: CA, certificate and HTTPS server together."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from controller.broker.server import Broker, bound_port, serve
from controller.broker.tls import load_or_create_ca, server_context
from controller.cache import LaunchCache
from controller.settings import Settings
from kits.kube import KubeClient


@dataclass
class RunningBroker:
    port: int
    ca_pem: str
    _runner: web.AppRunner

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_broker(kube: KubeClient, settings: Settings, cache: LaunchCache,
                       names: tuple[str, ...]) -> RunningBroker:
    """Serve the broker with a certificate for `names` (every address members may use)."""
    ca = await load_or_create_ca(kube, settings.namespace, settings.broker_ca_secret)
    tls = server_context(ca, names)
    runner = await serve(Broker(kube, cache).app(), settings.broker_listen,
                         settings.broker_port, tls)
    return RunningBroker(bound_port(runner), ca.cert_pem.decode(), runner)
