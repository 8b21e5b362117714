"""Our own resources (ClusterLaunch, LaunchMember) as the generic client addresses them: their
URL paths and server-side-apply documents. (kits/kube.py knows no kind of ours.)"""

from __future__ import annotations

from typing import Any

from oneclick.api import API_VERSION
from oneclick.kits.kube import JSON, resource_path

PLURALS = {"ClusterLaunch": "clusterlaunches", "LaunchMember": "launchmembers"}


def custom_path(kind: str, namespace: str | None = None, name: str | None = None,
                subresource: str | None = None) -> str:
    """The URL path of our own resources (every namespace's when `namespace` is None)."""
    return resource_path(API_VERSION, PLURALS[kind], namespace, name, subresource)


def apply_body(kind: str, name: str, namespace: str, **sections: Any) -> JSON:
    """A minimal server-side-apply document for one of our resources."""
    return {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, **sections}
