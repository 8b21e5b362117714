"""LaunchMember: one VM of a launch, created and owned by its ClusterLaunch."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from oneclick.api.base import Model
from oneclick.api.conditions import Condition
from oneclick.api.protocol import Identity, Report


class LaunchMemberSpec(Model):
    """Which launch and role this member belongs to and what to boot it from."""

    cluster: str = Field(min_length=1, max_length=253)
    """Name of the ClusterLaunch (in the same namespace)."""
    role: str = Field(min_length=1, max_length=63)
    """The role entry of the ClusterLaunch this member was launched for."""
    index: int = Field(ge=0, le=9999)
    """Index of the member within its role entry."""
    image: str = Field(min_length=1, max_length=253)
    """Image the member boots from."""
    size: str | None = Field(default=None, max_length=63)
    """Provider-specific size or instance type."""
    provider: str = Field(min_length=1, max_length=63)
    """Provider that launches this member."""


MemberPhase = Literal["Pending", "Launching", "Running", "Contextualizing", "Ready", "Failed",
                      "Terminating", "Terminated"]


def member_phase(status: Mapping[str, Any], instance: str | None = None) -> MemberPhase:
    """A member's phase from what is known of it (its status, and its instance's state as its
    provider says it: "running", "failed"): the one definition, for the reconciler (which
    launches and polls instances) and the broker (which hears identities and reports)."""
    if status.get("phase") == "Terminated":
        return "Terminated"
    report = status.get("report")
    if report is not None:
        return "Ready" if report.get("ok") else "Failed"
    if status.get("identity"):
        return "Contextualizing"
    if instance == "failed":
        return "Failed"
    if instance == "running" or status.get("phase") == "Running":
        return "Running"
    return "Launching" if status.get("tokenHash") else "Pending"


class LaunchMemberStatus(Model):
    """What the provider and the member's agent told the controller."""

    phase: MemberPhase | None = None
    """Pending, Launching, Running, Contextualizing, Ready, Failed, Terminating or Terminated."""
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Launched, Running, IdentityProvided and Contextualized."""
    observed_generation: int | None = None
    """The .metadata.generation this status was computed for."""
    instance_id: str | None = Field(default=None, max_length=256)
    """The provider's identifier of the instance."""
    addresses: list[str] = Field(default_factory=list, max_length=16)
    """Addresses of the instance, as the provider reports them."""
    identity: Identity | None = None
    """Host names, addresses and SSH host keys, as the member's agent reported them."""
    identity_changes: int | None = Field(default=None, ge=0, le=1000)
    """How many times the member's agent replaced its identity; the broker accepts 20."""
    report: Report | None = None
    """How contextualization ended, as the member's agent reported it."""
    token_hash: str | None = Field(default=None, max_length=128)
    """SHA-256 of the member's bootstrap token; the token itself is never stored."""
    launched_at: datetime.datetime | None = None
    """When the provider accepted the launch."""
    broker_url: str | None = Field(default=None, max_length=2048)
    """The broker URL the member's bootstrap carries (the controller hands running members a
    new bootstrap when the broker moves)."""
    last_seen_at: datetime.datetime | None = None
    """When the broker last heard from the member's agent, as of the broker's last write."""
