"""ClusterLaunch: one launch of a heterogeneous cluster, as the user describes it.

The spec mirrors the Nimbus cluster document: role entries (Nimbus workspaces) with an image, a
quantity and what each member provides and requires. The CEL rules below are enforced by the
API server itself, so a bad document is refused at `kubectl apply` time with a message that
names the field.
"""

from __future__ import annotations

import datetime
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from oneclick.api import names
from oneclick.api.base import Model
from oneclick.api.conditions import Condition

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# The names of Secrets and ConfigMaps (DNS-1123 subdomains), and the keys within them, as the
# API server defines them. `[.]` rather than an escaped dot: the rules are CEL string literals.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
DURATION = r"^([0-9]{1,6}(h|m|s))+$"


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """CEL rules for the API server, attached to a field's or a model's JSON schema."""
    return {"x-kubernetes-validations": list(rules)}


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


# A name that must be a DNS-1123 label, checked by CEL so the message says so in words.
RoleName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63),
    Field(json_schema_extra=validations(cel(
        f"self.matches('{DNS_LABEL}')",
        "must be a DNS-1123 label: lower-case letters, digits and '-', "
        "starting and ending with a letter or digit",
    ))),
]


def _object_name(value: str) -> str:
    if not re.fullmatch(DNS_SUBDOMAIN, value):
        raise ValueError("must be a DNS-1123 subdomain")
    return value


def _data_key(value: str) -> str:
    if not re.fullmatch(DATA_KEY, value) or value == "." or value.startswith(".."):
        raise ValueError("must be a Secret or ConfigMap key")
    return value


# The name of a Secret or ConfigMap: a DNS-1123 subdomain, checked by CEL so the message says
# so in words (and by pydantic, for whoever builds a spec without the API server).
ObjectName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253),
    AfterValidator(_object_name),
    Field(json_schema_extra=validations(cel(
        f"self.matches('{DNS_SUBDOMAIN}')",
        "must be the name of a Secret or ConfigMap of the launch's namespace (a DNS-1123 "
        "subdomain): lower-case letters, digits, '-' and '.', starting and ending with a "
        "letter or digit",
    ))),
]
# A key of a Secret or ConfigMap, by the API server's own rule.
DataKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253),
    AfterValidator(_data_key),
    Field(json_schema_extra=validations(cel(
        f"self.matches('{DATA_KEY}') && self != '.' && !self.startsWith('..')",
        "must be a key of a Secret or ConfigMap: letters, digits, '-', '_' and '.', "
        "neither '.' nor starting with '..'",
    ))),
]
DataName = Annotated[str, StringConstraints(min_length=1, max_length=63,
                                            pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")]


def _duration_bounds(low: str, high: str) -> dict[str, Any]:
    return validations(cel(
        f"duration(self) >= duration('{low}') && duration(self) <= duration('{high}')",
        f"must be between {low} and {high}",
    ))


class Requirements(Model):
    """What the members of a role entry need to know before they configure themselves."""

    roles: list[RoleName] = Field(default_factory=list, max_length=10)
    """Roles whose members this role needs to know (address, host names, SSH host keys).
    Each must be provided by some role entry: by its name or in its provides."""
    data: list[DataName] = Field(default_factory=list, max_length=10)
    """Names of data items (spec.data) these members need."""


class Role(Model):
    """A group of identical members (a Nimbus workspace): one image, a quantity, a part to play."""

    name: RoleName
    """Name of the role entry; members are named after it (head-node-0). It is also a role
    the members provide."""
    image: str = Field(min_length=1, max_length=253)
    """Image the members boot from (for the local provider, a folder of samples/images)."""
    quantity: int = Field(default=1, ge=0, le=10000)
    """How many members to launch for this role (0 to 10000)."""
    size: str | None = Field(default=None, max_length=63)
    """Provider-specific size or instance type."""
    provides: list[RoleName] = Field(default_factory=list, max_length=10)
    """Further role names these members provide, besides the entry's own name."""
    requires: Requirements = Field(default_factory=Requirements)
    """Roles and data these members need before they configure themselves."""
    known_hosts: bool = True
    """Whether the client installs these members' SSH host keys into known_hosts (turn off
    for large pools of compute nodes nobody logs in to directly)."""


class KeySelector(Model):
    """A key of a Secret or ConfigMap in the launch's namespace that opts in to delivery."""

    name: ObjectName
    """Name of the Secret or ConfigMap, in the launch's own namespace. It is delivered only if
    it carries the label clusters.oneclick.dev/deliverable=true."""
    key: DataKey
    """Key within it."""


class DataSource(Model):
    """Where a data item's value comes from: exactly one of a Secret key or a ConfigMap key."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "has(self.secretKeyRef) != has(self.configMapKeyRef)",
        "exactly one of secretKeyRef and configMapKeyRef must be set",
    )))

    secret_key_ref: KeySelector | None = None
    """A key of a Secret."""
    config_map_key_ref: KeySelector | None = None
    """A key of a ConfigMap."""


GENERATED_BYTES_MIN, GENERATED_BYTES_MAX = 16, 4096


class Generate(Model):
    """A shared secret the controller makes for the launch (a munge key, say)."""

    bytes: int = Field(ge=GENERATED_BYTES_MIN, le=GENERATED_BYTES_MAX)
    """How many random bytes (16 to 4096). They are made once per launch, kept in a Secret
    owned by the launch, and delivered base64-encoded (the data is text)."""


class DataItem(Model):
    """Named data for the context (a Nimbus <data> element): given by the user, or generated
    by the controller."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "[has(self.value), has(self.valueFrom), has(self.generate)].filter(x, x).size() == 1",
        "exactly one of value, valueFrom and generate must be set",
    )))

    name: DataName
    """Name of the data item; roles require it by this name."""
    value: str | None = Field(default=None, max_length=65536)
    """The data itself."""
    value_from: DataSource | None = None
    """Where to read the data from instead: a key of a Secret or ConfigMap of the launch's
    own namespace, delivered only while that object carries the label
    clusters.oneclick.dev/deliverable=true (the launch's DataDelivered condition says why
    data is withheld)."""
    generate: Generate | None = None
    """Have the controller make the value instead: random bytes, made once per launch (a
    restart never makes others), given only to members whose roles require the item."""

    @model_validator(mode="after")
    def _one_source(self) -> DataItem:
        if sum(x is not None for x in (self.value, self.value_from, self.generate)) != 1:
            raise ValueError("exactly one of value, valueFrom and generate must be set")
        return self


