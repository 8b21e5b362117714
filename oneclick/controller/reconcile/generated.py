"""Generated data items: shared secrets (a munge key) the controller makes once per launch.

They live in one Secret per launch, named after the launch's uid and owned by it (the garbage
collector deletes it with the launch). Making it is create-if-absent, which the API server
decides atomically: a controller that crashes and restarts, or two passes that race, find the
Secret the first one made and never make a second set of bytes. An item added to a running
launch's spec is added to the Secret with the Secret's resourceVersion as a precondition;
bytes once made are never replaced.
"""

from __future__ import annotations

import base64
import logging
import secrets

from oneclick.api import API_VERSION
from oneclick.controller.broker.data import (
    GENERATED_TYPE,
    generated_items,
    generated_secret,
    owned_by,
)
from oneclick.controller.cache import LaunchRecord
from oneclick.kits.kube import JSON, Conflict, KubeClient, NotFound, core_path

logger = logging.getLogger(__name__)


def _random(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def _body(launch: LaunchRecord, items: dict[str, int]) -> JSON:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": GENERATED_TYPE,
        "metadata": {
            "name": generated_secret(launch.uid), "namespace": launch.namespace,
            "labels": {"app.kubernetes.io/part-of": "oneclick"},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "ClusterLaunch",
                                 "name": launch.name, "uid": launch.uid, "controller": True}],
        },
        "data": {name: _random(size) for name, size in items.items()},
    }


async def ensure(kube: KubeClient, launch: LaunchRecord) -> None:
    """Make the launch's generated items that do not exist yet (ApiError when the API server
    refuses; the next pass tries again)."""
    items = generated_items(launch.spec)
    if not items:
        return
    path = core_path("secrets", launch.namespace, generated_secret(launch.uid))
    try:
        found = await kube.get(path)
    except NotFound:
        try:
            await kube.create(core_path("secrets", launch.namespace), _body(launch, items))
        except Conflict:
            return  # made by another pass in the meantime: the next pass looks at it
        logger.info("launch %s/%s: generated %s", launch.namespace, launch.name,
                    ", ".join(sorted(items)))
        return
    if found.get("type") != GENERATED_TYPE or not owned_by(found, "ClusterLaunch", launch.uid):
        return  # not ours: never written to, and the data reader refuses it (DataInvalid)
    missing = {n: s for n, s in items.items() if n not in (found.get("data") or {})}
    if not missing:
        return
    patch = {"metadata": {"resourceVersion": found["metadata"]["resourceVersion"]},
             "data": {name: _random(size) for name, size in missing.items()}}
    try:
        await kube.merge_patch(path, patch)
    except Conflict:
        return  # someone wrote it first: the next pass looks again
    logger.info("launch %s/%s: generated %s", launch.namespace, launch.name,
                ", ".join(sorted(missing)))
