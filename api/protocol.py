"""The context broker's wire protocol: what an agent sends and what it gets back.

Also the bootstrap, the one secret a VM receives (as user data) to find and trust the broker.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from api.base import Model

Address = Annotated[str, StringConstraints(max_length=64)]
SshPublicKey = Annotated[str, StringConstraints(max_length=16384, pattern=r"^\S+ \S+")]
LOG_TAIL_LIMIT = 16 * 1024


class Bootstrap(Model):
    """Everything a member needs to reach the broker: handed to the VM as its user data."""

    broker_url: str = Field(max_length=2048)
    """Base URL of the context broker, for example https://203.0.113.7:8443."""
    ca_cert: str = Field(max_length=16384)
    """PEM certificate of the CA that signed the broker's certificate; the agent trusts only it."""
    namespace: str
    cluster: str
    member: str
    token: str = Field(min_length=32, max_length=256, repr=False)
    """Bearer token of this member for this launch; only its hash is kept by the controller."""


class Identity(Model):
    """Who a member is, as its agent found out at boot."""

    hostname: str = Field(min_length=1, max_length=63)
    """Short host name."""
    fqdn: str = Field(min_length=1, max_length=253)
    """Fully qualified domain name (the short name when there is no domain)."""
    addresses: list[Address] = Field(min_length=1, max_length=16)
    """IP addresses, the one other members should use first."""
    ssh_host_keys: list[SshPublicKey] = Field(default_factory=list, max_length=8)
    """SSH host public keys, as lines of ssh_known_hosts without the host part."""


class StepResult(Model):
    """One step of contextualization and how it ended."""

    name: str = Field(max_length=256)
    """The step: a common task, or a role script with its arguments."""
    exit_code: int
    """Its exit code (0: success)."""


class Report(Model):
    """How contextualization ended on a member: ok, or the failing step and its output."""

    ok: bool
    """True when every step succeeded."""
    failed_step: str | None = Field(default=None, max_length=256)
    """The step that failed, when one did."""
    exit_code: int | None = None
    """Exit code of the failing step."""
    message: str = Field(default="", max_length=4096)
    """One line for people: what happened."""
    steps: list[StepResult] = Field(default_factory=list, max_length=256)
    """Every step that ran, in order, with its exit code."""
    log_tail: str = Field(default="", max_length=LOG_TAIL_LIMIT)
    """The last lines of the agent's log (all output leading up to the end)."""


class Peer(Model):
    """What a member learns about another member (or about itself)."""

    member: str
    """Name of the LaunchMember."""
    role: str
    """The role entry of the ClusterLaunch this member was launched for."""
    index: int
    """Index of the member within its role entry."""
    provides: list[str]
    """Role names this member provides (its role entry's name first)."""
    identity: Identity


class Context(Model):
    """The complete context of one member: sent once every member it depends on has identity."""

    cluster: str
    member: Peer
    """This member itself."""
    required_roles: dict[str, list[Peer]]
    """For every role this member requires, the members that provide it, in launch order."""
    members: list[Peer]
    """Every member of the launch (for /etc/hosts and host-based SSH)."""
    data: dict[str, str]
    """The data items this member requires, by name."""
    ssh_authorized_keys: list[str]
    """Public keys of the user, to trust for logins."""
    hosts_file: bool
    """Whether the agent manages a block of /etc/hosts with every member."""
    ssh_host_based: bool
    """Whether the agent sets up SSH host-based authentication across the members."""


class Pending(Model):
    """The context is not complete yet: which members the broker still waits for."""

    waiting_for: list[str]
    """Names of members (at most a few) whose identity is still missing, or data names."""
    missing: int
    """How many members or data items are still missing in all."""


class Problem(Model):
    """An error from the broker: a status code and a message that says what to change."""

    status: int
    message: str
