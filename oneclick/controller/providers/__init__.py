"""Providers: where members run. Each one is configured once per controller."""

from __future__ import annotations

from pathlib import Path

from oneclick.controller.providers import config
from oneclick.controller.providers.base import (
    Instance,
    InstanceState,
    LaunchRequest,
    Provider,
    ProviderError,
    SecretReader,
)
from oneclick.controller.providers.local import LocalProvider
from oneclick.controller.providers.simulated import SimulatedProvider
from oneclick.controller.settings import Settings
from oneclick.kits.kube import KubeClient


def configured_providers(settings: Settings, providers_file: config.ProvidersFile | None,
                         secrets: SecretReader, kube: KubeClient) -> dict[str, Provider]:
    """`local` (and `simulated` when asked for), then those of the providers file, parsed
    once at start (an ssh pool keeps its claims in the controller's namespace, through
    `kube`)."""
    local = LocalProvider(
        state_dir=Path(settings.local_state_dir) if settings.local_state_dir else None,
        images_dir=Path(settings.local_images_dir) if settings.local_images_dir else None,
    )
    providers: dict[str, Provider] = {local.name: local}
    if settings.simulated_provider:
        simulated = SimulatedProvider()
        providers[simulated.name] = simulated
    for entry in providers_file.providers if providers_file is not None else []:
        providers[entry.name] = _remote_provider(entry, secrets, kube, settings.namespace)
    return providers


def _remote_provider(entry: config.ProviderConfig, secrets: SecretReader, kube: KubeClient,
                     namespace: str) -> Provider:
    # Imported only when configured: asyncssh and boto3 each add ~25 MiB to the controller.
    if entry.type == "ssh":
        from oneclick.controller.providers.claims import HostClaims
        from oneclick.controller.providers.ssh import SSHProvider
        return SSHProvider(entry, secrets, HostClaims(kube, namespace, entry.name))
    from oneclick.controller.providers.ec2 import EC2Provider
    return EC2Provider(entry, secrets)


__all__ = ["Instance", "InstanceState", "LaunchRequest", "Provider", "ProviderError",
           "configured_providers"]
