"""The reconcile loop of one ClusterLaunch: a pass whenever the launch or one of its members
changes, or when the last pass's deadline comes (`requeue`), until the launch is deleted.

Each pass converges, whatever happened before it (a crash included): members are created or
deleted to match the spec, members without an instance are launched (idempotently), instances
are described in one batch per provider, and the launch's status is computed from its members
and written only when it changed. Expiry and failure terminate every instance.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any, cast

import kopf

from oneclick.api.conditions import condition_of
from oneclick.api.launch import LaunchCondition, LaunchPhase, LaunchReason
from oneclick.api.member import MemberPhase
from oneclick.api.times import parse_time
from oneclick.controller import metrics
from oneclick.controller.broker.data import DataUnavailable, LaunchData, read_data
from oneclick.controller.cache import LaunchRecord, MemberRecord
from oneclick.controller.providers import ProviderError
from oneclick.controller.reconcile import generated, heard, launch_status, requeue
from oneclick.controller.reconcile.members import (
    FIELD_MANAGER,
    create_member,
    delete_member,
    launch_member,
    record_instance,
    terminate_members,
)
from oneclick.controller.reconcile.refresh import refresh_moved
from oneclick.controller.runtime import Runtime
from oneclick.kits.kube import JSON, ApiError
from oneclick.kits.resources import apply_body, custom_path

logger = logging.getLogger(__name__)

RETRY_CAP = 60.0  # seconds: the longest wait before a pass that failed is tried again


async def run(rt: Runtime, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
    """Pass after pass, each when the previous one's deadline comes or something of the launch
    changes, until stopped (the launch deleted or paused, the controller stopping). A pass
    that fails is logged and tried again, waiting twice as long each time (up to RETRY_CAP)."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    rt.wakeups.watch(key)
    retry = requeue.ACTIVE
    while not stopped:
        started = time.monotonic()
        # The launch as the watch cache has it: fresher than kopf's copy (our own status
        # writes are in it at once).
        cached = rt.cache.launches.get(key)
        launch = cached.obj if cached is not None else dict(body)
        try:
            after = await reconcile(rt, launch)
            retry = requeue.ACTIVE
        except Exception:
            logger.exception("launch %s/%s: reconciling failed (next try in %.0f s)",
                             *key, retry)
            after, retry = retry, min(retry * 2, RETRY_CAP)
        metrics.RECONCILE_PASSES.labels(
            str((launch.get("status") or {}).get("phase") or "Pending")).inc()
        await rt.wakeups.wait(key, after, started)


async def reconcile(rt: Runtime, body: JSON) -> float | None:
    """One pass, as Cluster API's controllers make one: the launch's phase picks what is done
    (`_reconcile_normal` while it lives; nothing once it has ended), the status is computed
    from what is observed (`status.compute_status`, no I/O), the instances end when it
    says so, and the status is written once, when it changed (`_write_status`). Returns when
    the next pass is due if nothing happens (seconds; None: only on a change)."""
    launch = LaunchRecord.from_object(body)
    key = (launch.namespace, launch.name)
    previous: JSON = dict(body.get("status") or {})
    phase = previous.get("phase")
    unknown, data = None, None
    if not launch_status.ended(phase):
        unknown, data = await _reconcile_normal(rt, launch, phase)
    members = [m for m in rt.cache.members_of(key) if not m.deleting]
    now = datetime.datetime.now(datetime.UTC)
    created = parse_time(body["metadata"]["creationTimestamp"])
    outcome = launch_status.compute_status(launch_status.Observed(
        spec=launch.spec, members=members, previous=previous,
        generation=body["metadata"].get("generation"), created=created, now=now,
        last_heard=heard.last_heard_by(rt.broker.hearing), started=rt.started,
        unknown_provider=unknown, data=data))
    if outcome.terminate:
        await terminate_members(rt, members)
    await _write_status(rt, launch, body, previous, outcome, created, now)
    return outcome.requeue_after


async def _reconcile_normal(rt: Runtime, launch: LaunchRecord,
                            phase: str | None) -> tuple[str | None, LaunchData | None]:
    """A launch that has not ended: its generated data made, its members made or removed to
    match the spec and launched, their instances polled, bootstraps naming a broker that moved
    handed over again. Returns why its provider can never serve it (if so: nothing is made)
    and its data items as read now (None once it is Ready: delivered data is not read again)."""
    key = (launch.namespace, launch.name)
    # A provider nobody configured fails the launch at once, before anything is made (once
    # members exist, their own provider errors say what went wrong).
    unknown = None if rt.cache.members_of(key) else rt.unknown_provider(launch.spec.provider)
    if unknown is None:
        if phase != LaunchPhase.READY:  # (before members: they are made with it)
            await _ensure_generated(rt, launch)
        await _converge_members(rt, launch)
        await _poll_instances(rt, rt.cache.members_of(key))
        refresh_moved(rt, rt.cache.members_of(key))
    return unknown, await _read_data(rt, launch) if phase != LaunchPhase.READY else None


