"""What every handler shares, made once at startup: the API client, the watch cache, the
providers, the broker and the token key."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from oneclick.api.launch import LaunchPhase
from oneclick.api.member import MemberPhase
from oneclick.api.protocol import Bootstrap
from oneclick.controller import metrics
from oneclick.controller.broker import tokens
from oneclick.controller.broker.domains import Domains
from oneclick.controller.broker.runtime import RunningBroker, start_broker
from oneclick.controller.cache import LaunchCache, MemberRecord, run_reflectors
from oneclick.controller.providers import Provider, ProviderError, configured_providers
from oneclick.controller.providers.config import ProvidersFile
from oneclick.controller.reconcile.requeue import Wakeups
from oneclick.controller.secrets import ensure_secret, owner_reference, read_secret
from oneclick.controller.settings import Settings
from oneclick.kits.kube import KubeClient

logger = logging.getLogger(__name__)



@dataclass
class Runtime:
    settings: Settings
    kube: KubeClient
    cache: LaunchCache
    providers: dict[str, Provider]
    token_key: bytes
    broker: RunningBroker
    reflectors: asyncio.Task[None]
    wakeups: Wakeups
    launching: set[str] = field(default_factory=set)  # member uids with a launch in flight
    # member uid -> when its bootstrap was last handed over again (the broker moved)
    refreshing: dict[str, float] = field(default_factory=dict)
    cannot_refresh: set[str] = field(default_factory=set)  # providers warned about it once
    started: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC))
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def start(cls, settings: Settings,
                    providers_file: ProvidersFile | None = None) -> Runtime:
        """Everything the handlers share, from the settings and the providers file that
        `occ-controller` read once."""
        kube = KubeClient()
        cache = LaunchCache()
        reflectors = asyncio.create_task(run_reflectors(kube, cache), name="watch-cache")
        providers = configured_providers(
            settings, providers_file, lambda name: read_secret(kube, settings.namespace, name),
            kube)
        owner = await owner_reference(kube, settings.namespace, settings.owner_service_account)
        key = await ensure_secret(kube, settings.namespace, settings.token_key_secret,
                                  lambda: {"key": tokens.new_token_key()}, owner=owner)
        names = tuple(dict.fromkeys(
            [*settings.broker_names, *(p.broker_host for p in providers.values())]))
        broker = await start_broker(kube, settings, cache, names,
                                    Domains.of(providers, settings.default_provider), owner)
        if settings.broker_port == 0 and not settings.broker_url:
            logger.warning(
                "OCC_BROKER_PORT is 0: the broker listens on port %d, chosen now; a restart "
                "chooses another, and members launched before it are handed a new bootstrap "
                "only by providers that can (set OCC_BROKER_PORT or OCC_BROKER_URL to keep "
                "the address stable)", broker.port)
        await cache.synced.wait()
        runtime = cls(settings, kube, cache, providers, key["key"], broker, reflectors,
                      Wakeups(cache))
        runtime.spawn(runtime._refresh_gauges())
        return runtime

    async def _refresh_gauges(self, every: float = 1.0) -> None:
        """Clusters by phase and members by state, from the cache (no API calls)."""
        while True:
            clusters = Counter(str((r.obj.get("status") or {}).get("phase") or "Pending")
                               for r in self.cache.launches.values())
            members = Counter(str(r.status.get("phase") or "Pending")
                              for r in self.cache.members.values())
            for gauge, counts, known in ((metrics.CLUSTERS, clusters, list(LaunchPhase)),
                                         (metrics.MEMBERS, members, list(MemberPhase))):
                for label in {*known, *counts}:
                    gauge.labels(label).set(counts.get(label, 0))
            await asyncio.sleep(every)

    async def stop(self) -> None:
        for task in [*self.tasks, self.reflectors]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.stop()
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception:  # (one provider's trouble must not keep the others open)
                logger.exception("closing provider %s", provider.name)
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

    def unknown_provider(self, name: str | None) -> str | None:
        """Why a launch naming provider `name` (None: the default) can never run, if it
        cannot: no such provider is configured. Says which are."""
        chosen = name or self.settings.default_provider
        if chosen in self.providers:
            return None
        which = "" if name else " (the controller's default, OCC_DEFAULT_PROVIDER)"
        return (f"no provider named {chosen!r} is configured{which}; this controller's "
                f"providers: {', '.join(sorted(self.providers))} (name one in spec.provider)")

    def broker_url(self, provider: Provider) -> str:
        """Where the provider's instances reach the broker: OCC_BROKER_URL, else the
        provider's broker address and the configured port (stable across restarts)."""
        return self.settings.broker_url_for(provider.broker_host, self.broker.port)

    def bootstrap(self, member: MemberRecord, provider: Provider) -> Bootstrap:
        """The member's bootstrap: its token is derived again, never read from storage; the
        launch's domain, which its FQDN must be under, as the broker will check it."""
        launch = self.cache.launches.get(member.cluster_key)
        domains = Domains.of(self.providers, self.settings.default_provider)
        return Bootstrap(
            broker_url=self.broker_url(provider),
            ca_cert=self.broker.ca_pem, namespace=member.namespace, cluster=member.cluster,
            member=member.name, token=tokens.token_for(self.token_key, member.uid),
            domain=domains.launch(launch.spec if launch else None, provider.name),
            agent_sha256=self.broker.agent_sha256(),
        )
