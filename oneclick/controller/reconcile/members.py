"""LaunchMembers: created and deleted to match the spec, launched through their provider, their
instances watched, terminated when their launch ends or they are deleted."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Sequence

from oneclick.api import API_VERSION, FINALIZER
from oneclick.api.conditions import Condition, set_condition
from oneclick.api.launch import Role
from oneclick.api.member import (
    LaunchMemberSpec,
    MemberCondition,
    MemberPhase,
    MemberReason,
    member_phase,
)
from oneclick.api.times import format_time
from oneclick.controller import metrics
from oneclick.controller.broker import tokens
from oneclick.controller.cache import LaunchRecord, MemberRecord
from oneclick.controller.providers import (
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderError,
    userdata,
)
from oneclick.controller.runtime import Runtime
from oneclick.kits.kube import JSON, ApiError, Conflict, Invalid, NotFound
from oneclick.kits.resources import apply_body, custom_path

logger = logging.getLogger(__name__)

FIELD_MANAGER = "occ-controller"
CLUSTER_LABEL = "clusters.oneclick.dev/cluster"
ROLE_LABEL = "clusters.oneclick.dev/role"
OWNED_FIELDS = ("tokenHash", "instanceId", "addresses", "launchedAt", "brokerUrl")
OWNED_CONDITIONS = (MemberCondition.LAUNCHED, MemberCondition.RUNNING)


def member_name(cluster: str, role: str, index: int) -> str:
    return f"{cluster}-{role}-{index}"


def member_body(launch: LaunchRecord, role: Role, index: int, provider: str) -> JSON:
    return {
        "apiVersion": API_VERSION, "kind": "LaunchMember",
        "metadata": {
            "name": member_name(launch.name, role.name, index),
            "namespace": launch.namespace,
            "finalizers": [FINALIZER],  # released by release_deleted_members
            "labels": {CLUSTER_LABEL: launch.name, ROLE_LABEL: role.name},
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": "ClusterLaunch", "name": launch.name,
                "uid": launch.uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": LaunchMemberSpec(cluster=launch.name, role=role.name, index=index,
                                 image=role.image, size=role.size or None,
                                 provider=provider).wire(),
    }


async def create_member(rt: Runtime, launch: LaunchRecord, role: Role, index: int) -> None:
    provider = launch.spec.provider or rt.settings.default_provider
    body = member_body(launch, role, index, provider)
    with contextlib.suppress(Conflict):  # made before a crash: the cache will show it
        rt.cache.put_member(await rt.kube.create(custom_path("LaunchMember", launch.namespace),
                                                 body))


async def delete_member(rt: Runtime, member: MemberRecord) -> None:
    with contextlib.suppress(NotFound):  # (gone already)
        await rt.kube.delete(custom_path("LaunchMember", member.namespace, member.name))


async def write_status(rt: Runtime, member: MemberRecord, *, phase: str | None = None,
                       conditions: Sequence[tuple[str, bool, str, str]] = (),
                       **fields: object) -> None:
    """Apply the controller's part of a member's status (all of it: server-side apply drops
    the fields a manager stops sending)."""
    status: JSON = {k: member.status[k] for k in OWNED_FIELDS if k in member.status}
    status.update(fields)
    owned = [Condition.model_validate(c) for c in member.conditions
             if c.get("type") in OWNED_CONDITIONS]
    for type, ok, reason, message in conditions:
        owned = set_condition(owned, type, ok, reason, message)
    status["conditions"] = [c.wire() for c in owned]
    status["phase"] = phase or member_phase({**member.status, **status})
    body = apply_body("LaunchMember", member.name, member.namespace, status=status)
    path = custom_path("LaunchMember", member.namespace, member.name, "status")
    rt.cache.put_member(await rt.kube.apply(path, body, FIELD_MANAGER))


async def launch_member(rt: Runtime, member: MemberRecord) -> None:
    """Launch the member's instance: idempotent by the member's uid, so a relaunch after a
    crash finds the instance instead of making a second one."""
    provider_name = member.spec.provider
    try:
        provider = rt.provider(provider_name)
        bootstrap = rt.bootstrap(member, provider)
        token_hash = tokens.token_hash(bootstrap.token)
        if member.token_hash != token_hash:  # the hash is stored before the token leaves us
            await write_status(rt, member, tokenHash=token_hash, brokerUrl=bootstrap.broker_url)
            member = rt.cache.members[(member.namespace, member.name)]
        request = LaunchRequest(
            idempotency_key=member.uid, namespace=member.namespace, cluster=member.cluster,
            member=member.name, role=member.role, index=member.index,
            image=member.spec.image, size=member.spec.size,
            user_data=userdata.render(bootstrap))
        instance = await provider.launch(request)
    except ProviderError as error:
        metrics.PROVIDER_CALLS.labels(provider_name, "launch", "error").inc()
        logger.warning("launching %s failed: %s", member.name, error)
        if error.permanent:
            await write_status(rt, member, phase=MemberPhase.FAILED, conditions=[
                (MemberCondition.LAUNCHED, False, MemberReason.PROVIDER_ERROR, str(error))])
        return
    metrics.PROVIDER_CALLS.labels(provider_name, "launch", "ok").inc()
    logger.info("%s/%s: launched as %s by provider %s", member.namespace, member.name,
                instance.id, provider_name)
    fresh = rt.cache.members.get((member.namespace, member.name))
    if fresh is None or fresh.deleting or fresh.status.get("phase") == MemberPhase.TERMINATED:
        # Terminated (or deleted) while the provider was at work: its termination could not
        # see this instance yet, so it ends here, not left running unowned.
        logger.info("%s ended while it launched; terminating %s", member.name, instance.id)
        await provider.terminate([instance.id])
        return
    await record_instance(rt, fresh, instance, launched=True)


async def record_instance(rt: Runtime, member: MemberRecord, instance: Instance,
                          launched: bool = False) -> None:
    """Write what the provider says of the member's instance, when it says something new."""
    fields: JSON = {"instanceId": instance.id, "addresses": instance.addresses}
    conditions = []
    if launched and not member.status.get("launchedAt"):
        fields["launchedAt"] = format_time(datetime.datetime.now(datetime.UTC))
        conditions.append((MemberCondition.LAUNCHED, True, MemberReason.PROVIDER_ACCEPTED,
                           f"instance {instance.id}"))
    if instance.state == InstanceState.RUNNING:
        conditions.append((MemberCondition.RUNNING, True, MemberReason.INSTANCE_RUNNING,
                           f"at {', '.join(instance.addresses)}"))
    elif instance.state == InstanceState.FAILED:
        conditions.append((MemberCondition.RUNNING, False, MemberReason.INSTANCE_FAILED,
                           instance.message))
    phase = member_phase({**member.status, **fields}, instance.state.value)
    current = {c.get("type"): c.get("status") for c in member.conditions}
    changed = (any(member.status.get(k) != v for k, v in fields.items())
               or member.status.get("phase") != phase
               or any(current.get(t) != str(ok) for t, ok, _, _ in conditions))
    if changed:
        await write_status(rt, member, phase=phase, conditions=conditions, **fields)


