"""The provider interface: how the controller asks a cloud (or this machine) for instances.

Every call is idempotent: `launch` with the same idempotency key returns the instance it
already made (a controller that crashed between a launch and writing its result down must
never make a second one); `describe` and `terminate` take many instances at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class InstanceState(StrEnum):
    PENDING = "pending"  # accepted, not yet booted
    RUNNING = "running"  # booted (the agent may still be working)
    FAILED = "failed"  # died or could not start
    TERMINATED = "terminated"  # gone, or never existed


@dataclass(frozen=True)
class LaunchRequest:
    """One member to launch."""

    idempotency_key: str  # the LaunchMember's uid
    namespace: str
    cluster: str
    member: str
    role: str
    index: int
    image: str
    size: str | None
    user_data: str  # a cloud-config with the bootstrap (userdata.render); the one secret it gets


@dataclass(frozen=True)
class Instance:
    id: str
    state: InstanceState
    addresses: list[str] = field(default_factory=list)
    message: str = ""


class ProviderError(RuntimeError):
    """A provider call failed; `permanent` ones (bad image, exhausted pool) are not retried."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# A Secret's data by name (from the controller's namespace), None when there is none.
SecretReader = Callable[[str], Awaitable[dict[str, bytes] | None]]


async def secret_data(read: SecretReader, provider: str, secret: str,
                      required: tuple[str, ...]) -> dict[str, bytes]:
    """A Secret a provider's configuration names, with its required keys; a clear error when
    it or one of them is missing."""
    data = await read(secret)
    if data is None:
        raise ProviderError(f"provider {provider!r}: there is no Secret {secret!r} in the "
                            "controller's namespace", permanent=True)
    for key in required:
        if key not in data:
            raise ProviderError(f"provider {provider!r}: the Secret {secret!r} has no key "
                                f"{key!r} (it has: {', '.join(sorted(data)) or 'none'})",
                                permanent=True)
    return data


class Provider(Protocol):
    name: str

    @property
    def broker_host(self) -> str:
        """The address at which this provider's instances reach the controller's broker."""
        ...

    @property
    def domain(self) -> str | None:
        """The DNS domain its members' FQDNs live under unless a launch names its own (None:
        a member's FQDN is its host name)."""
        ...

    def limitations(self) -> list[str]:
        """What this provider cannot offer here (shown to users and to tests)."""
        ...

    async def launch(self, request: LaunchRequest) -> Instance: ...

    async def lookup(self, idempotency_key: str) -> Instance | None:
        """The instance a launch with this key made, if any (a crash may have hidden it)."""
        ...

    async def describe(self, instance_ids: list[str]) -> dict[str, Instance]: ...

    async def terminate(self, instance_ids: list[str]) -> None: ...

    async def aclose(self) -> None:
        """Let go of what the provider holds open (connections); the controller calls it once,
        as it stops."""
        ...


@runtime_checkable
class RefreshesBootstrap(Protocol):
    """Optional: a provider that can hand a running instance a new bootstrap (the broker moved
    for good; its agent reads the bootstrap again after failed connections). EC2 cannot change
    a running instance's user data: there the broker's URL must be a stable name."""

    async def refresh_bootstrap(self, instance_id: str, user_data: str) -> None:
        """Replace the instance's bootstrap with `user_data`; ProviderError when it cannot."""
        ...
