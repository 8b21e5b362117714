"""A member may not take another member's name or address, nor a name outside its launch's
domain (api.claims has the rules; controller.broker.domains says which domain).

The broker keeps each launch's claims indexed, built from the watch cache the first time one of
its members provides identity and kept current by the cache's change notices, so checking an
identity costs the same at 5 members as at 5,000.
"""

from __future__ import annotations

from oneclick.api.claims import Claim, Claims, outside_domain
from oneclick.controller.broker.domains import Domains
from oneclick.controller.cache import Key, LaunchCache, MemberRecord
from oneclick.kits.kube import JSON


def claim_of(identity: JSON) -> Claim:
    return Claim.of(identity["hostname"], identity["fqdn"], identity["addresses"])


def conflicts(identity: JSON, member: str, claims: Claims) -> str | None:
    """What `identity` would take from another member of the launch, naming the field."""
    return claims.conflict(member, claim_of(identity))


class LaunchClaims:
    """The claims of every launch whose members have been checked, from the cache."""

    def __init__(self, cache: LaunchCache, domains: Domains | None = None) -> None:
        self._cache = cache
        self._domains = domains or Domains()
        self._launches: dict[Key, Claims] = {}
        cache.listeners.append(self._changed)

    def _changed(self, cluster: Key, member: Key | None) -> None:
        claims = self._launches.get(cluster)
        if claims is None:
            return
        if member is None:
            if cluster not in self._cache.launches:
                del self._launches[cluster]
            return
        record = self._cache.members.get(member)
        if record is None or record.cluster_key != cluster or record.identity is None:
            claims.release(member[1])
        else:
            claims.hold(record.name, claim_of(record.identity))

    def _of(self, cluster: Key) -> Claims:
        claims = self._launches.get(cluster)
        if claims is None:
            claims = self._launches[cluster] = Claims()
            for record in self._cache.members_of(cluster):
                if record.identity is not None:
                    claims.hold(record.name, claim_of(record.identity))
        return claims

    def conflict(self, record: MemberRecord, identity: JSON) -> str | None:
        """Check `record`'s new identity against its launch's domain and the other members'
        claims, naming the field; when clear, hold its claim at once (two members racing for
        one name: the second is refused before the first is stored)."""
        launch = self._cache.launches.get(record.cluster_key)
        problem = outside_domain(claim_of(identity),
                                 self._domains.launch(launch.spec if launch else None))
        if problem is not None:
            return problem
        claims = self._of(record.cluster_key)
        problem = conflicts(identity, record.name, claims)
        if problem is None:
            claims.hold(record.name, claim_of(identity))
        return problem
