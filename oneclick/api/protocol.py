"""The context broker's wire protocol: what an agent sends and what it gets back.

Also the bootstrap, the one secret a VM receives (as user data) to find and trust the broker.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from oneclick.api import names, sshkeys
from oneclick.api.base import Model

LOG_TAIL_LIMIT = 16 * 1024
# The protocol's version: an agent says which it speaks (header PROTOCOL_HEADER), and a broker
# that does not speak it refuses the agent, saying which it does. Absent: version 1.
PROTOCOL_VERSION = 1
PROTOCOL_HEADER = "OneClick-Protocol"


def _schema(pattern: str) -> object:
    """The pattern for the JSON schema (CRD, OpenAPI) only: the validator gives the message."""
    return Field(json_schema_extra={"pattern": pattern})


# What a member states about itself, checked strictly (api.names, api.sshkeys): the broker
# refuses anything else, and every agent checks its context again when it parses it.
Hostname = Annotated[str, StringConstraints(min_length=1, max_length=63),
                     AfterValidator(names.hostname), _schema(names.HOSTNAME_PATTERN)]
Fqdn = Annotated[str, StringConstraints(min_length=1, max_length=names.FQDN_LIMIT + 1),
                 AfterValidator(names.fqdn), _schema(names.FQDN_PATTERN)]
Address = Annotated[str, StringConstraints(min_length=2, max_length=45),
                    AfterValidator(names.address), _schema(names.ADDRESS_PATTERN)]
SshPublicKey = Annotated[str, StringConstraints(min_length=1, max_length=sshkeys.KEY_LIMIT),
                         AfterValidator(sshkeys.host_key), _schema(sshkeys.KEY_PATTERN)]
# The launch's DNS domain, which the controller states: members' FQDNs live under it.
Domain = Annotated[str, StringConstraints(min_length=1, max_length=names.DOMAIN_LIMIT),
                   AfterValidator(names.domain), _schema(names.DOMAIN_PATTERN)]
# An exit code: 0 to 255, or minus the signal that ended the process. Bounded as Kubernetes
# bounds a container's (int32), so what the schema takes the API server stores.
ExitCode = Annotated[int, Field(ge=-2**31, le=2**31 - 1)]

# What the controller puts in a context: names from the launch's spec and its objects. An
# agent turns role and data names into file names, so they are checked here too.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
RoleName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253,
                                              pattern=DNS_SUBDOMAIN)]
DataName = Annotated[str, StringConstraints(
    min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")]


def _one_line(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be one line of printable characters")
    return value


AuthorizedKey = Annotated[str, StringConstraints(min_length=1, max_length=16384),
                          AfterValidator(_one_line)]


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
    domain: Domain | None = None
    """The launch's DNS domain: the member's FQDN is its host name under it (or the host name
    alone when there is none)."""
    agent_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """SHA-256 (hex) of the agent the broker serves at /v1/agent, when it serves one: an image
    that fetches the agent checks it against this before running it."""


class Identity(Model):
    """Who a member is, as its agent found out at boot."""

    hostname: Hostname
    """Short host name: an RFC 1123 label."""
    fqdn: Fqdn
    """Fully qualified domain name (the short name when there is no domain)."""
    addresses: list[Address] = Field(min_length=1, max_length=16)
    """IP addresses (canonical form), the one other members should use first."""
    ssh_host_keys: list[SshPublicKey] = Field(default_factory=list, max_length=8)
    """SSH host public keys, `TYPE BASE64` with no comment, as lines of ssh_known_hosts
    without the host part."""
    cpus: int | None = Field(default=None, ge=1, le=4096)
    """How many CPUs the member has (a batch system's node list says so)."""


class StepResult(Model):
    """One step of contextualization and how it ended."""

    name: str = Field(max_length=256)
    """The step: a common task, or a role script with its arguments."""
    exit_code: ExitCode
    """Its exit code (0: success)."""


class Report(Model):
    """How contextualization ended on a member: ok, or the failing step and its output."""

    ok: bool
    """True when every step succeeded."""
    failed_step: str | None = Field(default=None, max_length=256)
    """The step that failed, when one did."""
    exit_code: ExitCode | None = None
    """Exit code of the failing step."""
    message: str = Field(default="", max_length=4096)
    """One line for people: what happened."""
    steps: list[StepResult] = Field(default_factory=list, max_length=256)
    """Every step that ran, in order, with its exit code."""
    log_tail: str = Field(default="", max_length=LOG_TAIL_LIMIT)
    """The last lines of the agent's log (all output leading up to the end)."""


class Peer(Model):
    """What a member learns about another member (or about itself)."""

    member: ObjectName
    """Name of the LaunchMember."""
    role: RoleName
    """The role entry of the ClusterLaunch this member was launched for."""
    index: int = Field(ge=0)
    """Index of the member within its role entry."""
    provides: list[RoleName]
    """Role names this member provides (its role entry's name first)."""
    identity: Identity


class Context(Model):
    """The complete context of one member: sent once every member it depends on has identity."""

    cluster: ObjectName
    domain: Domain | None = None
    """The launch's DNS domain: every member's FQDN is its host name, alone or under it."""
    member: Peer
    """This member itself."""
    required_roles: dict[RoleName, list[Peer]]
    """For every role this member requires, the members that provide it, in launch order."""
    members: list[Peer]
    """Every member of the launch (for /etc/hosts and host-based SSH)."""
    data: dict[DataName, str]
    """The data items this member requires, by name."""
    ssh_authorized_keys: list[AuthorizedKey]
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
    reasons: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=list, max_length=10)
    """Why data items are withheld, one sentence each (a Secret that does not opt in to
    delivery, a key it lacks, a value that is not text)."""


class Problem(Model):
    """An error from the broker: a status code and a message that says what to change."""

    status: int
    message: str
