"""What the broker writes of a member's status when its agent speaks: a pure function of the
member as the cache has it and what the agent said. No API server: each case is one request."""

from __future__ import annotations

import datetime
from typing import Any

from oneclick.api.member import LaunchMemberSpec
from oneclick.controller.broker.member_status import member_status
from oneclick.controller.cache import MemberRecord

FIRST = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
LATER = FIRST + datetime.timedelta(minutes=2)
IDENTITY = {"hostname": "head-node-0", "fqdn": "head-node-0.oneclick.local",
            "addresses": ["10.213.0.2"], "sshHostKeys": []}


def member(status: dict[str, Any]) -> MemberRecord:
    return MemberRecord(namespace="ns", name="c-head-node-0", uid="u", cluster="c",
                        role="head-node", index=0, resource_version="1", status=status,
                        spec=LaunchMemberSpec(cluster="c", role="head-node", index=0,
                                              image="base-cluster", provider="local"),
                        conditions=status.get("conditions") or [])


def test_an_identity_then_a_report_move_the_member_to_ready_keeping_when_each_began() -> None:
    running: dict[str, Any] = {"phase": "Running", "instanceId": "i-1", "conditions": [
        {"type": "Launched", "status": "True", "reason": "Launched",
         "lastTransitionTime": "2026-11-26T11:59:00Z"}]}
    identified = member_status(member(running), IDENTITY, None, now=FIRST)
    assert identified["phase"] == "Contextualizing"
    assert identified["lastSeenAt"] == "2026-11-26T12:00:00Z"
    # Only the broker's own conditions: the reconciler's stay the reconciler's.
    assert [c["type"] for c in identified["conditions"]] == ["IdentityProvided"]
    assert identified["conditions"][0]["message"] == "head-node-0 at 10.213.0.2"

    reported = member_status(member({**running, **identified}), IDENTITY,
                             {"ok": True, "message": "contextualized"}, now=LATER)
    assert reported["phase"] == "Ready"
    conditions = {c["type"]: c for c in reported["conditions"]}
    assert conditions["IdentityProvided"]["lastTransitionTime"] == "2026-11-26T12:00:00Z"
    assert conditions["Contextualized"] == {
        "type": "Contextualized", "status": "True", "reason": "ReportedOk",
        "message": "contextualized", "lastTransitionTime": "2026-11-26T12:02:00Z"}


def test_a_failed_report_fails_the_member_and_a_terminated_one_stays_terminated() -> None:
    failed = member_status(member({"phase": "Running"}), IDENTITY,
                           {"ok": False, "message": "roles.d/batch-server exited with 3"})
    assert failed["phase"] == "Failed"
    assert {c["type"]: c["reason"] for c in failed["conditions"]}["Contextualized"] == (
        "StepFailed")
    ended = member_status(member({"phase": "Terminated", "identityChanges": 1}), IDENTITY, None)
    assert ended["phase"] == "Terminated"
    assert ended["identityChanges"] == 1  # (carried: every write holds all the broker's fields)
