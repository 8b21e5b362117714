"""Whether a member's context is complete, and the context itself, from the watch cache.

A context is complete when every member it depends on has provided identity: the members of
each role it requires, and every member of the launch when /etc/hosts or host-based SSH is
managed (those list everyone). The expected members come from the spec (role quantities), not
from the LaunchMembers that happen to exist yet.

All members of one role entry get the same context but for their own identity, so the shared
part is computed and serialized once per role entry and cluster version, then reused: at
thousands of members, that is what keeps a context request cheap.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field

from api.protocol import Pending
from controller.cache import Key, LaunchCache, LaunchRecord, MemberRecord
from kits.kube import JSON, ApiError, KubeClient, core_path

WAITING_FOR_SHOWN = 10


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

    async def context_json(self, member: MemberRecord) -> bytes | Pending:
        """The member's complete context as JSON, or what it still waits for."""
        view = await self._view(member.cluster_key)
        role_view = view.roles.get(member.role)
        if role_view is None:
            raise LaunchGone(f"launch {member.cluster} has no role {member.role} any more")
        if role_view.pending is not None:
            return role_view.pending
        me = view.peers.get((member.namespace, member.name))
        if me is None:  # complete, yet not us: we are beyond the role's quantity (scaled down)
            raise LaunchGone(f"member {member.name} is no longer part of launch {member.cluster}")
        return b'{"member":' + json.dumps(me).encode() + b"," + role_view.shared_json + b"}"

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
            needed = {entry["name"]} | {
                e["name"] for role in required for e in _entries_providing(spec, role)}
            if everyone:
                needed = {e["name"] for e in spec["roles"]}
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
                "members": all_peers if everyone else [
                    p for p in all_peers if p["role"] in needed],
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
