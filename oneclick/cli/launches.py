"""Reading launches, their members and their events from the API server."""

from __future__ import annotations

import datetime
from typing import Any

from oneclick.api.launch import LaunchPhase
from oneclick.cli import times
from oneclick.cli.session import Session
from oneclick.kits.kube import JSON, ApiError, core_path
from oneclick.kits.resources import custom_path

CLUSTER_LABEL = "clusters.oneclick.dev/cluster"


class NotFound(Exception):
    pass


async def get_launch(session: Session, name: str, namespace: str | None = None) -> JSON:
    namespace = namespace or session.namespace
    try:
        return await session.kube.get(custom_path("ClusterLaunch", namespace, name))
    except ApiError as error:
        if error.status == 404:
            raise NotFound(f"clusterlaunch {name!r} not found in namespace "
                           f"{namespace!r}") from error
        raise


async def members(session: Session, name: str, namespace: str | None = None) -> list[JSON]:
    listing = await session.kube.list(custom_path("LaunchMember", namespace or session.namespace),
                                      labelSelector=f"{CLUSTER_LABEL}={name}")
    return in_order(listing.get("items", []))


def in_order(items: list[JSON]) -> list[JSON]:
    """Members by launch, role and index."""
    return sorted(items, key=lambda m: (m["metadata"].get("namespace", ""),
                                        m["spec"].get("cluster", ""), m["spec"].get("role", ""),
                                        m["spec"].get("index", 0)))


def in_launch_order(launch: JSON, found: list[JSON]) -> list[JSON]:
    """Members in the order of the launch's roles (the head node first), then by index."""
    order = {role["name"]: i for i, role in enumerate(launch["spec"]["roles"])}
    return sorted(found, key=lambda m: (order.get(m["spec"]["role"], len(order)),
                                        m["spec"]["index"]))


def short_name(member: JSON) -> str:
    """ROLE-INDEX: the member's name without its launch's (compute-nodes-1)."""
    return f"{member['spec'].get('role')}-{member['spec'].get('index')}"


def find_member(launch: str, found: list[JSON], wanted: str) -> JSON | None:
    """The member the user means: its full name, ROLE-INDEX, or a role of one member."""
    for member in found:
        if wanted in (member["metadata"]["name"], f"{launch}-{wanted}", short_name(member)):
            return member
    of_role = [m for m in found if m["spec"].get("role") == wanted]
    return of_role[0] if len(of_role) == 1 else None


def head(launch: JSON, found: list[JSON]) -> JSON | None:
    """The first member of the first role: where the user logs in."""
    first = launch["spec"]["roles"][0]["name"]
    return next((m for m in found if m["spec"]["role"] == first and m["spec"]["index"] == 0),
                None)


async def events(session: Session, name: str, namespace: str | None = None) -> list[JSON]:
    """The launch's events, oldest first (to the microsecond where the event says)."""
    listing = await session.kube.list(
        core_path("events", namespace or session.namespace),
        fieldSelector=f"involvedObject.kind=ClusterLaunch,involvedObject.name={name}")
    items: list[JSON] = listing.get("items", [])
    return sorted(items, key=event_time)


def event_time(event: JSON) -> datetime.datetime:
    """When the event happened last: its series' or lastTimestamp when it repeated, else its
    eventTime (microseconds), else firstTimestamp, else when it was stored."""
    series = (event.get("series") or {}).get("lastObservedTime")
    repeated = series or (event.get("lastTimestamp") if (event.get("count") or 1) > 1 else None)
    for text in (repeated, event.get("eventTime"), event.get("lastTimestamp"),
                 event.get("firstTimestamp"), event["metadata"].get("creationTimestamp")):
        moment = times.parse(text)
        if moment is not None:
            return moment
    return datetime.datetime.min.replace(tzinfo=datetime.UTC)


def expires_in(launch: JSON) -> str:
    """When the launch ends, in the user's terms: "in 59m", "3m ago"; "-" once it failed
    (what is left of it lives until it is terminated)."""
    status = launch.get("status") or {}
    moment = times.parse(status.get("expiresAt"))
    if moment is None or status.get("phase") == LaunchPhase.FAILED:
        return "-"
    return times.countdown(moment)


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