class Timeouts(Model):
    """How long each stage may take before the launch fails."""

    launch: str = Field(default="15m", pattern=DURATION,
                        json_schema_extra=_duration_bounds("10s", "24h"))
    """From creation until every member runs (10s to 24h)."""
    contextualization: str = Field(default="15m", pattern=DURATION,
                                   json_schema_extra=_duration_bounds("10s", "24h"))
    """From every member running until every member reported (10s to 24h)."""


class FailurePolicy(StrEnum):
    """What happens to the instances of a failed launch."""

    BACK_OUT = "BackOut"
    KEEP = "Keep"


# A launch's own DNS domain (api.names.domain is the real check; CEL says it in words).
DOMAIN_LABEL = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
LaunchDomain = Annotated[
    str,
    StringConstraints(min_length=1, max_length=names.DOMAIN_LIMIT),
    AfterValidator(names.domain),
    Field(json_schema_extra=validations(
        cel(f"self.matches('^{DOMAIN_LABEL}([.]{DOMAIN_LABEL})*$')",
            "must be a DNS subdomain: lower-case letters, digits, '-' and '.', labels of at "
            "most 63 characters starting and ending with a letter or digit"),
        cel("!self.matches('(^|[.])localhost([.]|$)') && !self.matches('(^|[.])[0-9]+$')",
            "must not be under localhost nor end in an all-digit label"),
    )),
]


