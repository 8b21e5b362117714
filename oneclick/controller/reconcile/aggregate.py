"""A launch's status as a pure function of its spec, its members and the time: conditions first,
the phase a summary of them (as the API conventions ask). `compute_status` is the whole of it:
the reconciler gathers what it needs (`Observed`), and acts on what it returns (`Outcome`)."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from oneclick.api.conditions import (
    Condition,
    ConditionStatus,
    condition_of,
    find_condition,
    set_condition,
)
from oneclick.api.launch import (
    ClusterLaunchSpec,
    ClusterLaunchStatus,
    FailurePolicy,
    LaunchCondition,
    LaunchPhase,
    LaunchReason,
    MemberCounts,
)
from oneclick.api.member import MemberCondition, MemberPhase
from oneclick.api.times import format_time, parse_time
from oneclick.controller.broker.data import LaunchData
from oneclick.controller.cache import MemberRecord
from oneclick.controller.reconcile import heard, requeue
from oneclick.kits.kube import JSON

_DURATION = re.compile(r"(\d+)([hms])")
_UNIT = {"h": 3600, "m": 60, "s": 1}



def parse_duration(text: str) -> datetime.timedelta:
    return datetime.timedelta(seconds=sum(int(n) * _UNIT[u] for n, u in _DURATION.findall(text)))


def desired_members(spec: ClusterLaunchSpec) -> list[tuple[str, int]]:
    """(role, index) of every member the spec asks for, in launch order."""
    return [(role.name, i) for role in spec.roles for i in range(role.quantity)]


def ended(phase: str | None) -> bool:
    """Whether a launch in this phase (as its status has it) has ended."""
    return phase in (LaunchPhase.FAILED, LaunchPhase.EXPIRED)


@dataclass(frozen=True)
class Failure:
    reason: LaunchReason
    message: str


def failure(spec: ClusterLaunchSpec, members: list[MemberRecord], created: datetime.datetime,
            all_running_since: datetime.datetime | None, now: datetime.datetime,
            last_heard: heard.LastHeard | None = None) -> Failure | None:
    """Why the launch has failed, if it has: a member's error report, a dead instance, or a
    stage that took longer than its timeout."""
    for member in members:
        if member.report is not None and not member.report.get("ok"):
            step = member.report.get("failedStep") or "contextualization"
            return Failure(LaunchReason.CONTEXTUALIZATION_FAILED,
                           f"{member.name}: {step} exited with code "
                           f"{member.report.get('exitCode')}: {member.report.get('message', '')}")
        if member.status.get("phase") == MemberPhase.FAILED and member.report is None:
            launched = condition_of(member.status, MemberCondition.LAUNCHED)
            if launched.get("status") == "False":  # the provider could not make it
                return Failure(LaunchReason.LAUNCH_FAILED,
                               f"{member.name}: {launched.get('message', '')}")
            return Failure(LaunchReason.INSTANCE_FAILED, f"{member.name}: " + str(
                condition_of(member.status, MemberCondition.RUNNING).get(
                    "message", "its instance failed")))
    if all_running_since is None:
        limit = parse_duration(spec.timeouts.launch)
        if now - created > limit:
            return Failure(LaunchReason.LAUNCH_TIMEOUT,
                           f"not every member was running within {limit}")
    else:
        limit = parse_duration(spec.timeouts.contextualization)
        if now - all_running_since > limit and not all(
                m.report is not None for m in members):
            return _timed_out(limit, members, all_running_since,
                              last_heard or heard.last_heard_by(None))
    return None


def _timed_out(limit: datetime.timedelta, members: list[MemberRecord],
               running_since: datetime.datetime, last_heard: heard.LastHeard) -> Failure:
    """Contextualization took too long: which members kept us waiting, and whether the broker
    heard from them at all (if from none since they run, it is likely out of their reach)."""
    waiting = [m for m in members if m.report is None]
    urls = sorted({str(m.status["brokerUrl"]) for m in waiting if m.status.get("brokerUrl")})
    broker = f"the broker at {' or '.join(urls)}" if urls else "the broker"
    names = heard.names([m.name for m in waiting])
    if not any((t := last_heard(m)) is not None and t >= running_since for m in members):
        return Failure(LaunchReason.BROKER_UNREACHABLE,
                       f"no member was heard from within {limit} of running: {broker} may be "
                       f"unreachable from them; still waiting for {names}")
    never = [m.name for m in waiting if last_heard(m) is None]
    return Failure(LaunchReason.CONTEXTUALIZATION_TIMEOUT,
                   f"not every member reported within {limit}; still waiting for {names}"
                   + (f"; never heard from: {heard.names(never)} ({broker} may be "
                      "unreachable from them)" if never else ""))


def data_delivered(found: LaunchData) -> tuple[bool, str, str]:
    """The DataDelivered condition (status, reason, message): whether every data item a role
    requires can be delivered, else why each withheld one is not."""
    if not found.problems:
        return True, LaunchReason.DATA_AVAILABLE, (
            f"{len(found.values)} data items available to the roles that require them")
    problems = sorted(found.problems.values(), key=lambda p: p.item)
    return False, problems[0].reason.value, "; ".join(p.message for p in problems)


def count(spec: ClusterLaunchSpec, members: list[MemberRecord]) -> MemberCounts:
    wanted = set(desired_members(spec))
    current = [m for m in members if (m.role, m.index) in wanted]
    return MemberCounts(
        total=len(wanted),
        launched=sum(1 for m in current if m.status.get("instanceId")),
        running=sum(1 for m in current if _ran(m)),
        identified=sum(1 for m in current if m.identity is not None),
        contextualized=sum(1 for m in current if m.report and m.report.get("ok")),
        failed=sum(1 for m in current if m.report is not None and not m.report.get("ok")),
    )


def _ran(member: MemberRecord) -> bool:
    """Its instance runs, or ran: a failed member counts only if its agent spoke (one its
    provider never made has not run, and "all members running" would be false)."""
    phase = member.status.get("phase")
    return phase in (MemberPhase.RUNNING, MemberPhase.CONTEXTUALIZING, MemberPhase.READY) or (
        phase == MemberPhase.FAILED and (member.report is not None
                                         or member.identity is not None))


def head_node(spec: ClusterLaunchSpec, members: list[MemberRecord]) -> str | None:
    """The first member of the first role: where the user logs in."""
    if not spec.roles:
        return None
    first = spec.roles[0].name
    for member in members:
        if member.role == first and member.index == 0 and member.identity:
            return str(member.identity.get("fqdn") or member.identity.get("hostname"))
    return None


@dataclass(frozen=True)
class Observed:
    """What one launch's status is computed from, gathered by the reconciler."""

    spec: ClusterLaunchSpec
    members: list[MemberRecord]  # those not being deleted
    previous: JSON  # the status as the API server has it
    generation: int | None
    created: datetime.datetime
    now: datetime.datetime
    last_heard: heard.LastHeard
    started: datetime.datetime  # when this controller started (silences count from then)
    unknown_provider: str | None = None  # why no configured provider can serve the launch
    data: LaunchData | None = None  # its data items, read this pass (None: not read)


