"""LaunchMember: one VM of a launch, created and owned by its ClusterLaunch."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

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


class MemberPhase(StrEnum):
    """A member's phase: a summary of what its provider and its agent said."""

    PENDING = "Pending"
    LAUNCHING = "Launching"
    RUNNING = "Running"
    CONTEXTUALIZING = "Contextualizing"
    READY = "Ready"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


class MemberCondition(StrEnum):
    """The types of a member's conditions: the controller owns Launched and Running, the
    broker IdentityProvided and Contextualized."""

    LAUNCHED = "Launched"
    RUNNING = "Running"
    IDENTITY_PROVIDED = "IdentityProvided"
    CONTEXTUALIZED = "Contextualized"


class MemberReason(StrEnum):
    """The reasons of a member's conditions."""

    PROVIDER_ACCEPTED = "ProviderAccepted"
    PROVIDER_ERROR = "ProviderError"
    INSTANCE_RUNNING = "InstanceRunning"
    INSTANCE_FAILED = "InstanceFailed"
    TERMINATED = "Terminated"
    AGENT_REPORTED = "AgentReported"
    REPORTED_OK = "ReportedOk"
    STEP_FAILED = "StepFailed"


def member_phase(status: Mapping[str, Any], instance: str | None = None) -> MemberPhase:
    """A member's phase from what is known of it (its status, and its instance's state as its
    provider says it: "running", "failed"): the one definition, for the reconciler (which
    launches and polls instances) and the broker (which hears identities and reports)."""
    if status.get("phase") == MemberPhase.TERMINATED:
        return MemberPhase.TERMINATED
    report = status.get("report")
    if report is not None:
        return MemberPhase.READY if report.get("ok") else MemberPhase.FAILED
    if status.get("identity"):
        return MemberPhase.CONTEXTUALIZING
    if instance == "failed":
        return MemberPhase.FAILED
    if instance == "running" or status.get("phase") == MemberPhase.RUNNING:
        return MemberPhase.RUNNING
    return MemberPhase.LAUNCHING if status.get("tokenHash") else MemberPhase.PENDING


def has_run(status: Mapping[str, Any]) -> bool:
    """Whether the member's instance runs, or ran: a failed member counts only if its agent
    spoke (one its provider never made has not run, and "all members running" would be
    false). For the launch's count of running members, and the CLI's."""
    phase = status.get("phase")
    return phase in (MemberPhase.RUNNING, MemberPhase.CONTEXTUALIZING, MemberPhase.READY) or (
        phase == MemberPhase.FAILED and bool(status.get("report") or status.get("identity")))


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
