"""Timestamps as the Kubernetes API writes them: RFC 3339 in UTC, to the second, with a Z."""

from __future__ import annotations

import datetime


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
