"""A launch's status as a pure function (`launch_status.compute_status`): from its spec, its
members as the cache has them and the time, the phase, the conditions, and whether its
instances end now. No API server: each case is a moment of a launch's life."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from oneclick.api.launch import ClusterLaunchSpec, FailurePolicy
from oneclick.api.member import LaunchMemberSpec, member_phase
from oneclick.controller.broker.data import LaunchData
from oneclick.controller.cache import MemberRecord
from oneclick.controller.reconcile import heard, launch_status, requeue

CREATED = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
SPEC = ClusterLaunchSpec.model_validate({"lifetime": "1h", "roles": [
    {"name": "head", "image": "base-cluster"},
    {"name": "compute", "image": "base-cluster", "quantity": 2}]})
IDENTITY = {"hostname": "h", "fqdn": "h.oneclick.local", "addresses": ["10.0.0.1"],
            "sshHostKeys": []}


def member(role: str, index: int, phase: str = "Running", *, launched: bool = True,
           identity: bool = False, report: dict[str, Any] | None = None,
           conditions: list[dict[str, Any]] | None = None) -> MemberRecord:
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if launched:
        status["instanceId"] = f"i-{role}-{index}"
    return MemberRecord(namespace="ns", name=f"c-{role}-{index}", uid=f"u-{role}-{index}",
                        cluster="c", role=role, index=index, resource_version="1",
                        spec=LaunchMemberSpec(cluster="c", role=role, index=index,
                                              image="base-cluster", provider="local"),
                        identity=dict(IDENTITY) if identity or report else None,
                        report=report, conditions=conditions or [], status=status)


def condition(type: str, status: str, reason: str, message: str = "",
              at: datetime.datetime = CREATED) -> dict[str, Any]:
    return {"type": type, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": at.strftime("%Y-%m-%dT%H:%M:%SZ")}


def all_three(phase: str = "Running", **kwargs: Any) -> list[MemberRecord]:
    return [member("head", 0, phase, **kwargs), member("compute", 0, phase, **kwargs),
            member("compute", 1, phase, **kwargs)]


OK = {"ok": True, "message": "contextualized"}


@dataclass
class Case:
    members: list[MemberRecord]
    minutes: float  # since the launch was made
    phase: str
    terminate: bool = False
    ready: str = "False"
    reason: str = ""  # the Ready condition's reason (or Failed's, for a failure)
    spec: ClusterLaunchSpec = field(default_factory=lambda: SPEC)
    previous: dict[str, Any] = field(default_factory=dict)
    unknown_provider: str | None = None


CASES = {
    "nothing made yet": Case([], 0.1, "Pending", reason="Waiting"),
    "members launching": Case(all_three("Launching"), 1, "Launching", reason="Waiting"),
    "all running, none reported": Case(all_three(), 2, "Contextualizing", reason="Waiting"),
    "all reported ok": Case(all_three("Ready", report=OK), 3, "Ready", ready="True",
                            reason="Contextualized"),
    "one failed report": Case(
        [member("head", 0, "Failed", report={"ok": False, "failedStep": "roles.d/x",
                                            "exitCode": 3, "message": "boom"}),
         member("compute", 0), member("compute", 1)], 3, "Failed", terminate=True,
        reason="ContextualizationFailed"),
    "one failed report, kept": Case(
        [member("head", 0, "Failed", report={"ok": False, "exitCode": 3}),
         member("compute", 0), member("compute", 1)], 3, "Failed", terminate=False,
        reason="ContextualizationFailed",
        spec=SPEC.model_copy(update={"on_failure": FailurePolicy.KEEP})),
    "launching too long": Case(all_three("Launching"), 16, "Failed", terminate=True,
                               reason="LaunchTimeout"),
    "lifetime over": Case(all_three("Ready", report=OK), 61, "Expired", terminate=True,
                          reason="Expired"),
    "no such provider": Case([], 0.1, "Failed", reason="UnknownProvider",
                             unknown_provider="no provider named 'moon' is configured"),
    "the provider refused a member": Case(
        [member("head", 0, "Failed", launched=False, conditions=[condition(
            "Launched", "False", "ProviderError", "no image named moon")]),
         member("compute", 0), member("compute", 1)], 1, "Failed", terminate=True,
        reason="LaunchFailed"),
    "an instance died": Case(
        [member("head", 0, "Failed", conditions=[
            condition("Launched", "True", "ProviderAccepted"),
            condition("Running", "False", "InstanceFailed", "its process exited")]),
         member("compute", 0), member("compute", 1)], 2, "Failed", terminate=True,
        reason="InstanceFailed"),
    "contextualizing too long, nobody heard": Case(
        all_three(), 20, "Failed", terminate=True, reason="BrokerUnreachable",
        previous={"conditions": [condition("MembersRunning", "True", "AllRunning",
                                           at=CREATED + datetime.timedelta(minutes=1))]}),
    "contextualizing too long, one silent": Case(
        [member("head", 0, "Ready", report=OK, conditions=[condition(
            "IdentityProvided", "True", "AgentReported", at=CREATED + datetime.timedelta(
                minutes=2))]),
         member("compute", 0), member("compute", 1)], 20, "Failed", terminate=True,
        reason="ContextualizationTimeout",
        previous={"conditions": [condition("MembersRunning", "True", "AllRunning",
                                           at=CREATED + datetime.timedelta(minutes=1))]}),
    "expired stays expired": Case(all_three("Terminated", report=OK), 90, "Expired",
                                  previous={"phase": "Expired"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_status_of_a_launch_at(name: str) -> None:
    case = CASES[name]
    outcome = launch_status.compute_status(launch_status.Observed(
        spec=case.spec, members=case.members, previous=case.previous, generation=1,
        created=CREATED, now=CREATED + datetime.timedelta(minutes=case.minutes),
        last_heard=heard.last_heard_by(None), started=CREATED,
        unknown_provider=case.unknown_provider))
    status = outcome.status.wire()
    assert status["phase"] == case.phase
    assert outcome.terminate is case.terminate
    conditions = {c["type"]: c for c in status["conditions"]}
    if launch_status.ended(case.previous.get("phase")):  # nothing is decided again
        assert "Ready" not in conditions
        return
    assert conditions["Ready"]["status"] == case.ready
    if case.phase == "Failed":
        assert conditions["Failed"]["status"] == "True"
        assert conditions["Failed"]["reason"] == case.reason
    else:
        assert conditions["Ready"]["reason"] == case.reason
    assert status["expiresAt"] == "2026-11-26T13:00:00Z"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])


def test_the_counts_and_the_head_node() -> None:
    members = [member("head", 0, "Ready", report=OK), member("compute", 0, identity=True),
               member("compute", 1, "Launching", launched=False)]
    status = launch_status.compute_status(launch_status.Observed(
        spec=SPEC, members=members, previous={}, generation=2, created=CREATED,
        now=CREATED + datetime.timedelta(minutes=1), last_heard=heard.last_heard_by(None),
        started=CREATED)).status.wire()
    assert status["members"] == {"total": 3, "launched": 2, "running": 2, "identified": 2,
                                 "contextualized": 1, "failed": 0}
    assert status["readyMembers"] == "1/3"
    assert status["headNode"] == "h.oneclick.local"
    assert "readyAt" not in status


def test_data_withheld_is_said_and_data_not_read_leaves_the_condition_as_it_was() -> None:
    seen = launch_status.Observed(
        spec=SPEC, members=all_three(), previous={}, generation=1, created=CREATED,
        now=CREATED + datetime.timedelta(minutes=1), last_heard=heard.last_heard_by(None),
        started=CREATED, data=LaunchData(values={"gridmap": "x"}, problems={}))
    delivered = launch_status.compute_status(seen).status.wire()
    [condition] = [c for c in delivered["conditions"] if c["type"] == "DataDelivered"]
    assert condition["status"] == "True" and "1 data items" in condition["message"]
    again = launch_status.compute_status(launch_status.Observed(**{
        **seen.__dict__, "previous": delivered, "data": None})).status.wire()
    assert [c for c in again["conditions"] if c["type"] == "DataDelivered"] == [condition]


def test_a_silent_member_is_named_while_the_launch_waits() -> None:
    since = (CREATED + datetime.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    members = [member("head", 0, "Ready", report=OK),
               member("compute", 0, conditions=[{"type": "Running", "status": "True",
                                                 "lastTransitionTime": since}]),
               member("compute", 1, "Ready", report=OK)]
    status = launch_status.compute_status(launch_status.Observed(
        spec=SPEC, members=members, previous={}, generation=1, created=CREATED,
        now=CREATED + datetime.timedelta(minutes=3), last_heard=heard.last_heard_by(None),
        started=CREATED)).status.wire()
    [waiting] = [c for c in status["conditions"] if c["type"] == "Contextualized"]
    assert "c-compute-0 not heard from for 120 s" in waiting["message"]


@pytest.mark.parametrize(("name", "minutes", "due"), [
    ("members launching", 1, requeue.ACTIVE),  # instances polled, timeouts counted
    ("all running, none reported", 2, requeue.ACTIVE),
    ("all reported ok", 3, requeue.RESYNC),  # Ready: nothing due for long
    ("all reported ok", 57, 180.0),  # ...but its expiry, when that comes sooner
    ("one failed report", 3, None),  # ended: only a change (its deletion) passes it again
    ("lifetime over", 61, None),
    ("no such provider", 0.1, None),
])
def test_a_launch_is_passed_again_when_time_alone_can_change_its_status(
        name: str, minutes: float, due: float | None) -> None:
    case = CASES[name]
    outcome = launch_status.compute_status(launch_status.Observed(
        spec=case.spec, members=case.members, previous=case.previous, generation=1,
        created=CREATED, now=CREATED + datetime.timedelta(minutes=minutes),
        last_heard=heard.last_heard_by(None), started=CREATED,
        unknown_provider=case.unknown_provider))
    assert outcome.requeue_after == due


@pytest.mark.parametrize(("status", "instance", "phase"), [
    ({}, None, "Pending"),
    ({"tokenHash": "h"}, None, "Launching"),  # made, its instance asked for
    ({"tokenHash": "h"}, "running", "Running"),
    ({"tokenHash": "h"}, "failed", "Failed"),
    ({"phase": "Running"}, None, "Running"),  # (the broker knows no instance state)
    ({"identity": {"hostname": "h"}}, "running", "Contextualizing"),
    ({"identity": {"hostname": "h"}, "report": {"ok": True}}, "running", "Ready"),
    ({"identity": {"hostname": "h"}, "report": {"ok": False}}, "running", "Failed"),
    ({"phase": "Terminated", "report": {"ok": True}}, "running", "Terminated"),
])
def test_a_members_phase_has_one_definition_for_the_reconciler_and_the_broker(
        status: dict[str, Any], instance: str | None, phase: str) -> None:
    assert member_phase(status, instance) == phase


@pytest.mark.parametrize("name", ["members launching", "all reported ok", "one failed report"])
def test_a_status_computed_again_from_itself_is_the_same_so_nothing_is_written(
        name: str) -> None:
    """What the API server gives back (the written status, as JSON) computed again a moment
    later is equal field by field: a pass that observes nothing new writes nothing."""
    case = CASES[name]

    def at(minutes: float, previous: dict[str, Any]) -> dict[str, Any]:
        return launch_status.compute_status(launch_status.Observed(
            spec=case.spec, members=case.members, previous=previous, generation=1,
            created=CREATED, now=CREATED + datetime.timedelta(minutes=minutes),
            last_heard=heard.last_heard_by(None), started=CREATED)).status.wire()

    written = json.loads(json.dumps(at(case.minutes, {})))
    assert at(case.minutes + 0.1, written) == written
