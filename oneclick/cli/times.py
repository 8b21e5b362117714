"""Times in the user's terms: ages and countdowns as kubectl writes an AGE ("59m", "2d3h"),
and how long something took ("3.7 s", "4m 12s")."""

from __future__ import annotations

import datetime
from typing import Any

from oneclick.api.times import format_time, parse_time


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse(text: Any) -> datetime.datetime | None:
    """An API timestamp (RFC 3339, with or without fractions); None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = parse_time(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def short(seconds: float) -> str:
    """A duration as kubectl writes an AGE: precise when short, coarser as it grows."""
    total = int(seconds)
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years, rest = divmod(days, 365)
    return f"{years}y{rest}d" if rest and years < 8 else f"{years}y"


def age(moment: datetime.datetime | None, at: datetime.datetime | None = None) -> str:
    """How long ago `moment` was ("<unknown>" when there is none, as kubectl says)."""
    if moment is None:
        return "<unknown>"
    return short(((at or now()) - moment).total_seconds())


def countdown(moment: datetime.datetime | None, at: datetime.datetime | None = None) -> str:
    """When `moment` comes: "in 59m", or "3m ago" once it has passed."""
    if moment is None:
        return "<unknown>"
    left = (moment - (at or now())).total_seconds()
    return f"in {short(left)}" if left >= 0 else f"{short(-left)} ago"


def took(seconds: float) -> str:
    """How long something took: "3.7 s" under a minute, "4m 12s", "1h 3m" beyond."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest}s"
    return f"{minutes // 60}h {minutes % 60}m"


def stamp(moment: datetime.datetime) -> str:
    """The API's own form, to the second (what `kubectl get -o wide` shows)."""
    return format_time(moment)
