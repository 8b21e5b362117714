"""Whether a member's context is complete, and the context itself, from the watch cache.

A context is complete when every member it depends on has provided identity: the members of
each role it requires, and every member of the launch when /etc/hosts or host-based SSH is
managed (those list everyone). The expected members come from the spec (role quantities), not
from the LaunchMembers that happen to exist yet.

A cluster's view is built once from the cache, then kept up to date member by member as the
cache changes: who has provided identity (the peers, by role entry) and who is still missing.
All members of one role entry get the same context but for their own identity, so the shared
part is serialized once per role entry and kept until a role it needs changes; reports change
nothing here. At thousands of members, that is what keeps a context request cheap (rebuilding
the view on every change was half of the controller's CPU at 5,000 members).

Members waiting for their context wait on their role entry's completion, not on every change:
changes are coalesced (at most one check per COALESCE seconds, and only while someone waits),
so a thousand identities arriving do not wake a thousand waiters a thousand times each.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import time
from dataclasses import dataclass, field

from oneclick.api.launch import ClusterLaunchSpec, Role
from oneclick.api.protocol import Pending
from oneclick.controller.broker.data import (
    DataUnavailable as DataUnavailable,  # (the broker catches it)
)
from oneclick.controller.broker.data import LaunchData, read_data
from oneclick.controller.broker.domains import Domains
from oneclick.controller.cache import Key, LaunchCache, MemberRecord
from oneclick.kits.kube import JSON, KubeClient

WAITING_FOR_SHOWN = 10
COALESCE = 0.05
DATA_RECHECK = 2.0  # a view still missing data reads its Secrets and ConfigMaps again after


class LaunchGone(Exception):
    """The member's launch no longer exists (or is being deleted)."""


@dataclass
class _RoleView:
    """The context shared by every member of one role entry, while what it needs is unchanged."""

    pending: Pending | None
    shared_json: bytes = b""  # the Context's JSON object without "member", without braces


@dataclass
class _ClusterView:
    spec: ClusterLaunchSpec  # the launch spec the view was built for
    data: LaunchData
    needs: dict[str, set[str]]  # role entry -> the role entries whose identities it waits for
    peers: dict[str, dict[Key, JSON]]  # role entry -> member key -> Peer (wire), with identity
    missing: dict[str, set[int]]  # role entry -> indices expected but without identity
    roles: dict[str, _RoleView] = field(default_factory=dict)
    built: float = field(default_factory=time.monotonic)

    @property
    def data_missing(self) -> bool:
        return any(d not in self.data.values for e in self.spec.roles for d in e.requires.data)


def _entries_providing(spec: ClusterLaunchSpec, role: str) -> list[Role]:
    return [e for e in spec.roles if e.name == role or role in e.provides]


def _entry(spec: ClusterLaunchSpec, role: str) -> Role | None:
    return next((e for e in spec.roles if e.name == role), None)


def _peer(record: MemberRecord, entry: Role) -> JSON:
    return {"member": record.name, "role": entry.name, "index": record.index,
            "provides": [entry.name, *entry.provides], "identity": record.identity}


def _needs(spec: ClusterLaunchSpec) -> dict[str, set[str]]:
    """Whose identities each role entry waits for: everyone's when the context lists every
    member (for /etc/hosts, host-based SSH), else those of the roles it requires."""
    everyone = spec.hosts_file or spec.ssh_host_based
    names = {e.name for e in spec.roles}
    return {entry.name: set(names) if everyone else {
        e.name for role in entry.requires.roles for e in _entries_providing(spec, role)}
        for entry in spec.roles}


