"""Secrets in the controller's namespace: its own (broker CA, token key), read or made once,
and the ones providers read their credentials from; and the owner of what it makes there."""

from __future__ import annotations

import base64
from collections.abc import Callable

from oneclick.kits.kube import JSON, ApiError, Conflict, KubeClient, NotFound, core_path


class OwnerUnreadable(Exception):
    """The configured owner ServiceAccount cannot be read: the controller cannot start."""


async def owner_reference(kube: KubeClient, namespace: str,
                          service_account: str | None) -> JSON | None:
    """An ownerReference to the controller's ServiceAccount (None when none is configured):
    what the controller makes in its namespace goes when the chart that made the account is
    uninstalled (the garbage collector deletes dependents of a deleted owner)."""
    if service_account is None:
        return None
    try:
        found = await kube.get(core_path("serviceaccounts", namespace, service_account))
    except ApiError as error:
        raise OwnerUnreadable(
            f"cannot read the ServiceAccount {namespace}/{service_account} "
            f"(OCC_OWNER_SERVICE_ACCOUNT) to own the controller's Secrets and Lease: "
            f"{error}") from error
    return {"apiVersion": "v1", "kind": "ServiceAccount", "name": service_account,
            "uid": found["metadata"]["uid"]}


async def ensure_secret(kube: KubeClient, namespace: str, name: str,
                        make: Callable[[], dict[str, bytes]],
                        type: str = "Opaque", owner: JSON | None = None) -> dict[str, bytes]:
    """The Secret's data; when it does not exist, `make()` it (whoever creates it first wins),
    owned by `owner` if given."""
    found = await read_secret(kube, namespace, name)
    if found is not None:
        return found
    made = make()
    metadata: JSON = {"name": name, "namespace": namespace,
                      "labels": {"app.kubernetes.io/part-of": "oneclick"}}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    body = {"apiVersion": "v1", "kind": "Secret", "type": type, "metadata": metadata,
            "data": {k: base64.b64encode(v).decode() for k, v in made.items()}}
    try:
        await kube.create(core_path("secrets", namespace), body)
    except Conflict:
        return await ensure_secret(kube, namespace, name, make, type, owner)
    return made


async def read_secret(kube: KubeClient, namespace: str, name: str) -> dict[str, bytes] | None:
    """The Secret's data, or None when there is no such Secret."""
    try:
        data = (await kube.get(core_path("secrets", namespace, name))).get("data") or {}
    except NotFound:
        return None
    return {k: base64.b64decode(v) for k, v in data.items()}
