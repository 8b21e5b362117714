"""Status conditions as the Kubernetes API conventions define them (metav1.Condition)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import Field

from oneclick.api.base import Model


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """One aspect of the object's state, with when and why it last changed."""

    type: str = Field(max_length=316, pattern=r"^([a-z0-9.-]+/)?[A-Za-z][A-Za-z0-9_]*$")
    """Kind of condition, in CamelCase (for example Ready)."""
    status: ConditionStatus
    """Whether the condition holds: True, False or Unknown."""
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """Programmatic identifier of the last transition, in CamelCase."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details of the last transition."""
    last_transition_time: datetime.datetime
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation the condition was set for."""


def set_condition(
    conditions: list[Condition],
    type: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    now: datetime.datetime | None = None,
) -> list[Condition]:
    """The list with `type` set; lastTransitionTime moves only when the status changes."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    now = now or datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    previous = next((c for c in conditions if c.type == type), None)
    changed_at = (previous.last_transition_time
                  if previous is not None and previous.status == status else now)
    updated = Condition(type=type, status=status, reason=reason, message=message,
                        last_transition_time=changed_at, observed_generation=observed_generation)
    return [updated if c.type == type else c for c in conditions] if previous else [
        *conditions, updated]


def find_condition(conditions: list[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: list[Condition], type: str) -> bool:
    found = find_condition(conditions, type)
    return found is not None and found.status == ConditionStatus.TRUE


def condition_of(status: Mapping[str, Any], type: str) -> dict[str, Any]:
    """The condition `type` of an object's status as the API server sends it (JSON), or {}
    when it has none: for readers of other writers' statuses."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == type:
            return dict(condition)
    return {}
