"""The context checked as a whole before anything is written from it.

Parsing the context (api.protocol) already checked each field as the broker does: host names,
FQDNs, addresses, host keys, role and data names. This checks it again, and what only the whole
context shows: every member appears with one identity, each FQDN is its host name alone or
under the launch's domain, and no member takes another's name or address (api.claims). It
guards against a broker that was compromised, or that stored identities before it checked
them: the agent then writes nothing and reports the problem.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import ValidationError

from oneclick.api import errors
from oneclick.api.claims import Claim, Claims, outside_domain
from oneclick.api.protocol import Context, Identity, Peer


class ContextRefused(ValueError):
    """The context is not safe to write; the message names the member and the field."""


def _peers(context: Context) -> Iterator[tuple[str, Peer]]:
    yield "member", context.member
    for role, peers in context.required_roles.items():
        for i, peer in enumerate(peers):
            yield f"requiredRoles.{role}[{i}]", peer
    for i, peer in enumerate(context.members):
        yield f"members[{i}]", peer


def check(context: Context) -> None:
    """Raise ContextRefused unless every member in the context is what a member may be."""
    document = context.model_dump(by_alias=True)
    try:  # again, whichever way the context was made
        Context.model_validate(document)
    except ValidationError as error:
        raise ContextRefused("the context is not acceptable: "
                             + errors.describe(error, document)) from None
    identities: dict[str, Identity] = {}
    for where, peer in _peers(context):
        seen = identities.setdefault(peer.member, peer.identity)
        if seen != peer.identity:
            raise ContextRefused(f"{where}: member {peer.member} appears with two identities")
    claims = Claims()
    for member, identity in identities.items():
        claim = Claim.of(identity.hostname, identity.fqdn, identity.addresses)
        problem = outside_domain(claim, context.domain) or claims.conflict(member, claim)
        if problem is not None:
            raise ContextRefused(f"member {member}: {problem}")
        claims.hold(member, claim)
