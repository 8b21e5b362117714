"""Who is asking: the member a broker request speaks for, from its bootstrap token alone
(looked up by its hash, compared in constant time), the protocol it speaks and the member it
names; and whether that token still opens anything (it dies with the member's instance)."""

from __future__ import annotations

from aiohttp import web

from oneclick import __version__
from oneclick.api import errors
from oneclick.api.launch import FailurePolicy, LaunchPhase
from oneclick.api.member import MemberPhase
from oneclick.api.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION
from oneclick.controller.broker import tokens
from oneclick.controller.broker.hearing import Hearing
from oneclick.controller.broker.problem import RETRY_AFTER, Problem
from oneclick.controller.cache import LaunchCache, LaunchRecord, MemberRecord

MEMBER_HEADER = "OneClick-Member"


class Authenticator:
    def __init__(self, cache: LaunchCache, hearing: Hearing) -> None:
        self._cache, self._hearing = cache, hearing

    def member(self, request: web.Request) -> MemberRecord:
        """The member the request speaks for, once its token, its protocol and the member it
        names all check out; else a Problem that says which did not."""
        spoken = request.headers.get(PROTOCOL_HEADER, str(PROTOCOL_VERSION))
        if spoken != str(PROTOCOL_VERSION):
            agent = request.headers.get("User-Agent", "an agent")
            raise Problem(400, f"this broker (oneclick {__version__}) speaks protocol "
                               f"{PROTOCOL_VERSION}; {errors.quoted(agent)} speaks protocol "
                               f"{errors.quoted(spoken)}: run an agent of the controller's "
                               "version")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "a bootstrap token is required (Authorization: Bearer ...)",
                          {"WWW-Authenticate": "Bearer"})
        if not self._cache.synced.is_set():
            raise Problem(503, "the broker is starting; retry", {"Retry-After": RETRY_AFTER})
        token = token.strip()
        record = self._cache.member_by_token_hash(tokens.token_hash(token))
        if record is None or record.token_hash is None or not tokens.matches(
                token, record.token_hash):
            raise Problem(401, "unknown or revoked bootstrap token",
                          {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        self.refuse_revoked(record)
        claimed = request.headers.get(MEMBER_HEADER, "")
        namespace, cluster, member = [*claimed.split("/"), "", ""][:3]
        if not claimed:
            raise Problem(400, f"the {MEMBER_HEADER} header (namespace/cluster/member) is "
                               "required")
        if (namespace, cluster) != record.cluster_key:
            raise Problem(403, f"this token is not valid for cluster {namespace}/{cluster}")
        if member != record.name:
            raise Problem(403, f"this token is not valid for member {member}")
        self._hearing.heard(record.uid)
        return record

    def refuse_revoked(self, record: MemberRecord) -> None:
        """A token dies with its member's instance: once the member is terminating or gone,
        or its launch is (deleted, expired, failed and backed out)."""
        why = revoked(record, self._cache.launches.get(record.cluster_key))
        if why is not None:
            raise _revoked(why)

    def current(self, record: MemberRecord) -> MemberRecord:
        """The member as the cache knows it now (after an await), its token still valid."""
        current = self._cache.members.get((record.namespace, record.name))
        if current is None or current.token_hash != record.token_hash:
            raise _revoked(f"member {record.name} no longer exists")
        self.refuse_revoked(current)
        return current


def _revoked(why: str) -> Problem:
    return Problem(401, f"this bootstrap token is revoked: {why}",
                   {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def revoked(member: MemberRecord, launch: LaunchRecord | None) -> str | None:
    """Why the member's token no longer opens anything, or None while it does. A member that
    reported keeps reading its context while its launch lives (a re-run after a scale-up)."""
    if member.deleting:
        return f"member {member.name} is being deleted"
    if member.status.get("phase") == MemberPhase.TERMINATED:
        return f"member {member.name} was terminated"
    if launch is None or launch.deleting:
        return f"launch {member.cluster} is gone"
    phase = (launch.obj.get("status") or {}).get("phase")
    if phase == LaunchPhase.EXPIRED:
        return f"launch {member.cluster} expired"
    if phase == LaunchPhase.FAILED and launch.spec.on_failure != FailurePolicy.KEEP:
        return f"launch {member.cluster} failed and its instances were terminated"
    return None
