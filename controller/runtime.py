"""What every handler shares, made once at startup: the API client, the watch cache, the
providers, the broker and the token key."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from api.protocol import Bootstrap
from controller import metrics
from controller.broker import tokens
from controller.broker.runtime import RunningBroker, start_broker
from controller.cache import LaunchCache, MemberRecord, run_reflectors
from controller.providers import Provider, ProviderError, configured_providers
from controller.secrets import ensure_secret, read_secret
from controller.settings import Settings
from kits.kube import KubeClient

CLUSTER_PHASES = ("Pending", "Launching", "Contextualizing", "Ready", "Failed", "Expired",
                  "Terminating")
MEMBER_PHASES = ("Pending", "Launching", "Running", "Contextualizing", "Ready", "Failed",
                 "Terminating", "Terminated")


@dataclass
class Runtime:
    settings: Settings
    kube: KubeClient
    cache: LaunchCache
    providers: dict[str, Provider]
    token_key: bytes
    broker: RunningBroker
    reflectors: asyncio.Task[None]
    launching: set[str] = field(default_factory=set)  # member uids with a launch in flight
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        kube = KubeClient()
        cache = LaunchCache()
        reflectors = asyncio.create_task(run_reflectors(kube, cache), name="watch-cache")
        providers = configured_providers(
            settings, lambda name: read_secret(kube, settings.namespace, name))
        key = await ensure_secret(kube, settings.namespace, settings.token_key_secret,
                                  lambda: {"key": tokens.new_token_key()})
        names = tuple(dict.fromkeys(
            [*settings.broker_names, *(p.broker_host for p in providers.values())]))
        broker = await start_broker(kube, settings, cache, names)
        await cache.synced.wait()
        runtime = cls(settings, kube, cache, providers, key["key"], broker, reflectors)
        runtime.spawn(runtime._refresh_gauges())
        return runtime

    async def _refresh_gauges(self, every: float = 1.0) -> None:
        """Clusters by phase and members by state, from the cache (no API calls)."""
        while True:
            clusters = Counter(str((r.obj.get("status") or {}).get("phase") or "Pending")
                               for r in self.cache.launches.values())
            members = Counter(str(r.status.get("phase") or "Pending")
                              for r in self.cache.members.values())
            for gauge, counts, known in ((metrics.CLUSTERS, clusters, CLUSTER_PHASES),
                                         (metrics.MEMBERS, members, MEMBER_PHASES)):
                for label in {*known, *counts}:
                    gauge.labels(label).set(counts.get(label, 0))
            await asyncio.sleep(every)

    async def stop(self) -> None:
        for task in [*self.tasks, self.reflectors]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.stop()
        await self.kube.aclose()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run in the background, kept referenced until done."""
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def provider(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            raise ProviderError(f"no provider named {name!r} is configured (configured: "
                                f"{', '.join(sorted(self.providers))})", permanent=True) from None

    def bootstrap(self, member: MemberRecord, provider: Provider) -> Bootstrap:
        """The member's bootstrap: its token is derived again, never read from storage."""
        return Bootstrap(
            broker_url=self.settings.broker_url_for(provider.broker_host, self.broker.port),
            ca_cert=self.broker.ca_pem, namespace=member.namespace, cluster=member.cluster,
            member=member.name, token=tokens.token_for(self.token_key, member.uid),
        )
