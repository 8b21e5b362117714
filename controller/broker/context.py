"""Whether a member's context is complete, and the context itself, from the watch cache.

A context is complete when every member it depends on has provided identity: the members of
each role it requires, and every member of the launch when /etc/hosts or host-based SSH is
managed (those list everyone). The expected members come from the spec (role quantities), not
from the LaunchMembers that happen to exist yet.

All members of one role entry get the same context but for their own identity, so the shared
part is computed and serialized once per role entry and cluster version, then reused: at
thousands of members, that is what keeps a context request cheap.

Members waiting for their context wait on their role entry's completion, not on every change:
changes are coalesced (at most one rebuild of a cluster's view per COALESCE seconds, and only
while someone waits), so a thousand identities arriving do not wake a thousand waiters a
thousand times each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field

from api.protocol import Pending
from controller.cache import Key, LaunchCache, LaunchRecord, MemberRecord
from kits.kube import JSON, ApiError, KubeClient, core_path

WAITING_FOR_SHOWN = 10
COALESCE = 0.05


class LaunchGone(Exception):
    """The member's launch no longer exists (or is being deleted)."""


class DataUnavailable(Exception):
    """A data item's Secret or ConfigMap cannot be read; the message says which."""


@dataclass
class _RoleView:
    """The context shared by every member of one role entry, at one cluster version."""

    pending: Pending | None
    shared_json: bytes = b""  # the Context's JSON object without "member", without braces


@dataclass
class _ClusterView:
    version: int
    peers: dict[Key, JSON] = field(default_factory=dict)  # member key -> Peer (wire)
    roles: dict[str, _RoleView] = field(default_factory=dict)


def _entries_providing(spec: JSON, role: str) -> list[JSON]:
    return [e for e in spec["roles"] if e["name"] == role or role in e.get("provides", [])]


def _peer(record: MemberRecord, entry: JSON) -> JSON:
    return {"member": record.name, "role": entry["name"], "index": record.index,
            "provides": [entry["name"], *entry.get("provides", [])],
            "identity": record.identity}