async def terminate_members(rt: Runtime, members: list[MemberRecord],
                            mark: bool = True) -> None:
    """Terminate the members' instances (batched per provider) and, with `mark`, say so in
    their status."""
    by_provider: dict[str, list[MemberRecord]] = {}
    for member in members:
        if member.status.get("phase") != MemberPhase.TERMINATED:
            by_provider.setdefault(member.spec.provider, []).append(member)
    for name, group in by_provider.items():
        provider = rt.provider(name)
        ids = [m.status["instanceId"] for m in group if m.status.get("instanceId")]
        for m in group:  # a launch that crashed before its instance id was written
            if not m.status.get("instanceId"):
                found = await provider.lookup(m.uid)
                if found is not None:
                    ids.append(found.id)
        try:
            await provider.terminate(ids)
        except ProviderError:
            metrics.PROVIDER_CALLS.labels(name, "terminate", "error").inc()
            raise
        metrics.PROVIDER_CALLS.labels(name, "terminate", "ok").inc()
        if ids:
            logger.info("provider %s terminated %d instances of %s: %s%s", name, len(ids),
                        ", ".join(sorted({f"{m.namespace}/{m.cluster}" for m in group})),
                        ", ".join(ids[:5]), " ..." if len(ids) > 5 else "")
        for member in group if mark else ():
            await write_status(rt, member, phase=MemberPhase.TERMINATED, conditions=[
                (MemberCondition.RUNNING, False, MemberReason.TERMINATED,
                 "the instance was terminated")])


async def release_deleted_members(rt: Runtime, every: float = 1.0) -> None:
    """A deleted member goes only after its instance (a scale-down, a deleted launch, or
    kubectl): each one being deleted is terminated, then our finalizer is taken off it. A
    sweep of the cache each second, so a restarted controller finishes what it had begun."""
    releasing: set[str] = set()

    async def release(member: MemberRecord) -> None:
        try:
            await terminate_members(rt, [member], mark=False)
            path = custom_path("LaunchMember", member.namespace, member.name)
            await rt.kube.json_patch(path, [
                {"op": "test", "path": "/metadata/finalizers", "value": list(member.finalizers)},
                {"op": "replace", "path": "/metadata/finalizers",
                 "value": [f for f in member.finalizers if f != FINALIZER]}])
        except ApiError as error:
            # (gone, or changed: the next sweep sees it)
            if not isinstance(error, NotFound | Conflict | Invalid):
                logger.warning("releasing %s: %s", member.name, error)
        except ProviderError as error:
            logger.warning("terminating %s: %s (will try again)", member.name, error)
        except Exception:
            logger.exception("releasing %s (will try again)", member.name)
        finally:
            releasing.discard(member.uid)

    while True:
        for member in list(rt.cache.members.values()):
            if (member.deleting and FINALIZER in member.finalizers and not member.paused
                    and member.uid not in releasing):
                releasing.add(member.uid)
                rt.spawn(release(member))
        await asyncio.sleep(every)