class ContextBuilder:
    """Answers "is my context complete, and what is it?" for members, from the cache."""

    def __init__(self, cache: LaunchCache, kube: KubeClient,
                 domains: Domains | None = None) -> None:
        self._cache, self._kube = cache, kube
        self._domains = domains or Domains()  # each agent checks its peers' FQDNs against it
        self._views: dict[Key, _ClusterView] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._waiters: dict[Key, dict[str, asyncio.Event]] = {}  # cluster -> role -> complete
        self._followers: dict[Key, list[asyncio.Event]] = {}  # cluster -> woken on any change
        self._changes: dict[Key, int] = {}  # cluster -> how many changes the cache has told
        self._dirty: set[Key] = set()
        self.closing = False  # the broker stops: long polls answer at once
        cache.listeners.append(self._changed)

    # -- following the cache --------------------------------------------------------------

    def _changed(self, cluster: Key, member: Key | None) -> None:
        """The cache changed: a member of `cluster` (`member`), or the launch itself (None)."""
        if cluster in self._cache.launches:
            self._changes[cluster] = self._changes.get(cluster, 0) + 1
        else:  # (gone: its followers hear so at their next look)
            self._changes.pop(cluster, None)
        view = self._views.get(cluster)
        if view is not None:
            if member is None:
                self._launch_changed(cluster, view)
            else:
                self._member_changed(view, member)
        self._check_soon(cluster)

    def _check_soon(self, cluster: Key) -> None:
        waited = cluster in self._waiters or cluster in self._followers
        if waited and cluster not in self._dirty:
            self._dirty.add(cluster)
            asyncio.get_running_loop().call_later(
                COALESCE, lambda: asyncio.ensure_future(self._refresh(cluster)))

    def _launch_changed(self, cluster: Key, view: _ClusterView) -> None:
        launch = self._cache.launches.get(cluster)
        if launch is None or launch.deleting or launch.spec != view.spec:
            self._views.pop(cluster, None)

    def _member_changed(self, view: _ClusterView, key: Key) -> None:
        record = self._cache.members.get(key)
        entry = _entry(view.spec, record.role) if record is not None else None
        peer = None
        if (record is not None and entry is not None and record.identity is not None
                and record.index < _quantity(view.spec, record.role)):
            peer = _peer(record, entry)
        before = next(((role, peers[key]) for role, peers in view.peers.items()
                       if key in peers), None)
        if before is not None and before[1] == peer:
            return  # a report, a phase: nothing any context shows
        if before is not None:
            role, old = before
            del view.peers[role][key]
            view.missing[role].add(old["index"])
            self._invalidate(view, role)
        if peer is not None:
            view.peers[peer["role"]][key] = peer
            view.missing[peer["role"]].discard(peer["index"])
            self._invalidate(view, peer["role"])

    @staticmethod
    def _invalidate(view: _ClusterView, changed: str) -> None:
        for role, needed in view.needs.items():
            if changed in needed:
                view.roles.pop(role, None)

    # -- waiting --------------------------------------------------------------------------

    async def _refresh(self, cluster: Key) -> None:
        """Check once for a batch of changes; wake the roles now complete."""
        self._dirty.discard(cluster)
        for follower in self._followers.pop(cluster, []):
            follower.set()  # it compares its context with the one it has
        waiting = self._waiters.get(cluster, {})
        try:
            view = await self._view(cluster)
        except (LaunchGone, DataUnavailable):
            complete = list(waiting)  # wake them all: they will hear why
        else:
            complete = [role for role in waiting if role not in view.needs
                        or self._role_view(cluster, view, role).pending is None]
        for role in complete:
            waiting.pop(role).set()
        if not waiting:
            self._waiters.pop(cluster, None)

    def close(self) -> None:
        """Wake every long poll, and hold none from now on: a broker that stops gracefully
        (a leader handing over) does not wait out the polls of thousands of agents."""
        self.closing = True
        for waiting in self._waiters.values():
            for event in waiting.values():
                event.set()
        for followers in self._followers.values():
            for event in followers:
                event.set()
        self._waiters.clear()
        self._followers.clear()

    async def wait_complete(self, member: MemberRecord, seconds: float) -> None:
        """Return when the member's role entry may be complete, or after `seconds`."""
        if self.closing:
            return
        event = self._waiters.setdefault(member.cluster_key, {}).setdefault(
            member.role, asyncio.Event())
        self._check_soon(member.cluster_key)  # (it may have completed before we registered)
        view = self._views.get(member.cluster_key)
        if view is not None and view.data_missing:  # no watch tells when data appears
            seconds = min(seconds, DATA_RECHECK)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    def changes(self, cluster: Key) -> int:
        """A counter of the launch's changes: pass it to `wait_changed`."""
        return self._changes.get(cluster, 0)

    async def wait_changed(self, member: MemberRecord, seconds: float, seen: int) -> None:
        """Return after the launch changed since `changes()` said `seen` (coalesced), or
        after `seconds`."""
        if self.closing or self.changes(member.cluster_key) != seen:
            return
        event = asyncio.Event()
        self._followers.setdefault(member.cluster_key, []).append(event)
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            followers = self._followers.get(member.cluster_key, [])
            with contextlib.suppress(ValueError):
                followers.remove(event)
            if not followers:
                self._followers.pop(member.cluster_key, None)

    # -- answering ------------------------------------------------------------------------

    async def context_json(self, member: MemberRecord) -> bytes | Pending:
        """The member's complete context as JSON, or what it still waits for."""
        view = await self._view(member.cluster_key)
        if member.role not in view.needs:
            raise LaunchGone(f"launch {member.cluster} has no role {member.role} any more")
        role_view = self._role_view(member.cluster_key, view, member.role)
        if role_view.pending is not None:
            return role_view.pending
        me = view.peers[member.role].get((member.namespace, member.name))
        if me is None:
            if member.index >= _quantity(view.spec, member.role):  # scaled down
                raise LaunchGone(f"member {member.name} is no longer part of launch "
                                 f"{member.cluster}")
            return Pending(waiting_for=[member.name], missing=1)  # its own identity first
        return b'{"member":' + json.dumps(me).encode() + b"," + role_view.shared_json + b"}"

    async def _view(self, cluster: Key) -> _ClusterView:
        view = self._views.get(cluster)
        if view is not None and not self._stale(view):
            return view
        async with self._locks.setdefault(cluster, asyncio.Lock()):
            view = self._views.get(cluster)
            if view is None or self._stale(view):
                view = await self._build(cluster)
                self._views[cluster] = view
            return view

    @staticmethod
    def _stale(view: _ClusterView) -> bool:
        return view.data_missing and time.monotonic() - view.built > DATA_RECHECK

    async def _build(self, cluster: Key) -> _ClusterView:
        launch = self._cache.launches.get(cluster)
        if launch is None or launch.deleting:
            self._views.pop(cluster, None)
            raise LaunchGone(f"launch {cluster[1]} no longer exists")
        data = await read_data(self._kube, launch.namespace, launch.spec, launch.uid)
        # From here on nothing awaits: the view is the cache as it is now, and the cache's
        # listener keeps it so.
        spec = launch.spec
        view = _ClusterView(spec, data, _needs(spec), {}, {})
        for entry in spec.roles:
            role = entry.name
            view.peers[role], view.missing[role] = {}, set()
            for index in range(entry.quantity):
                record = self._cache.member_at(cluster, role, index)
                if record is None or record.identity is None:
                    view.missing[role].add(index)
                else:
                    view.peers[role][(record.namespace, record.name)] = _peer(record, entry)
        return view

    def _role_view(self, cluster: Key, view: _ClusterView, role: str) -> _RoleView:
        """One role entry's context, made when first asked after what it needs changed."""
        known = view.roles.get(role)
        if known is not None:
            return known
        spec, entry = view.spec, _entry(view.spec, role)
        required = entry.requires.roles if entry is not None else []
        needed = sorted(view.needs[role])
        missing = sum(len(view.missing[name]) for name in needed)
        wanted_data = entry.requires.data if entry is not None else []
        data_missing = [f"data:{d}" for d in wanted_data if d not in view.data.values]
        if missing or data_missing:
            shown = [f"{cluster[1]}-{name}-{index}" for name in needed
                     for index in heapq.nsmallest(WAITING_FOR_SHOWN, view.missing[name])]
            waiting = shown[:WAITING_FOR_SHOWN] + data_missing
            reasons = [view.data.problems[d].message for d in wanted_data
                       if d in view.data.problems]
            result = _RoleView(Pending(waiting_for=waiting[:WAITING_FOR_SHOWN],
                                       missing=missing + len(data_missing),
                                       reasons=reasons[:WAITING_FOR_SHOWN]))
        else:
            def peers(names: list[str]) -> list[JSON]:  # in spec order, then by index
                return [p for name in names
                        for p in sorted(view.peers[name].values(), key=lambda p: p["index"])]

            shared: JSON = {
                "cluster": cluster[1],
                "requiredRoles": {
                    role: peers([e.name for e in _entries_providing(spec, role)])
                    for role in required
                },
                "members": peers([e.name for e in spec.roles if e.name in view.needs[role]]),
                "data": {d: view.data.values[d] for d in wanted_data},
                "sshAuthorizedKeys": spec.ssh_authorized_keys,
                "hostsFile": spec.hosts_file,
                "sshHostBased": spec.ssh_host_based,
            }
            domain = self._domains.launch(spec)
            if domain is not None:
                shared["domain"] = domain
            result = _RoleView(None, json.dumps(shared).encode()[1:-1])
        view.roles[role] = result
        return result


def _quantity(spec: ClusterLaunchSpec, role: str) -> int:
    entry = _entry(spec, role)
    return entry.quantity if entry is not None else 0