@dataclass(frozen=True)
class Outcome:
    status: ClusterLaunchStatus  # the whole status the controller owns
    terminate: bool  # the instances end now (expired, or failed and not kept)
    running_since: datetime.datetime | None  # when every member first ran
    # seconds until time alone may change the status (None: only an event can)
    requeue_after: float | None = None


def compute_status(seen: Observed) -> Outcome:
    """The launch's status from what was observed; no I/O."""
    status, spec, members, now = seen.previous, seen.spec, seen.members, seen.now
    expires = seen.created + parse_duration(spec.lifetime)
    conditions = [Condition.model_validate(c) for c in status.get("conditions", [])]
    previous_phase = status.get("phase")
    phase = LaunchPhase(previous_phase) if previous_phase else None

    def put(type: LaunchCondition, ok: bool, reason: LaunchReason | str,
            message: str = "") -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type, ok, reason, message, seen.generation)

    counts = count(spec, members)
    all_launched = counts.launched == counts.total
    put(LaunchCondition.MEMBERS_LAUNCHED, all_launched,
        LaunchReason.ALL_LAUNCHED if all_launched else LaunchReason.LAUNCHING,
        f"{counts.launched} of {counts.total} members launched")
    all_running = counts.running == counts.total
    put(LaunchCondition.MEMBERS_RUNNING, all_running,
        LaunchReason.ALL_RUNNING if all_running else LaunchReason.BOOTING,
        f"{counts.running} of {counts.total} members running")
    running_since = _since(conditions, LaunchCondition.MEMBERS_RUNNING)
    if seen.data is not None:
        put(LaunchCondition.DATA_DELIVERED, *data_delivered(seen.data))
    done = counts.contextualized == counts.total
    silent = [] if done or ended(phase) else heard.silences(
        members, seen.last_heard, now, seen.started)
    put(LaunchCondition.CONTEXTUALIZED, done,
        LaunchReason.ALL_REPORTED if done else LaunchReason.WAITING,
        f"{counts.contextualized} of {counts.total} members contextualized"
        + (f"; {heard.describe(silent)}" if silent else ""))

    terminate = False
    if not ended(phase):
        if seen.unknown_provider is not None:
            phase = LaunchPhase.FAILED
            put(LaunchCondition.FAILED, True, LaunchReason.UNKNOWN_PROVIDER,
                seen.unknown_provider)
            put(LaunchCondition.READY, False, LaunchReason.UNKNOWN_PROVIDER,
                seen.unknown_provider)
        elif now >= expires:
            phase, terminate = LaunchPhase.EXPIRED, True
            put(LaunchCondition.READY, False, LaunchReason.EXPIRED, f"the launch's lifetime "
                f"ended at {format_time(expires)}; every instance was terminated")
        elif (failed := failure(spec, members, seen.created, running_since, now,
                                seen.last_heard)) is not None:
            phase = LaunchPhase.FAILED
            terminate = spec.on_failure != FailurePolicy.KEEP
            put(LaunchCondition.FAILED, True, failed.reason, failed.message + (
                "; every instance was terminated (reports are kept)" if terminate else ""))
            put(LaunchCondition.READY, False, failed.reason, failed.message)
        else:
            phase = (LaunchPhase.READY if done else LaunchPhase.CONTEXTUALIZING if all_running
                     else LaunchPhase.LAUNCHING if members else LaunchPhase.PENDING)
            put(LaunchCondition.READY, done,
                LaunchReason.CONTEXTUALIZED if done else LaunchReason.WAITING,
                "every member is contextualized" if done else
                f"{counts.contextualized} of {counts.total} members contextualized")
            if find_condition(conditions, LaunchCondition.FAILED) is None:
                put(LaunchCondition.FAILED, False, LaunchReason.NO_FAILURE, "")

    ready_at = status.get("readyAt")
    new = ClusterLaunchStatus(
        phase=phase, conditions=conditions,
        observed_generation=seen.generation, expires_at=expires, members=counts,
        ready_members=f"{counts.contextualized}/{counts.total}",
        head_node=head_node(spec, members),
        ready_at=parse_time(ready_at) if ready_at else (
            now.replace(microsecond=0) if phase == LaunchPhase.READY else None))
    return Outcome(new, terminate, running_since, next_pass(phase, expires, now))


def next_pass(phase: str | None, expires: datetime.datetime,
              now: datetime.datetime) -> float | None:
    """When a launch in `phase` needs its next pass if nothing happens to it: an ended launch
    never; a Ready one when it expires (at most RESYNC away); one on its way every second
    (its instances are polled, its timeouts and its members' silences counted)."""
    if ended(phase):
        return None
    if phase == LaunchPhase.READY:
        return min(max((expires - now).total_seconds(), 0.0), requeue.RESYNC)
    return requeue.ACTIVE


def _since(conditions: list[Condition], type: str) -> datetime.datetime | None:
    found = find_condition(conditions, type)
    if found is None or found.status != ConditionStatus.TRUE:
        return None
    return found.last_transition_time
