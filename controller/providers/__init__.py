"""Providers: where members run. Each one is configured once per controller."""

from __future__ import annotations

from pathlib import Path

from controller.providers.base import (
    Instance,
    InstanceState,
    LaunchRequest,
    Provider,
    ProviderError,
)
from controller.providers.local import LocalProvider
from controller.providers.simulated import SimulatedProvider
from controller.settings import Settings


def configured_providers(settings: Settings) -> dict[str, Provider]:
    local = LocalProvider(
        state_dir=Path(settings.local_state_dir) if settings.local_state_dir else None,
        images_dir=Path(settings.local_images_dir) if settings.local_images_dir else None,
    )
    providers: dict[str, Provider] = {local.name: local}
    if settings.simulated_provider:
        simulated = SimulatedProvider()
        providers[simulated.name] = simulated
    return providers


__all__ = ["Instance", "InstanceState", "LaunchRequest", "Provider", "ProviderError",
           "configured_providers"]