class ContextBuilder:
    """Answers "is my context complete, and what is it?" for members, from the cache."""

    def __init__(self, cache: LaunchCache, kube: KubeClient) -> None:
        self._cache, self._kube = cache, kube
        self._views: dict[Key, _ClusterView] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._waiters: dict[Key, dict[str, asyncio.Event]] = {}  # cluster -> role -> complete
        self._dirty: set[Key] = set()
        cache.listeners.append(self._changed)

    def _changed(self, cluster: Key) -> None:
        if cluster in self._waiters and cluster not in self._dirty:
            self._dirty.add(cluster)
            asyncio.get_running_loop().call_later(
                COALESCE, lambda: asyncio.ensure_future(self._refresh(cluster)))

    async def _refresh(self, cluster: Key) -> None:
        """Rebuild the view once for a batch of changes; wake the roles now complete."""
        self._dirty.discard(cluster)
        waiting = self._waiters.get(cluster, {})
        try:
            view = await self._view(cluster)
        except (LaunchGone, DataUnavailable):
            complete = list(waiting)  # wake them all: they will hear why
        else:
            complete = [role for role in waiting
                        if role not in view.roles or view.roles[role].pending is None]
        for role in complete:
            waiting.pop(role).set()
        if not waiting:
            self._waiters.pop(cluster, None)

    async def wait_complete(self, member: MemberRecord, seconds: float) -> None:
        """Return when the member's role entry may be complete, or after `seconds`."""
        event = self._waiters.setdefault(member.cluster_key, {}).setdefault(
            member.role, asyncio.Event())
        self._changed(member.cluster_key)  # (it may have completed before we registered)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def context_json(self, member: MemberRecord) -> bytes | Pending:
        """The member's complete context as JSON, or what it still waits for."""
        view = await self._view(member.cluster_key)
        role_view = view.roles.get(member.role)
        if role_view is None:
            raise LaunchGone(f"launch {member.cluster} has no role {member.role} any more")
        if role_view.pending is not None:
            return role_view.pending
        me = view.peers.get((member.namespace, member.name))
        if me is None:
            if member.index >= self._quantity(member):  # beyond the role's quantity: scaled down
                raise LaunchGone(f"member {member.name} is no longer part of launch "
                                 f"{member.cluster}")
            return Pending(waiting_for=[member.name], missing=1)  # its own identity first
        return b'{"member":' + json.dumps(me).encode() + b"," + role_view.shared_json + b"}"

    def _quantity(self, member: MemberRecord) -> int:
        launch = self._cache.launches.get(member.cluster_key)
        roles = launch.spec.get("roles", []) if launch else []
        return next((int(r.get("quantity", 1)) for r in roles if r["name"] == member.role), 0)

    async def _view(self, cluster: Key) -> _ClusterView:
        version = self._cache.version(cluster)
        view = self._views.get(cluster)
        if view is not None and view.version == version:
            return view
        async with self._locks.setdefault(cluster, asyncio.Lock()):
            version = self._cache.version(cluster)
            view = self._views.get(cluster)
            if view is None or view.version != version:
                view = await self._build(cluster, version)
                self._views[cluster] = view
            return view

    async def _build(self, cluster: Key, version: int) -> _ClusterView:
        launch = self._cache.launches.get(cluster)
        if launch is None or launch.deleting:
            self._views.pop(cluster, None)
            raise LaunchGone(f"launch {cluster[1]} no longer exists")
        spec = launch.spec
        view = _ClusterView(version)
        missing: dict[str, list[str]] = {}  # role entry -> members without identity
        for entry in spec["roles"]:
            missing[entry["name"]] = []
            for index in range(entry.get("quantity", 1)):
                record = self._cache.member_at(cluster, entry["name"], index)
                if record is None or record.identity is None:
                    missing[entry["name"]].append(f"{cluster[1]}-{entry['name']}-{index}")
                else:
                    view.peers[(record.namespace, record.name)] = _peer(record, entry)
        everyone = spec.get("hostsFile", True) or spec.get("sshHostBased", True)
        all_peers = list(view.peers.values())
        data = await self._data(launch)
        for entry in spec["roles"]:
            required = entry.get("requires", {}).get("roles", [])
            # Whose identity this role's members wait for: everyone's when the context lists
            # every member (for /etc/hosts, host-based SSH), else the required roles' only.
            needed = ({e["name"] for e in spec["roles"]} if everyone else
                      {e["name"] for role in required for e in _entries_providing(spec, role)})
            waiting = [m for name in sorted(needed) for m in missing[name]]
            wanted_data = entry.get("requires", {}).get("data", [])
            waiting += [f"data:{d}" for d in wanted_data if d not in data]
            if waiting:
                view.roles[entry["name"]] = _RoleView(
                    Pending(waiting_for=waiting[:WAITING_FOR_SHOWN], missing=len(waiting)))
                continue
            shared = {
                "cluster": cluster[1],
                "requiredRoles": {
                    role: [p for e in _entries_providing(spec, role) for p in all_peers
                           if p["role"] == e["name"]]
                    for role in required
                },
                "members": [p for p in all_peers if everyone or p["role"] in needed],
                "data": {d: data[d] for d in wanted_data},
                "sshAuthorizedKeys": spec.get("sshAuthorizedKeys", []),
                "hostsFile": spec.get("hostsFile", True),
                "sshHostBased": spec.get("sshHostBased", True),
            }
            view.roles[entry["name"]] = _RoleView(None, json.dumps(shared).encode()[1:-1])
        return view

    async def _data(self, launch: LaunchRecord) -> dict[str, str]:
        values: dict[str, str] = {}
        for item in launch.spec.get("data", []):
            if "value" in item:
                values[item["name"]] = item["value"]
                continue
            source = item.get("valueFrom", {})
            ref = source.get("secretKeyRef") or source.get("configMapKeyRef") or {}
            plural = "secrets" if "secretKeyRef" in source else "configmaps"
            try:
                obj = await self._kube.get(core_path(plural, launch.namespace, ref["name"]))
            except ApiError as error:
                if error.status == 404:
                    continue  # not there yet: the member waits for it
                raise DataUnavailable(
                    f"data {item['name']}: cannot read {plural[:-1]} {ref['name']}: "
                    f"{error.reason}") from error
            if plural == "secrets" and ref["key"] in obj.get("data", {}):
                values[item["name"]] = base64.b64decode(obj["data"][ref["key"]]).decode()
            elif plural == "configmaps" and ref["key"] in obj.get("data", {}):
                values[item["name"]] = obj["data"][ref["key"]]
        return values
