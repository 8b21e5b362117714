"""Which DNS domain a launch's members are named under (api.claims has the rule that binds it).

The launch's own `spec.domain` first: the tenant names its own cluster, and a domain no other
launch uses keeps every name a member may claim the launch's own. Else the provider's: the
names its machines really have (an ssh pool's configured domain, EC2's internal domain of the
region) or one of the product's own (the local provider's oneclick.local). Else none, and a
member's FQDN is its host name alone.

The broker (to refuse an identity), the context (for the agents' own check) and the bootstrap
(for the agent's default FQDN) all ask here, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from oneclick.api.launch import ClusterLaunchSpec


class NamesMembers(Protocol):
    @property
    def domain(self) -> str | None: ...


@dataclass(frozen=True)
class Domains:
    by_provider: Mapping[str, str | None] = field(default_factory=dict)
    default_provider: str = "local"

    @classmethod
    def of(cls, providers: Mapping[str, NamesMembers], default_provider: str) -> Domains:
        return cls({name: p.domain for name, p in providers.items()}, default_provider)

    def launch(self, spec: ClusterLaunchSpec | None, provider: str | None = None) -> str | None:
        """The domain of the launch with this spec (None: a launch not known, of `provider`)."""
        if spec is not None and spec.domain:
            return spec.domain
        own = spec.provider if spec is not None else provider
        return self.by_provider.get(own or self.default_provider)
