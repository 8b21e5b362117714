"""Which member of a launch claims which host name and address: one rule, kept by the broker
(who refuses a member that would shadow another) and checked again by every agent.

Host names and FQDNs share one space, compared without case: each belongs to one member. A
member's first address (the one /etc/hosts lists) is its own too: no other member may list it
at all, nor list as its first address one that another member lists. Further addresses may be
shared (the same bridge address, 172.17.0.1 say, exists on every member made from one image);
the agent leaves shared ones out of the files it writes.

A member's FQDN is its host name, alone or under its launch's domain (exactly one label under
it): a member cannot name itself github.com, nor head-0.other.domain, nor x.y.<domain>, so the
names its peers resolve to it are all of the launch's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Claim:
    """What one member claims: its names (lower case) and its addresses, first one first."""

    hostname: str
    fqdn: str
    addresses: tuple[str, ...]

    @classmethod
    def of(cls, hostname: str, fqdn: str, addresses: Sequence[str]) -> Claim:
        return cls(hostname.lower(), fqdn.lower(), tuple(addresses))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.hostname, self.fqdn)


def outside_domain(claim: Claim, domain: str | None) -> str | None:
    """Why the claim's FQDN is not the launch's to give, naming the field; None when it is:
    the host name itself, or the host name under the launch's domain."""
    under = f"{claim.hostname}.{domain.lower()}" if domain else None
    if claim.fqdn in (claim.hostname, under):
        return None
    if under is None:
        return (f"fqdn: must be the host name {claim.hostname} (the launch has no domain to "
                "name its members under)")
    return (f"fqdn: must be {under} or the host name {claim.hostname} (the launch's domain "
            f"is {domain})")


@dataclass
class Claims:
    """The claims of one launch's members, indexed by name and by address."""

    names: dict[str, str] = field(default_factory=dict)  # name -> member
    first: dict[str, str] = field(default_factory=dict)  # first address -> member
    anywhere: dict[str, set[str]] = field(default_factory=dict)  # address -> members
    held: dict[str, Claim] = field(default_factory=dict)  # member -> its claim

    def conflict(self, member: str, claim: Claim) -> str | None:
        """What `member` claiming `claim` would take from another member, in words naming the
        field; None when nothing."""
        for field_name, name in (("hostname", claim.hostname), ("fqdn", claim.fqdn)):
            owner = self.names.get(name)
            if owner is not None and owner != member:
                return f"{field_name}: {name} is already a name of member {owner}"
        for i, address in enumerate(claim.addresses):
            owner = self.first.get(address)
            if owner is not None and owner != member:
                return f"addresses[{i}]: {address} is already the address of member {owner}"
        if claim.addresses:
            others = sorted(self.anywhere.get(claim.addresses[0], set()) - {member})
            if others:
                return (f"addresses[0]: {claim.addresses[0]} is already an address of member "
                        f"{others[0]}")
        return None

    def release(self, member: str) -> None:
        old = self.held.pop(member, None)
        if old is None:
            return
        for name in old.names:
            if self.names.get(name) == member:
                del self.names[name]
        if old.addresses and self.first.get(old.addresses[0]) == member:
            del self.first[old.addresses[0]]
        for address in old.addresses:
            holders = self.anywhere.get(address)
            if holders is not None:
                holders.discard(member)
                if not holders:
                    del self.anywhere[address]

    def hold(self, member: str, claim: Claim) -> None:
        """Record `member`'s claim in place of its earlier one (whether or not it conflicts:
        the index mirrors what is stored)."""
        self.release(member)
        self.held[member] = claim
        for name in claim.names:
            self.names.setdefault(name, member)
        if claim.addresses:
            self.first.setdefault(claim.addresses[0], member)
        for address in claim.addresses:
            self.anywhere.setdefault(address, set()).add(member)

    def shared(self, address: str) -> bool:
        """Whether several members list this address."""
        return len(self.anywhere.get(address, ())) > 1
