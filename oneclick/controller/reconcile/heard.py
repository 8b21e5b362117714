"""Members not heard from: when the broker last heard from each member that has not reported,
and how that reads in the launch's status.

The broker keeps its hearing in memory (no API write per request) and writes `lastSeenAt` with
its identity and report writes; a restarted controller has heard nobody yet, so silences count
from its start at the earliest. Silences are shown in steps of STEP seconds: the launch's
status (written only when it changes) changes at most once a step for them.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from oneclick.api.member import MemberPhase
from oneclick.api.times import parse_time
from oneclick.controller.broker.hearing import Hearing
from oneclick.controller.cache import MemberRecord

SILENT_AFTER = 20  # seconds without news before a member is named
STEP = 10  # seconds: how finely a silence is shown
SHOWN = 3  # members named in a message; the rest are counted
WAITING_PHASES = (MemberPhase.RUNNING, MemberPhase.CONTEXTUALIZING)  # booted, not reported

LastHeard = Callable[[MemberRecord], datetime.datetime | None]


def _time(text: object) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return parse_time(text)


def _transition(member: MemberRecord, type: str) -> datetime.datetime | None:
    for condition in member.conditions:
        if condition.get("type") == type and condition.get("status") == "True":
            return _time(condition.get("lastTransitionTime"))
    return None


def last_heard_by(hearing: Hearing | None) -> LastHeard:
    """When a member was last heard from: by this process, or as the broker last wrote down
    (its lastSeenAt, else when its identity arrived); None when never."""
    def last(member: MemberRecord) -> datetime.datetime | None:
        heard = hearing.last(member.uid) if hearing is not None else None
        if heard is not None:  # (what was written down was heard earlier, here or before)
            return heard
        known = [_time(member.status.get("lastSeenAt")), _transition(member, "IdentityProvided")]
        return max((t for t in known if t is not None), default=None)
    return last


def running_since(member: MemberRecord) -> datetime.datetime | None:
    return _transition(member, "Running") or _time(member.status.get("launchedAt"))


@dataclass(frozen=True)
class Silence:
    member: str
    seconds: int  # rounded down to STEP
    never: bool  # never heard from at all


def silences(members: list[MemberRecord], last_heard: LastHeard, now: datetime.datetime,
             floor: datetime.datetime) -> list[Silence]:
    """Members booted but not reported that have been silent for SILENT_AFTER seconds or more:
    since their last news (from `floor`, this process's start, at the earliest), or since they
    run when never heard from."""
    found = []
    for member in members:
        if member.report is not None or member.status.get("phase") not in WAITING_PHASES:
            continue
        heard = last_heard(member)
        if heard is not None:  # (what an earlier process heard in memory is gone with it)
            since: datetime.datetime | None = max(heard, floor)
        else:  # an agent's first request that succeeds is written down: never is never
            since = running_since(member)
        if since is None:
            continue
        seconds = (now - since).total_seconds()
        if seconds >= SILENT_AFTER:
            found.append(Silence(member.name, int(seconds // STEP * STEP), heard is None))
    return sorted(found, key=lambda s: (-s.seconds, s.member))


def describe(found: list[Silence]) -> str:
    """"a not heard from for 90 s, b not heard from for 60 s and 2 more"."""
    parts = [f"{s.member} not heard from for {s.seconds} s" for s in found[:SHOWN]]
    more = len(found) - SHOWN
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def names(members: list[str]) -> str:
    shown = ", ".join(members[:SHOWN * 2])
    more = len(members) - SHOWN * 2
    return shown + (f" and {more} more" if more > 0 else "")
