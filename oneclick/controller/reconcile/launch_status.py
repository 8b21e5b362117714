"""A launch's status as a pure function of its spec, its members and the time: conditions first,
the phase a summary of them (as the API conventions ask). `compute_status` is the whole of it:
the reconciler gathers what it needs (`Observed`), and acts on what it returns (`Outcome`).

Each condition has a small function of its own (`members_launched`, `members_running`,
`data_delivered`, `contextualized`); Ready and Failed come from one decision (`decide`: failed,
expired, or on its way), as Cluster API's cluster status does."""

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
from oneclick.api.member import MemberCondition, MemberPhase, has_run
from oneclick.api.times import format_time, parse_time
from oneclick.controller.broker.data import LaunchData
from oneclick.controller.cache import MemberRecord
from oneclick.controller.reconcile import heard, requeue
from oneclick.kits.kube import JSON

# Conditions are listed in the order of the enum: a launch's life, from launching to its end.
_ORDER = {str(type): i for i, type in enumerate(LaunchCondition)}
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


@dataclass(frozen=True)
class Verdict:
    """One condition as this pass finds it: whether it holds, why, and what to tell the user."""

    ok: bool
    reason: str
    message: str = ""


def members_launched(counts: MemberCounts) -> Verdict:
    done = counts.launched == counts.total
    return Verdict(done, LaunchReason.ALL_LAUNCHED if done else LaunchReason.LAUNCHING,
                   f"{counts.launched} of {counts.total} members launched")


def members_running(counts: MemberCounts) -> Verdict:
    done = counts.running == counts.total
    return Verdict(done, LaunchReason.ALL_RUNNING if done else LaunchReason.BOOTING,
                   f"{counts.running} of {counts.total} members running")


def data_delivered(found: LaunchData) -> Verdict:
    """Whether every data item a role requires can be delivered, else why each withheld one
    is not."""
    if not found.problems:
        return Verdict(True, LaunchReason.DATA_AVAILABLE,
                       f"{len(found.values)} data items available to the roles that require "
                       "them")
    problems = sorted(found.problems.values(), key=lambda p: p.item)
    return Verdict(False, problems[0].reason.value, "; ".join(p.message for p in problems))


def contextualized(counts: MemberCounts, silent: list[heard.Silence]) -> Verdict:
    done = counts.contextualized == counts.total
    return Verdict(done, LaunchReason.ALL_REPORTED if done else LaunchReason.WAITING,
                   f"{counts.contextualized} of {counts.total} members contextualized"
                   + (f"; {heard.describe(silent)}" if silent else ""))


@dataclass(frozen=True)
class Decision:
    """What a launch that has not ended is now: its phase, whether its instances end now, and
    its Ready and Failed conditions (Failed None: left as it is)."""

    phase: LaunchPhase
    terminate: bool
    ready: Verdict
    failed: Verdict | None


def decide(seen: Observed, counts: MemberCounts, running_since: datetime.datetime | None,
           expires: datetime.datetime) -> Decision:
    """Failed (no provider for it, or a member's failure, or a timeout), Expired, or on its
    way: Pending, Launching, Contextualizing, Ready."""
    spec, now = seen.spec, seen.now
    if seen.unknown_provider is not None:
        why = seen.unknown_provider
        return Decision(LaunchPhase.FAILED, False,
                        ready=Verdict(False, LaunchReason.UNKNOWN_PROVIDER, why),
                        failed=Verdict(True, LaunchReason.UNKNOWN_PROVIDER, why))
    if now >= expires:
        return Decision(LaunchPhase.EXPIRED, True, failed=None, ready=Verdict(
            False, LaunchReason.EXPIRED, f"the launch's lifetime ended at "
            f"{format_time(expires)}; every instance was terminated"))
    failed = failure(spec, seen.members, seen.created, running_since, now, seen.last_heard)
    if failed is not None:
        terminate = spec.on_failure != FailurePolicy.KEEP
        return Decision(LaunchPhase.FAILED, terminate,
                        ready=Verdict(False, failed.reason, failed.message),
                        failed=Verdict(True, failed.reason, failed.message + (
                            "; every instance was terminated (reports are kept)"
                            if terminate else "")))
    done = counts.contextualized == counts.total
    phase = (LaunchPhase.READY if done else
             LaunchPhase.CONTEXTUALIZING if counts.running == counts.total else
             LaunchPhase.LAUNCHING if seen.members else LaunchPhase.PENDING)
    no_failure = find_condition(_conditions(seen.previous), LaunchCondition.FAILED) is None
    return Decision(phase, False, ready=Verdict(
        done, LaunchReason.CONTEXTUALIZED if done else LaunchReason.WAITING,
        "every member is contextualized" if done else
        f"{counts.contextualized} of {counts.total} members contextualized"),
        failed=Verdict(False, LaunchReason.NO_FAILURE) if no_failure else None)


