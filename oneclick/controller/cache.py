"""What the controller knows of launches and members: a watch cache of the API server.

The API server holds the truth; this is its reflection in memory, filled by list-then-watch
(so a restarted controller knows everything again once it has listed) and by our own writes
(so an agent's identity counts the moment it is stored). The broker answers context requests
from here and the reconcile loop reads members from here: nothing lists per request or tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from oneclick.api import PAUSED
from oneclick.api.launch import ClusterLaunchSpec
from oneclick.api.member import LaunchMemberSpec
from oneclick.kits.kube import JSON, ApiError, KubeClient
from oneclick.kits.resources import custom_path

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass(slots=True)
class MemberRecord:
    namespace: str
    name: str
    uid: str
    cluster: str
    role: str
    index: int
    resource_version: str
    spec: LaunchMemberSpec
    token_hash: str | None = None
    identity: JSON | None = None  # wire form of api.protocol.Identity
    report: JSON | None = None  # wire form of api.protocol.Report
    conditions: list[JSON] = field(default_factory=list)
    status: JSON = field(default_factory=dict)
    deleting: bool = False
    finalizers: tuple[str, ...] = ()
    paused: bool = False

    @property
    def cluster_key(self) -> Key:
        return (self.namespace, self.cluster)

    @classmethod
    def from_object(cls, obj: JSON) -> MemberRecord:
        """The member with its spec parsed (pydantic.ValidationError if it does not parse)."""
        meta, status = obj["metadata"], obj.get("status") or {}
        spec = LaunchMemberSpec.model_validate(obj.get("spec") or {})
        return cls(
            namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
            cluster=spec.cluster, role=spec.role, index=spec.index,
            resource_version=meta.get("resourceVersion", "0"), spec=spec,
            token_hash=status.get("tokenHash"), identity=status.get("identity"),
            report=status.get("report"), conditions=status.get("conditions") or [],
            status=status, deleting="deletionTimestamp" in meta,
            finalizers=tuple(meta.get("finalizers") or ()),
            paused=PAUSED in (meta.get("annotations") or {}),
        )


@dataclass(slots=True)
class LaunchRecord:
    namespace: str
    name: str
    uid: str
    spec: ClusterLaunchSpec
    resource_version: str
    deleting: bool = False
    obj: JSON = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: JSON) -> LaunchRecord:
        """The launch with its spec parsed (pydantic.ValidationError if it does not parse: the
        API server checked it against the schema made of the same model, so only an object
        stored under an older schema can)."""
        meta = obj["metadata"]
        return cls(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                   spec=ClusterLaunchSpec.model_validate(obj.get("spec") or {}),
                   resource_version=meta.get("resourceVersion", "0"),
                   deleting="deletionTimestamp" in meta, obj=obj)


def _newer(incoming: str, stored: str) -> bool:
    """Whether an incoming object is not older than the stored one (resourceVersions are etcd
    revisions; if one is not a number, trust the incoming one)."""
    try:
        return int(incoming) >= int(stored)
    except ValueError:
        return True


@dataclass
class LaunchCache:
    launches: dict[Key, LaunchRecord] = field(default_factory=dict)
    members: dict[Key, MemberRecord] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _by_token: dict[str, Key] = field(default_factory=dict)
    _members_of: dict[Key, dict[tuple[str, int], Key]] = field(default_factory=dict)
    # Told of every change: the launch's key, and the member's key (None: the launch itself).
    listeners: list[Callable[[Key, Key | None], None]] = field(default_factory=list)

    # -- reading --------------------------------------------------------------------------

    def member_by_token_hash(self, token_hash: str) -> MemberRecord | None:
        key = self._by_token.get(token_hash)
        return self.members.get(key) if key else None

    def member_at(self, cluster: Key, role: str, index: int) -> MemberRecord | None:
        key = self._members_of.get(cluster, {}).get((role, index))
        return self.members.get(key) if key else None

    def members_of(self, cluster: Key) -> list[MemberRecord]:
        return [self.members[k] for k in self._members_of.get(cluster, {}).values()]

    # -- writing --------------------------------------------------------------------------

    def _touch(self, cluster: Key, member: Key | None = None) -> None:
        for listener in self.listeners:
            listener(cluster, member)

    def put_member(self, obj: JSON) -> MemberRecord | None:
        try:
            record = MemberRecord.from_object(obj)
        except ValidationError as error:  # (as for launches: never stored since our schema)
            logger.error("member %s/%s: its spec does not parse: %s", obj["metadata"].get(
                "namespace"), obj["metadata"].get("name"), error)
            return None
        key = (record.namespace, record.name)
        old = self.members.get(key)
        if old is not None:
            if not _newer(record.resource_version, old.resource_version):
                return old
            if old.token_hash and self._by_token.get(old.token_hash) == key:
                del self._by_token[old.token_hash]
        self.members[key] = record
        if record.token_hash:
            self._by_token[record.token_hash] = key
        self._members_of.setdefault(record.cluster_key, {})[(record.role, record.index)] = key
        self._touch(record.cluster_key, key)
        return record

    def delete_member(self, obj: JSON) -> None:
        meta = obj["metadata"]
        record = self.members.pop((meta["namespace"], meta["name"]), None)
        if record is None:
            return
        if record.token_hash:
            self._by_token.pop(record.token_hash, None)
        self._members_of.get(record.cluster_key, {}).pop((record.role, record.index), None)
        self._touch(record.cluster_key, (record.namespace, record.name))

    def put_launch(self, obj: JSON) -> None:
        try:
            record = LaunchRecord.from_object(obj)
        except ValidationError as error:  # (its reconcile passes fail, saying why)
            logger.error("launch %s/%s: its spec does not parse: %s", obj["metadata"].get(
                "namespace"), obj["metadata"].get("name"), error)
            return
        key = (record.namespace, record.name)
        old = self.launches.get(key)
        if old is not None and (not _newer(record.resource_version, old.resource_version)
                                or record.resource_version == old.resource_version):
            return  # (older, or our own write coming back through the watch)
        self.launches[key] = record
        self._touch(key)

    def delete_launch(self, obj: JSON) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if self.launches.pop(key, None) is not None:
            self._touch(key)


class Reflector:
    """List, then watch, one resource kind into the cache; relist when the watch expires."""

    def __init__(self, kube: KubeClient, kind: str, put: Callable[[JSON], Any],
                 delete: Callable[[JSON], Any], known: Callable[[], set[Key]]) -> None:
        self._kube, self._kind = kube, kind
        self._put, self._delete, self._known = put, delete, known
        self.synced = asyncio.Event()

    async def run(self) -> None:
        path = custom_path(self._kind)
        while True:
            try:
                listing = await self._kube.list(path)
                seen = set()
                for item in listing.get("items", []):
                    item.setdefault("apiVersion", listing.get("apiVersion"))
                    self._put(item)
                    seen.add((item["metadata"]["namespace"], item["metadata"]["name"]))
                for namespace, name in self._known() - seen:  # deleted while we were away
                    self._delete({"metadata": {"namespace": namespace, "name": name}})
                self.synced.set()
                version = listing["metadata"]["resourceVersion"]
                while True:
                    async for event in self._kube.watch(path, version):
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            raise ApiError(obj.get("code", 500), str(obj), f"watch {path}")
                        version = obj["metadata"]["resourceVersion"]
                        if kind in ("ADDED", "MODIFIED"):
                            self._put(obj)
                        elif kind == "DELETED":
                            self._delete(obj)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an expired watch (410) or a lost connection: relist
                logger.info("relisting %s after %s", self._kind, error)
                await asyncio.sleep(0.5)


async def run_reflectors(kube: KubeClient, cache: LaunchCache) -> None:
    """Keep the cache in step with the API server; sets `cache.synced` once both have listed."""
    launches = Reflector(kube, "ClusterLaunch", cache.put_launch, cache.delete_launch,
                         lambda: set(cache.launches))
    members = Reflector(kube, "LaunchMember", cache.put_member, cache.delete_member,
                        lambda: set(cache.members))

    async def mark_synced() -> None:
        await launches.synced.wait()
        await members.synced.wait()
        cache.synced.set()

    await asyncio.gather(launches.run(), members.run(), mark_synced())
