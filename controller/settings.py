"""The controller's settings, from environment variables (the Helm chart sets them).

| variable | default | meaning |
| --- | --- | --- |
| OCC_NAMESPACE | default | namespace of the controller's own Secrets (broker CA, token key) |
| OCC_WATCH_NAMESPACES | (all) | comma-separated namespaces to reconcile; empty: the whole cluster |
| OCC_DEFAULT_PROVIDER | local | provider of launches that name none |
| OCC_BROKER_LISTEN | 0.0.0.0 | address the broker listens on |
| OCC_BROKER_PORT | 8443 | port the broker listens on (0: any free port) |
| OCC_BROKER_URL | https://<provider's broker address>:<port> | the broker's URL as VMs reach it |
| OCC_BROKER_NAMES | 127.0.0.1,localhost | more names and addresses for the broker's certificate |
| OCC_BROKER_CA_SECRET | oneclick-broker-ca | Secret holding the broker CA (made when absent) |
| OCC_TOKEN_KEY_SECRET | oneclick-token-key | Secret holding the key bootstrap tokens derive from |
| OCC_METRICS_PORT | 9090 | Prometheus metrics port (0: off) |
| OCC_HEALTH_PORT | 8080 | kopf liveness endpoint port (0: off) |
| OCC_LOCAL_STATE_DIR | ~/.local/state/oneclick/local | where the local provider keeps its members |
| OCC_LOCAL_IMAGES_DIR | samples/images | the local provider's image folders |
| OCC_SIMULATED_PROVIDER | false | also offer the `simulated` provider (benchmarks, dry runs) |
| OCC_PROVIDERS_FILE | (none) | YAML file of more providers (ssh, ec2): see docs/providers.md |
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field


class Settings(BaseModel):
    namespace: str = "default"
    watch_namespaces: list[str] = Field(default_factory=list)
    default_provider: str = "local"
    broker_listen: str = "0.0.0.0"  # noqa: S104  VMs reach the broker from elsewhere
    broker_port: int = Field(default=8443, ge=0, le=65535)
    broker_url: str | None = None
    broker_names: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost"])
    broker_ca_secret: str = "oneclick-broker-ca"  # noqa: S105  a Secret's name
    token_key_secret: str = "oneclick-token-key"  # noqa: S105  a Secret's name
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    health_port: int = Field(default=8080, ge=0, le=65535)
    local_state_dir: str | None = None
    local_images_dir: str | None = None
    simulated_provider: bool = False
    providers_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(f"OCC_{name.upper()}")
            if raw is None:
                continue
            is_list = field.annotation == list[str]
            values[name] = [v.strip() for v in raw.split(",") if v.strip()] if is_list else raw
        return cls.model_validate(values)

    def broker_url_for(self, host: str, port: int) -> str:
        """The URL members use: the one configured, else the provider's broker address."""
        return self.broker_url or f"https://{host}:{port}"