def count(spec: ClusterLaunchSpec, members: list[MemberRecord]) -> MemberCounts:
    wanted = set(desired_members(spec))
    current = [m for m in members if (m.role, m.index) in wanted]
    return MemberCounts(
        total=len(wanted),
        launched=sum(1 for m in current if m.status.get("instanceId")),
        running=sum(1 for m in current if has_run(m.status)),
        identified=sum(1 for m in current if m.identity is not None),
        contextualized=sum(1 for m in current if m.report and m.report.get("ok")),
        failed=sum(1 for m in current if m.report is not None and not m.report.get("ok")),
    )


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
    """The launch's status from what was observed; no I/O. Its conditions first, one function
    each, then the phase that sums them up."""
    previous_phase = seen.previous.get("phase")
    phase = LaunchPhase(previous_phase) if previous_phase else None
    expires = seen.created + parse_duration(seen.spec.lifetime)
    conditions = _conditions(seen.previous)

    def put(type: LaunchCondition, verdict: Verdict) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type, verdict.ok, verdict.reason,
                                   verdict.message, seen.generation)

    counts = count(seen.spec, seen.members)
    put(LaunchCondition.MEMBERS_LAUNCHED, members_launched(counts))
    put(LaunchCondition.MEMBERS_RUNNING, members_running(counts))
    running_since = _since(conditions, LaunchCondition.MEMBERS_RUNNING)
    if seen.data is not None:
        put(LaunchCondition.DATA_DELIVERED, data_delivered(seen.data))
    settled = counts.contextualized == counts.total or ended(phase)
    put(LaunchCondition.CONTEXTUALIZED, contextualized(counts, [] if settled else heard.silences(
        seen.members, seen.last_heard, seen.now, seen.started)))

    terminate = False
    if not ended(phase):  # (once ended, nothing is decided again)
        decision = decide(seen, counts, running_since, expires)
        phase, terminate = decision.phase, decision.terminate
        if decision.failed is not None:
            put(LaunchCondition.FAILED, decision.failed)
        put(LaunchCondition.READY, decision.ready)

    conditions.sort(key=lambda c: _ORDER.get(c.type, len(_ORDER)))
    ready_at = seen.previous.get("readyAt")
    status = ClusterLaunchStatus(
        phase=phase, conditions=conditions, observed_generation=seen.generation,
        expires_at=expires, members=counts,
        ready_members=f"{counts.contextualized}/{counts.total}",
        head_node=head_node(seen.spec, seen.members),
        ready_at=parse_time(ready_at) if ready_at else (
            seen.now.replace(microsecond=0) if phase == LaunchPhase.READY else None))
    return Outcome(status, terminate, running_since, next_pass(phase, expires, seen.now))


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


def _conditions(status: JSON) -> list[Condition]:
    return [Condition.model_validate(c) for c in status.get("conditions", [])]


def _since(conditions: list[Condition], type: str) -> datetime.datetime | None:
    found = find_condition(conditions, type)
    if found is None or found.status != ConditionStatus.TRUE:
        return None
    return found.last_transition_time
