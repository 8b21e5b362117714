"""Validation errors in words that name the field, without echoing the value that failed (it
may be hostile, and the message travels to logs, reports and terminals)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError


def quoted(part: str) -> str:
    """The sender's text (a field name, a header), shown as is when short and printable,
    else escaped and cut."""
    return part if part.isprintable() and len(part) <= 64 else ascii(part[:64])


def parsed(raw: bytes) -> Any:
    """The JSON document that failed validation, for naming members; None if it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _named(document: Any, part: int | str) -> tuple[Any, str]:
    """Step into `document`; a member's entry says whose it is (`members[1] (base-x-1)`)."""
    try:
        inner = document[part]
    except (KeyError, IndexError, TypeError):
        return None, ""
    name = inner.get("member") if isinstance(inner, dict) else None
    return inner, f" ({quoted(name)})" if isinstance(name, str) else ""


def location(loc: tuple[int | str, ...], document: Any = None) -> str:
    """("members", 2, "identity", "hostname") -> members[2].identity.hostname; with the
    document that failed, members[2] (its member's name).identity.hostname"""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (
            f".{quoted(part)}" if text else quoted(part))
        document, name = _named(document, part)
        text += name
    return text or "body"


def describe(error: ValidationError, document: Any = None, limit: int = 10) -> str:
    """`field: what is wrong; ...` for the first `limit` errors."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:limit]:
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{location(tuple(item['loc']), document)}: {message}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
