"""The reconcile loop of one ClusterLaunch, run every second until the launch ends.

Each pass converges, whatever happened before it (a crash included): members are created or
deleted to match the spec, members without an instance are launched (idempotently), instances
are described in one batch per provider, and the launch's status is computed from its members
and written only when it changed. Expiry and failure terminate every instance.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import kopf

from api.conditions import Condition, ConditionStatus, find_condition, set_condition
from controller import metrics
from controller.cache import LaunchRecord, MemberRecord
from controller.providers import ProviderError
from controller.reconcile import aggregate
from controller.reconcile.members import (
    FIELD_MANAGER,
    create_member,
    delete_member,
    launch_member,
    record_instance,
    terminate_members,
)
from controller.runtime import Runtime
from kits.kube import JSON, apply_body, custom_path

logger = logging.getLogger(__name__)

TERMINAL = ("Failed", "Expired")
ACTIVE_MEMBER_PHASES = ("Launching", "Running", "Contextualizing", "Ready")


async def reconcile(rt: Runtime, body: kopf.Body) -> None:
    launch = LaunchRecord.from_object(dict(body))
    key = (launch.namespace, launch.name)
    status: JSON = dict(body.get("status") or {})
    now = datetime.datetime.now(datetime.UTC)
    created = aggregate.parse_time(body["metadata"]["creationTimestamp"])
    expires = created + aggregate.parse_duration(launch.spec.get("lifetime", "1h"))
    conditions = [Condition.model_validate(c) for c in status.get("conditions", [])]
    phase = status.get("phase")

    if phase not in TERMINAL:
        await _converge_members(rt, launch)
        await _poll_instances(rt, rt.cache.members_of(key))
    members = [m for m in rt.cache.members_of(key) if not m.deleting]
    generation = body["metadata"].get("generation")

    def set(type: str, ok: bool, reason: str, message: str = "") -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type, ok, reason, message, generation)

    counts = aggregate.count(launch.spec, members)
    set("MembersLaunched", counts.launched == counts.total, "AllLaunched"
        if counts.launched == counts.total else "Launching",
        f"{counts.launched} of {counts.total} members launched")
    all_running = counts.running == counts.total
    set("MembersRunning", all_running, "AllRunning" if all_running else "Booting",
        f"{counts.running} of {counts.total} members running")
    running_since = _since(conditions, "MembersRunning")
    done = counts.contextualized == counts.total
    set("Contextualized", done, "AllReported" if done else "Waiting",
        f"{counts.contextualized} of {counts.total} members contextualized")

    if phase not in TERMINAL:
        if now >= expires:
            phase = "Expired"
            await terminate_members(rt, members)
            set("Ready", False, "Expired", f"the launch's lifetime ended at "
                f"{aggregate.format_time(expires)}; every instance was terminated")
        elif (failed := aggregate.failure(launch.spec, members, created, running_since,
                                          now)) is not None:
            phase = "Failed"
            keep = launch.spec.get("onFailure") == "Keep"
            if not keep:
                await terminate_members(rt, members)
            set("Failed", True, failed.reason, failed.message + (
                "" if keep else "; every instance was terminated (reports are kept)"))
            set("Ready", False, failed.reason, failed.message)
        else:
            ready = done
            phase = "Ready" if ready else "Contextualizing" if all_running else (
                "Launching" if members else "Pending")
            set("Ready", ready, "Contextualized" if ready else "Waiting",
                "every member is contextualized" if ready else
                f"{counts.contextualized} of {counts.total} members contextualized")
            if find_condition(conditions, "Failed") is None:
                set("Failed", False, "NoFailure", "")

    new_status: JSON = {
        "phase": phase,
        "conditions": [c.wire() for c in conditions],
        "observedGeneration": generation,
        "expiresAt": aggregate.format_time(expires),
        "members": counts.wire(),
        "readyMembers": f"{counts.contextualized}/{counts.total}",
    }
    head = aggregate.head_node(launch.spec, members)
    if head:
        new_status["headNode"] = head
    ready_at = status.get("readyAt") or (aggregate.format_time(now) if phase == "Ready" else None)
    if ready_at:
        new_status["readyAt"] = ready_at
    if _differs(status, new_status):
        _announce(body, status, new_status, created, running_since, now)
        await rt.kube.apply(
            custom_path("ClusterLaunch", launch.namespace, launch.name, "status"),
            apply_body("ClusterLaunch", launch.name, launch.namespace, status=new_status),
            FIELD_MANAGER)


def _since(conditions: list[Condition], type: str) -> datetime.datetime | None:
    found = find_condition(conditions, type)
    if found is None or found.status != ConditionStatus.TRUE:
        return None
    return found.last_transition_time


def _differs(old: JSON, new: JSON) -> bool:
    return any(old.get(k) != v for k, v in new.items())


def _announce(body: kopf.Body, old: JSON, new: JSON, created: datetime.datetime,
              running_since: datetime.datetime | None, now: datetime.datetime) -> None:
    """Events (and duration metrics) for each condition that just became true."""
    before = {c["type"]: c["status"] for c in old.get("conditions", [])}
    for condition in new["conditions"]:
        if condition["status"] != "True" or before.get(condition["type"]) == "True":
            continue
        kind = "Warning" if condition["type"] == "Failed" else "Normal"
        kopf.event(body, type=kind, reason=condition["reason"], message=condition["message"])
        if condition["type"] == "MembersRunning":
            metrics.LAUNCH_SECONDS.observe((now - created).total_seconds())
        if condition["type"] == "Ready" and running_since is not None:
            metrics.CONTEXTUALIZATION_SECONDS.observe((now - running_since).total_seconds())
    if new["phase"] == "Expired" and old.get("phase") != "Expired":
        kopf.event(body, type="Normal", reason="Expired", message=new["conditions"][-1][
            "message"] if new["conditions"] else "expired")


async def _converge_members(rt: Runtime, launch: LaunchRecord) -> None:
    members = {(m.role, m.index): m for m in rt.cache.members_of((launch.namespace,
                                                                   launch.name))}
    desired = aggregate.desired_members(launch.spec)
    roles = {r["name"]: r for r in launch.spec["roles"]}
    for role, index in desired:
        if (role, index) not in members:
            await create_member(rt, launch, roles[role], index)
    wanted = set(desired)
    for slot, member in members.items():
        if slot not in wanted and not member.deleting:
            await delete_member(rt, member)  # its finalizer terminates the instance
    for slot in desired:
        fresh = rt.cache.member_at((launch.namespace, launch.name), *slot)
        if (fresh is not None and not fresh.deleting and not fresh.status.get("instanceId")
                and fresh.status.get("phase") != "Failed" and fresh.uid not in rt.launching):
            rt.launching.add(fresh.uid)
            rt.spawn(_launch(rt, fresh))


async def _launch(rt: Runtime, member: MemberRecord) -> None:
    try:
        await launch_member(rt, member)
    except Exception:
        logger.exception("launching %s", member.name)
    finally:
        rt.launching.discard(member.uid)


async def _poll_instances(rt: Runtime, members: list[MemberRecord]) -> None:
    """Describe every instance that may still change, in one call per provider."""
    by_provider: dict[str, list[MemberRecord]] = {}
    for member in members:
        if member.status.get("instanceId") and member.status.get("phase") in (
                "Launching", "Running") and not member.deleting:
            by_provider.setdefault(member.spec.get("provider", "local"), []).append(member)
    for name, group in by_provider.items():
        try:
            found = await rt.provider(name).describe([m.status["instanceId"] for m in group])
        except ProviderError as error:
            metrics.PROVIDER_CALLS.labels(name, "describe", "error").inc()
            logger.warning("describing instances of %s failed: %s", name, error)
            continue
        metrics.PROVIDER_CALLS.labels(name, "describe", "ok").inc()
        for member in group:
            instance = found.get(member.status["instanceId"])
            if instance is not None:
                await record_instance(rt, member, instance)


async def finalize(rt: Runtime, body: kopf.Body, **_: Any) -> None:
    """Deleting a launch: delete its members (each terminates its instance) and wait for them:
    the finalizer goes only when no instance is left."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    members = rt.cache.members_of(key)
    for member in members:
        if not member.deleting:
            await delete_member(rt, member)
    if members:
        raise kopf.TemporaryError(f"waiting for {len(members)} members to terminate", delay=1)