class ClusterLaunchSpec(Model):
    """A cluster to launch: its roles, the data for its context and how long it lives."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel(
            "self.roles.all(r, r.requires.roles.all(q, self.roles.exists(p, "
            "p.name == q || q in p.provides)))",
            "every role named in roles[].requires.roles must be provided by some role entry "
            "(its name or its provides)",
            fieldPath=".roles",
        ),
        cel(
            "self.roles.all(r, r.requires.data.all(d, "
            "has(self.data) && self.data.exists(i, i.name == d)))",
            "every data name in roles[].requires.data must be declared in spec.data",
            fieldPath=".roles",
        ),
        cel(
            "(has(self.domain) ? self.domain : '') == "
            "(has(oldSelf.domain) ? oldSelf.domain : '')",
            "domain cannot change once the launch exists (its members are named under it)",
            fieldPath=".domain",
        ),
    ))

    provider: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL)
    """Which configured provider launches the members (default: the controller's default)."""
    domain: LaunchDomain | None = None
    """The DNS domain the members' FQDNs live under (<hostname>.<domain>); default: the
    provider's (oneclick.local for the local provider). A domain no other launch uses keeps
    every name a member may claim the launch's own. Fixed once the launch exists."""
    lifetime: str = Field(default="1h", pattern=DURATION,
                          json_schema_extra=_duration_bounds("1m", "8760h"))
    """How long the launch lives (1m to 8760h); every instance is terminated at expiresAt."""
    ssh_authorized_keys: list[Annotated[str, StringConstraints(max_length=16384)]] = Field(
        default_factory=list, max_length=32)
    """Public keys of the user, trusted for logins as root on every member."""
    roles: list[Role] = Field(
        min_length=1, max_length=50,
        json_schema_extra=validations(cel(
            "self.all(r, self.exists_one(o, o.name == r.name))", "role names must be unique")),
    )
    """The role entries of the cluster."""
    data: list[DataItem] = Field(
        default_factory=list, max_length=64,
        json_schema_extra=validations(cel(
            "self.all(d, self.exists_one(o, o.name == d.name))", "data names must be unique")),
    )
    """Named data for the context; roles require it by name."""
    hosts_file: bool = True
    """Populate /etc/hosts on every member with every member."""
    ssh_host_based: bool = True
    """Set up SSH host-based authentication across all accounts of all members."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    """Time limits of the launch's stages."""
    on_failure: FailurePolicy = FailurePolicy.BACK_OUT
    """What to do when a member fails: BackOut terminates every instance (reports are kept),
    Keep leaves them running for inspection."""


class LaunchPhase(StrEnum):
    """A launch's phase: a summary of its conditions."""

    PENDING = "Pending"
    LAUNCHING = "Launching"
    CONTEXTUALIZING = "Contextualizing"
    READY = "Ready"
    FAILED = "Failed"
    EXPIRED = "Expired"
    TERMINATING = "Terminating"

    @property
    def ended(self) -> bool:
        """Nothing about the launch is decided again (its instances are gone or kept)."""
        return self in (LaunchPhase.FAILED, LaunchPhase.EXPIRED)


# Where a user's wait for a launch ends: it is Ready, or it has ended.
SETTLED_PHASES = (LaunchPhase.READY, LaunchPhase.FAILED, LaunchPhase.EXPIRED)


class LaunchCondition(StrEnum):
    """The types of a launch's conditions."""

    MEMBERS_LAUNCHED = "MembersLaunched"
    MEMBERS_RUNNING = "MembersRunning"
    DATA_DELIVERED = "DataDelivered"
    CONTEXTUALIZED = "Contextualized"
    READY = "Ready"
    FAILED = "Failed"


class LaunchReason(StrEnum):
    """The reasons of a launch's conditions (those of DataDelivered's refusals are the
    broker's: controller.broker.data.Reason)."""

    ALL_LAUNCHED = "AllLaunched"
    LAUNCHING = "Launching"
    ALL_RUNNING = "AllRunning"
    BOOTING = "Booting"
    DATA_AVAILABLE = "DataAvailable"
    ALL_REPORTED = "AllReported"
    WAITING = "Waiting"
    CONTEXTUALIZED = "Contextualized"
    NO_FAILURE = "NoFailure"
    EXPIRED = "Expired"
    UNKNOWN_PROVIDER = "UnknownProvider"
    CONTEXTUALIZATION_FAILED = "ContextualizationFailed"
    LAUNCH_FAILED = "LaunchFailed"
    INSTANCE_FAILED = "InstanceFailed"
    LAUNCH_TIMEOUT = "LaunchTimeout"
    CONTEXTUALIZATION_TIMEOUT = "ContextualizationTimeout"
    BROKER_UNREACHABLE = "BrokerUnreachable"


class MemberCounts(Model):
    """How many members are in each state."""

    total: int = 0
    """Members the spec asks for."""
    launched: int = 0
    """Members whose instance the provider accepted."""
    running: int = 0
    """Members whose instance runs."""
    identified: int = 0
    """Members whose agent provided identity."""
    contextualized: int = 0
    """Members whose agent reported success."""
    failed: int = 0
    """Members whose agent reported an error."""


class ClusterLaunchStatus(Model):
    """What the controller observed of the launch; conditions are the truth, phase a summary."""

    phase: LaunchPhase | None = None
    """Summary of the conditions: Pending, Launching, Contextualizing, Ready, Failed,
    Expired or Terminating."""
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """MembersLaunched, MembersRunning, DataDelivered, Contextualized, Ready and Failed."""
    observed_generation: int | None = None
    """The .metadata.generation this status was computed for."""
    expires_at: datetime.datetime | None = None
    """When every instance is terminated (creation plus spec.lifetime)."""
    members: MemberCounts | None = None
    """Counts of members per state."""
    ready_members: str | None = Field(default=None, max_length=32)
    """Contextualized members over all members, as 2/3."""
    head_node: str | None = Field(default=None, max_length=253)
    """Host name of the first member of the first role: where to log in."""
    ready_at: datetime.datetime | None = None
    """When the launch first became Ready."""
