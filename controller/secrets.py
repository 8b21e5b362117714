"""Secrets in the controller's namespace: its own (broker CA, token key), read or made once,
and the ones providers read their credentials from."""

from __future__ import annotations

import base64
from collections.abc import Callable

from kits.kube import ApiError, KubeClient, core_path


async def ensure_secret(kube: KubeClient, namespace: str, name: str,
                        make: Callable[[], dict[str, bytes]],
                        type: str = "Opaque") -> dict[str, bytes]:
    """The Secret's data; when it does not exist, `make()` it (whoever creates it first wins)."""
    found = await read_secret(kube, namespace, name)
    if found is not None:
        return found
    made = make()
    body = {"apiVersion": "v1", "kind": "Secret", "type": type,
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "oneclick"}},
            "data": {k: base64.b64encode(v).decode() for k, v in made.items()}}
    try:
        await kube.create(core_path("secrets", namespace), body)
    except ApiError as error:
        if error.status != 409:
            raise
        return await ensure_secret(kube, namespace, name, make, type)
    return made


async def read_secret(kube: KubeClient, namespace: str, name: str) -> dict[str, bytes] | None:
    """The Secret's data, or None when there is no such Secret."""
    try:
        data = (await kube.get(core_path("secrets", namespace, name))).get("data") or {}
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    return {k: base64.b64decode(v) for k, v in data.items()}
