"""Providers: where members run. Each one is configured once per controller."""

from __future__ import annotations

from pathlib import Path

from controller.providers import config
from controller.providers.base import (
    Instance,
    InstanceState,
    LaunchRequest,
    Provider,
    ProviderError,
    SecretReader,
)
from controller.providers.local import LocalProvider
from controller.providers.simulated import SimulatedProvider
from controller.settings import Settings


def configured_providers(settings: Settings, secrets: SecretReader) -> dict[str, Provider]:
    """`local` (and `simulated` when asked for), then those of the providers file."""
    local = LocalProvider(
        state_dir=Path(settings.local_state_dir) if settings.local_state_dir else None,
        images_dir=Path(settings.local_images_dir) if settings.local_images_dir else None,
    )
    providers: dict[str, Provider] = {local.name: local}
    if settings.simulated_provider:
        simulated = SimulatedProvider()
        providers[simulated.name] = simulated
    if settings.providers_file:
        for entry in config.load(Path(settings.providers_file)).providers:
            providers[entry.name] = _remote_provider(entry, secrets)
    return providers


def _remote_provider(entry: config.ProviderConfig, secrets: SecretReader) -> Provider:
    # Imported only when configured: asyncssh and boto3 each add ~25 MiB to the controller.
    if entry.type == "ssh":
        from controller.providers.ssh import SSHProvider
        return SSHProvider(entry, secrets)
    from controller.providers.ec2 import EC2Provider
    return EC2Provider(entry, secrets)


__all__ = ["Instance", "InstanceState", "LaunchRequest", "Provider", "ProviderError",
           "configured_providers"]
