"""Reading launches, their members and their events from the API server."""

from __future__ import annotations

from typing import Any

from cli.session import Session
from kits.kube import JSON, ApiError, core_path, custom_path

CLUSTER_LABEL = "clusters.oneclick.dev/cluster"


class NotFound(Exception):
    pass


async def get_launch(session: Session, name: str) -> JSON:
    try:
        return await session.kube.get(custom_path("ClusterLaunch", session.namespace, name))
    except ApiError as error:
        if error.status == 404:
            raise NotFound(f"clusterlaunch {name!r} not found in namespace "
                           f"{session.namespace!r}") from error
        raise


async def members(session: Session, name: str) -> list[JSON]:
    listing = await session.kube.list(custom_path("LaunchMember", session.namespace),
                                      labelSelector=f"{CLUSTER_LABEL}={name}")
    items: list[JSON] = listing.get("items", [])
    return sorted(items, key=lambda m: (m["spec"].get("role", ""), m["spec"].get("index", 0)))


async def events(session: Session, name: str) -> list[JSON]:
    listing = await session.kube.list(core_path("events", session.namespace),
                                      fieldSelector=f"involvedObject.name={name}")
    items: list[JSON] = listing.get("items", [])
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def role_label(launch: JSON, member: JSON) -> str:
    """`head-node`, or `compute-nodes #1` when the role has several members (as Nimbus)."""
    role, index = member["spec"]["role"], member["spec"]["index"]
    quantity = next((r.get("quantity", 1) for r in launch["spec"]["roles"] if r["name"] == role),
                    1)
    return role if quantity == 1 and index == 0 else f"{role} #{index}"


def wants_known_hosts(launch: JSON, member: JSON) -> bool:
    role = member["spec"]["role"]
    return bool(next((r.get("knownHosts", True) for r in launch["spec"]["roles"]
                      if r["name"] == role), True))


def address(member: JSON) -> str | None:
    status: dict[str, Any] = member.get("status") or {}
    found = status.get("addresses") or (status.get("identity") or {}).get("addresses") or []
    return str(found[0]) if found else None
