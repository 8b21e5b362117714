"""Which bring-your-own host is whose: one Lease per pool host, in the controller's namespace.

The API server decides, not the hosts: a tenant is root on the host it holds and can change
anything there, but not this. Creating a host's Lease is the claim (a second create answers
409, so two launches never share a host); its holder is the member's idempotency key, so a
relaunch after a crash finds its host by holder; the Lease goes only once the host has been
given back (uninstalled, reset). A host that could not be given back keeps its Lease, with no
holder and the reason, until an administrator deletes it.

A Lease is named by the host alone (`occ-ssh-<hash of address:port>`), not by the pool: a host
listed in two pools (say, one per group of namespaces) is still held by one launch at a time.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from oneclick.controller.providers.base import ProviderError
from oneclick.kits.kube import JSON, ApiError, Conflict, KubeClient, NotFound

PREFIX = "clusters.oneclick.dev/"
PROVIDER_LABEL = PREFIX + "ssh-provider"  # the pool through which the host was taken
HOST = PREFIX + "host"
UNUSABLE = PREFIX + "unusable"  # why the host is kept out of the pool
HOLDER = (PREFIX + "namespace", PREFIX + "cluster", PREFIX + "member")  # who holds it
REASON_LIMIT = 4096


class ClaimsError(ProviderError):
    """The API server did not let the provider read or write its claims (tried again)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HostClaim:
    host: str  # address:port
    holder: str | None  # the idempotency key of the member holding the host
    unusable: str | None  # why the host is out of the pool, if it is
    lease: JSON


def lease_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{path}/{name}" if name else path


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _claim(lease: JSON) -> HostClaim:
    metadata, spec = lease["metadata"], lease.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    return HostClaim(annotations.get(HOST, ""), spec.get("holderIdentity") or None,
                     annotations.get(UNUSABLE), lease)


class HostClaims:
    """The claims one ssh provider makes (and sees every pool's)."""

    def __init__(self, kube: KubeClient, namespace: str, provider: str) -> None:
        self._kube, self.namespace, self.provider = kube, namespace, provider

    @staticmethod
    def lease_name(host: str) -> str:
        """`occ-ssh-<hash of address:port>` (an address need not be a valid object name)."""
        return f"occ-ssh-{hashlib.sha256(host.encode()).hexdigest()[:20]}"

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        try:
            yield
        except ApiError as error:
            raise ClaimsError(f"provider {self.provider!r} cannot keep its claims (Leases in "
                              f"namespace {self.namespace}): {error}", error.status) from error

    async def all(self) -> dict[str, HostClaim]:
        """Every claimed (or unusable) host of every ssh pool, by address:port."""
        with self._reported():
            listing = await self._kube.list(lease_path(self.namespace),
                                            labelSelector=PROVIDER_LABEL)
        claims = [_claim(item) for item in listing.get("items", [])]
        return {c.host: c for c in claims if c.lease["metadata"]["name"] == self.lease_name(
            c.host)}  # (a Lease whose name does not match its host annotation is not ours)

    async def get(self, host: str) -> HostClaim | None:
        with self._reported():
            try:
                return _claim(await self._kube.get(lease_path(self.namespace,
                                                              self.lease_name(host))))
            except NotFound:
                return None

    async def take(self, host: str, key: str, namespace: str, cluster: str,
                   member: str) -> bool:
        """Claim the host for `key`: False when someone holds it already."""
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {
                "name": self.lease_name(host), "namespace": self.namespace,
                "labels": {PROVIDER_LABEL: self.provider},
                "annotations": {HOST: host, **dict(zip(HOLDER, (namespace, cluster, member),
                                                       strict=True))},
            },
            "spec": {"holderIdentity": key, "acquireTime": _now()},
        }
        with self._reported():
            try:
                await self._kube.create(lease_path(self.namespace), body)
            except Conflict:
                return False
        return True

    async def release(self, claim: HostClaim) -> None:
        """The host goes back to the pool (only this Lease, as it was read: a changed one
        stays)."""
        metadata = claim.lease["metadata"]
        with self._reported(), contextlib.suppress(NotFound):  # (gone already)
            await self._kube.request(
                "DELETE", lease_path(self.namespace, metadata["name"]),
                body={"preconditions": {"uid": metadata["uid"],
                                        "resourceVersion": metadata["resourceVersion"]}})

    async def keep_out(self, claim: HostClaim, reason: str) -> None:
        """The host stays out of the pool: its Lease is kept, with no holder and the reason."""
        lease = dict(claim.lease)
        metadata = dict(lease["metadata"])
        metadata["annotations"] = {**(metadata.get("annotations") or {}),
                                   UNUSABLE: reason[-REASON_LIMIT:]}
        lease["metadata"] = metadata
        lease["spec"] = {**(lease.get("spec") or {}), "holderIdentity": None}
        with self._reported():
            await self._kube.request("PUT", lease_path(self.namespace, metadata["name"]),
                                     body=lease)