async def _write_status(rt: Runtime, launch: LaunchRecord, body: JSON, previous: JSON,
                        outcome: launch_status.Outcome, created: datetime.datetime,
                        now: datetime.datetime) -> None:
    """The status, applied when it differs from what the API server has, with the events of
    the conditions that just became true; the cache gets the written object at once."""
    new_status = outcome.status.wire()
    if not _differs(previous, new_status):
        return
    counts = new_status["members"]
    if previous.get("phase") != new_status["phase"]:
        logger.info("launch %s/%s: %s -> %s (%s of %s members contextualized)",
                    launch.namespace, launch.name, previous.get("phase") or "new",
                    new_status["phase"], counts["contextualized"], counts["total"])
    else:
        logger.debug("launch %s/%s: status changed", launch.namespace, launch.name)
    _announce(body, previous, new_status, created, outcome.running_since, now)
    written = await rt.kube.apply(
        custom_path("ClusterLaunch", launch.namespace, launch.name, "status"),
        apply_body("ClusterLaunch", launch.name, launch.namespace, status=new_status),
        FIELD_MANAGER)
    rt.cache.put_launch(written)  # (the next pass starts from it, not from the watch's lag)


async def _read_data(rt: Runtime, launch: LaunchRecord) -> LaunchData | None:
    """The launch's data items as they are now; None when they cannot be read this pass."""
    try:
        return await read_data(rt.kube, launch.namespace, launch.spec, launch.uid)
    except DataUnavailable as error:
        logger.warning("launch %s/%s: %s", launch.namespace, launch.name, error)
        return None


async def _ensure_generated(rt: Runtime, launch: LaunchRecord) -> None:
    """The launch's generated data items (shared secrets), made once; a refusal is logged and
    tried again next pass (members wait, and DataDelivered says the item is not there yet)."""
    try:
        await generated.ensure(rt.kube, launch)
    except ApiError as error:
        logger.warning("launch %s/%s: cannot make its generated data items: %s",
                       launch.namespace, launch.name, error)


def _differs(old: JSON, new: JSON) -> bool:
    return any(old.get(k) != v for k, v in new.items())


def _announce(body: JSON, old: JSON, new: JSON, created: datetime.datetime,
              running_since: datetime.datetime | None, now: datetime.datetime) -> None:
    """Events (and duration metrics) for each condition that just became true."""
    target = kopf.Body(cast(kopf.RawBody, body))
    before = {c["type"]: c["status"] for c in old.get("conditions", [])}
    said = {c["type"]: c.get("message") for c in old.get("conditions", [])}
    for condition in new["conditions"]:
        type, message = condition["type"], condition["message"]
        if type == LaunchCondition.DATA_DELIVERED and condition["status"] == "False":
            if said.get(type) != message:  # why data is withheld
                kopf.event(target, type="Warning", reason=condition["reason"], message=message)
            continue
        if condition["status"] != "True" or before.get(type) == "True":
            continue
        kind = "Warning" if type == LaunchCondition.FAILED else "Normal"
        kopf.event(target, type=kind, reason=condition["reason"], message=message)
        if type == LaunchCondition.MEMBERS_RUNNING:
            metrics.LAUNCH_SECONDS.observe((now - created).total_seconds())
        if type == LaunchCondition.READY and running_since is not None:
            metrics.CONTEXTUALIZATION_SECONDS.observe((now - running_since).total_seconds())
    if new["phase"] == LaunchPhase.EXPIRED and old.get("phase") != LaunchPhase.EXPIRED:
        why = condition_of(new, LaunchCondition.READY).get("message") or "expired"
        kopf.event(target, type="Normal", reason=LaunchReason.EXPIRED, message=why)


async def _converge_members(rt: Runtime, launch: LaunchRecord) -> None:
    members = {(m.role, m.index): m for m in rt.cache.members_of((launch.namespace,
                                                                   launch.name))}
    desired = launch_status.desired_members(launch.spec)
    roles = {r.name: r for r in launch.spec.roles}
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
                and fresh.status.get("phase") != MemberPhase.FAILED
                and fresh.uid not in rt.launching):
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
                MemberPhase.LAUNCHING, MemberPhase.RUNNING) and not member.deleting:
            by_provider.setdefault(member.spec.provider, []).append(member)
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
