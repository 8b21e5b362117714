"""The broker as a running service: CA, certificate, watch cache and HTTPS server together."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiohttp import web

from controller.broker.cache import LaunchCache, run_reflectors
from controller.broker.server import Broker, bound_port, serve
from controller.broker.tls import load_or_create_ca, server_context
from controller.kube import KubeClient
from controller.settings import Settings


@dataclass
class RunningBroker:
    url: str
    ca_pem: str
    cache: LaunchCache
    _runner: web.AppRunner
    _reflectors: asyncio.Task[None]

    async def stop(self) -> None:
        self._reflectors.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reflectors
        await self._runner.cleanup()


async def start_broker(kube: KubeClient, settings: Settings) -> RunningBroker:
    ca = await load_or_create_ca(kube, settings.namespace, settings.broker_ca_secret)
    tls = server_context(ca, tuple(settings.broker_names))
    cache = LaunchCache()
    reflectors = asyncio.create_task(run_reflectors(kube, cache), name="broker-cache")
    runner = await serve(Broker(kube, cache).app(), settings.broker_listen,
                         settings.broker_port, tls)
    port = bound_port(runner)
    return RunningBroker(settings.broker_url_for(port), ca.cert_pem.decode(), cache, runner,
                         reflectors)
