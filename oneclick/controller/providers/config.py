"""The providers file (OCC_PROVIDERS_FILE; the Helm chart mounts it from `providers:` in its
values): which providers beyond `local` this controller offers, and how to reach them.

    providers:
      - name: lab                      # what a ClusterLaunch's spec.provider names
        type: ssh
        brokerHost: 10.0.0.1           # where the hosts reach the controller's broker
        user: root
        privateKey: {secret: lab-ssh, key: id_ed25519}
        allowedNamespaces: [physics]   # optional: only these namespaces' launches
        resetCommand: /usr/local/sbin/reimage   # optional: run on a host given back
        domain: pool.lab.example.org   # optional: members' FQDNs are <hostname>.<domain>
        hosts:
          - {address: 10.0.0.11, hostKeys: ["ssh-ed25519 AAAA..."]}
      - name: aws
        type: ec2
        region: eu-west-1
        brokerHost: broker.example.org
        credentials: {secret: aws-credentials}
        images: {base-cluster: ami-0123456789abcdef0}

Secrets are read from the controller's namespace when a provider first needs them, so a wrong
or missing one shows in the member's condition, not as a controller that will not start.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from oneclick.api import names
from oneclick.api.base import Model
from oneclick.kits import yamlfile

NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SecretKey(Model):
    secret: str = Field(min_length=1)
    """Name of a Secret in the controller's namespace."""
    key: str = Field(min_length=1)
    """The key within the Secret."""


class SecretRef(Model):
    secret: str = Field(min_length=1)
    """Name of a Secret in the controller's namespace."""


class ProviderBase(Model):
    name: str = Field(pattern=NAME, max_length=63)
    """What a ClusterLaunch's spec.provider names."""
    broker_host: str = Field(min_length=1)
    """The name or address at which this provider's machines reach the controller's broker
    (it goes into the broker's certificate)."""
    domain: str | None = Field(default=None, min_length=1, max_length=names.DOMAIN_LIMIT)
    """The DNS domain members' FQDNs live under (<hostname>.<domain>) unless a launch names
    its own. A member may claim any host name under it that its launch's other members do
    not hold, so choose one that names only this provider's machines. ssh: none by default
    (an FQDN is then the host name); ec2: the region's internal domain."""

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        return None if value is None else names.domain(value)


class SSHHost(Model):
    address: str = Field(min_length=1)
    """The host's address or name, as the controller reaches it."""
    port: int = Field(default=22, ge=1, le=65535)
    host_keys: list[str] = Field(min_length=1)
    """The host's own SSH public keys ("ssh-ed25519 AAAA..."), pinned: a host that presents
    any other key is refused (there is no trust on first use)."""

    @field_validator("host_keys")
    @classmethod
    def _keys_parse(cls, keys: list[str]) -> list[str]:
        import asyncssh

        for key in keys:
            try:
                asyncssh.import_public_key(key)
            except (asyncssh.KeyImportError, ValueError) as error:
                raise ValueError(f"not an SSH public key ({error}): {key[:40]!r}") from None
        return keys


class SSHProviderConfig(ProviderBase):
    type: Literal["ssh"]
    user: str = "root"
    """The account the controller logs in as; it must be root or have password-less sudo."""
    sudo: bool = False
    """Run the controller's commands through `sudo -n` (for a user other than root)."""
    private_key: SecretKey
    """The controller's private key for `user`, from a Secret."""
    hosts: list[SSHHost] = Field(min_length=1)
    agent_command: str = "occ-agent"
    """How to run the agent on hosts that have it installed; a host without it gets the agent
    from the broker instead (its python3 runs the cloud-config's occ-boot; see
    docs/providers.md). Terminating runs the agent that ran with --uninstall."""
    connect_timeout: float = Field(default=10.0, gt=0)
    allowed_namespaces: list[str] | None = Field(default=None, min_length=1)
    """The only namespaces whose launches may take hosts of this pool (default: any)."""
    reset_command: str | None = Field(default=None, min_length=1)
    """Run on a host (as root, by `sh -c`) after a launch gave it back; the host returns to
    the pool only when it exits 0 (a site's reimage trigger, say)."""
    reset_timeout: float = Field(default=1800.0, gt=0)
    """Seconds the reset command may take; a host whose reset does not finish stays out."""
    uninstall_timeout: float = Field(default=600.0, gt=0)
    """Seconds taking back what the agent installed may take on a host given back (the agent's
    --uninstall, which runs the image's undo scripts, then the provider's removal and check); a
    host where it does not finish stays out of the pool."""

    @field_validator("allowed_namespaces")
    @classmethod
    def _namespace_names(cls, names: list[str] | None) -> list[str] | None:
        for name in names or ():
            if len(name) > 63 or not re.fullmatch(NAME, name):
                raise ValueError(f"not a namespace name: {name!r}")
        if names is not None and len(set(names)) != len(names):
            raise ValueError("a namespace is listed twice")
        return names

    @model_validator(mode="after")
    def _unique_hosts(self) -> SSHProviderConfig:
        seen = set()
        for host in self.hosts:
            if (host.address, host.port) in seen:
                raise ValueError(f"host {host.address}:{host.port} is listed twice")
            seen.add((host.address, host.port))
        return self


class EC2ProviderConfig(ProviderBase):
    type: Literal["ec2"]
    region: str = Field(min_length=1)
    credentials: SecretRef
    """A Secret with `accessKeyId` and `secretAccessKey` (and optionally `sessionToken`)."""
    images: dict[str, str] = Field(default_factory=dict)
    """Image names (as roles name them) to AMI ids; a role may also name an AMI id itself."""
    instance_type: str = "t3.micro"
    """The instance type of roles that give no `size`."""
    subnet_id: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    key_name: str | None = None
    """An EC2 key pair for the default user (optional: users' keys come with the context)."""
    endpoint_url: str | None = None
    """Another endpoint for the EC2 API (a private endpoint, or a test server)."""


ProviderConfig = Annotated[SSHProviderConfig | EC2ProviderConfig, Field(discriminator="type")]


class ProvidersFile(Model):
    providers: list[ProviderConfig] = Field(default_factory=list)

    @field_validator("providers")
    @classmethod
    def _unique_names(cls, providers: list[ProviderConfig]) -> list[ProviderConfig]:
        seen = {"local", "simulated"}
        for provider in providers:
            if provider.name in seen:
                raise ValueError(f"provider name {provider.name!r} is taken")
            seen.add(provider.name)
        return providers


def load(path: Path) -> ProvidersFile:
    """The providers file; errors name the file, the line and the field."""
    return yamlfile.load_model(path, ProvidersFile)
