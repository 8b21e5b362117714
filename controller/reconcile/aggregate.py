"""A launch's status as a pure function of its spec, its members and the time: conditions first,
the phase a summary of them (as the API conventions ask)."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from controller.cache import MemberRecord
from kits.kube import JSON

_DURATION = re.compile(r"(\d+)([hms])")
_UNIT = {"h": 3600, "m": 60, "s": 1}

RUNNING_PHASES = {"Running", "Contextualizing", "Ready", "Failed"}


def parse_duration(text: str) -> datetime.timedelta:
    return datetime.timedelta(seconds=sum(int(n) * _UNIT[u] for n, u in _DURATION.findall(text)))


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


def desired_members(spec: JSON) -> list[tuple[str, int]]:
    """(role, index) of every member the spec asks for, in launch order."""
    return [(role["name"], i) for role in spec["roles"] for i in range(role.get("quantity", 1))]


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


def failure(spec: JSON, members: list[MemberRecord], created: datetime.datetime,
            all_running_since: datetime.datetime | None,
            now: datetime.datetime) -> Failure | None:
    """Why the launch has failed, if it has: a member's error report, a dead instance, or a
    stage that took longer than its timeout."""
    for member in members:
        if member.report is not None and not member.report.get("ok"):
            step = member.report.get("failedStep") or "contextualization"
            return Failure("ContextualizationFailed",
                           f"{member.name}: {step} exited with code "
                           f"{member.report.get('exitCode')}: {member.report.get('message', '')}")
        if member.status.get("phase") == "Failed" and member.report is None:
            launched = _condition(member.status, "Launched")
            if launched.get("status") == "False":  # the provider could not make it
                return Failure("LaunchFailed", f"{member.name}: {launched.get('message', '')}")
            return Failure("InstanceFailed", f"{member.name}: " + str(
                _condition(member.status, "Running").get("message", "its instance failed")))
    timeouts = spec.get("timeouts", {})
    if all_running_since is None:
        limit = parse_duration(timeouts.get("launch", "15m"))
        if now - created > limit:
            return Failure("LaunchTimeout", f"not every member was running within {limit}")
    else:
        limit = parse_duration(timeouts.get("contextualization", "15m"))
        if now - all_running_since > limit and not all(
                m.report is not None for m in members):
            waiting = [m.name for m in members if m.report is None][:5]
            return Failure("ContextualizationTimeout",
                           f"not every member reported within {limit}; still waiting for "
                           + ", ".join(waiting))
    return None


def _condition(status: JSON, type: str) -> JSON:
    for condition in status.get("conditions", []):
        if condition.get("type") == type:
            return dict(condition)
    return {}


@dataclass(frozen=True)
class Counts:
    total: int
    launched: int
    running: int
    identified: int
    contextualized: int
    failed: int

    def wire(self) -> JSON:
        return {"total": self.total, "launched": self.launched, "running": self.running,
                "identified": self.identified, "contextualized": self.contextualized,
                "failed": self.failed}


def count(spec: JSON, members: list[MemberRecord]) -> Counts:
    wanted = set(desired_members(spec))
    current = [m for m in members if (m.role, m.index) in wanted]
    return Counts(
        total=len(wanted),
        launched=sum(1 for m in current if m.status.get("instanceId")),
        running=sum(1 for m in current if m.status.get("phase") in RUNNING_PHASES),
        identified=sum(1 for m in current if m.identity is not None),
        contextualized=sum(1 for m in current if m.report and m.report.get("ok")),
        failed=sum(1 for m in current if m.report is not None and not m.report.get("ok")),
    )


def head_node(spec: JSON, members: list[MemberRecord]) -> str | None:
    """The first member of the first role: where the user logs in."""
    if not spec["roles"]:
        return None
    first = spec["roles"][0]["name"]
    for member in members:
        if member.role == first and member.index == 0 and member.identity:
            return str(member.identity.get("fqdn") or member.identity.get("hostname"))
    return None
