"""The part of a member's status the broker owns, from what its agent said: its identity, its
report, when it was last heard, the IdentityProvided and Contextualized conditions, and its
phase (by the one definition, `api.member.member_phase`). Pure: the server writes it."""

from __future__ import annotations

import datetime

from oneclick.api.conditions import Condition, set_condition
from oneclick.api.member import MemberCondition, MemberReason, member_phase
from oneclick.api.times import format_time
from oneclick.controller.cache import MemberRecord
from oneclick.kits.kube import JSON

# The member conditions the broker owns (the reconciler owns Launched and Running).
BROKER_CONDITIONS = (MemberCondition.IDENTITY_PROVIDED, MemberCondition.CONTEXTUALIZED)


def member_status(record: MemberRecord, identity: JSON, report: JSON | None,
                  now: datetime.datetime | None = None) -> JSON:
    """Everything the broker owns of a member's status (server-side apply drops the fields a
    manager stops sending, so every write carries all of them)."""
    now = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    conditions = [Condition.model_validate(c) for c in record.conditions
                  if c.get("type") in BROKER_CONDITIONS]  # (the others are not ours)
    address = (identity.get("addresses") or ["?"])[0]
    conditions = set_condition(conditions, MemberCondition.IDENTITY_PROVIDED, True,
                               MemberReason.AGENT_REPORTED,
                               f"{identity['hostname']} at {address}", now=now)
    status: JSON = {"identity": identity,
                    "lastSeenAt": format_time(now)}
    if record.status.get("identityChanges"):
        status["identityChanges"] = record.status["identityChanges"]
    if report is not None:
        ok = bool(report["ok"])
        message = report.get("message") or ("contextualized" if ok else "failed")
        conditions = set_condition(
            conditions, MemberCondition.CONTEXTUALIZED, ok,
            MemberReason.REPORTED_OK if ok else MemberReason.STEP_FAILED, message, now=now)
        status["report"] = report
    status["phase"] = member_phase({**record.status, **status})
    status["conditions"] = [c.wire() for c in conditions]
    return status
