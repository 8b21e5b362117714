"""The controller's settings, from environment variables (the Helm chart sets them).

| variable | default | meaning |
| --- | --- | --- |
| OCC_NAMESPACE | default | namespace of the controller's own Secrets (broker CA, token key) |
| OCC_WATCH_NAMESPACES | (all) | comma-separated namespaces to reconcile; empty: the whole cluster |
| OCC_DEFAULT_PROVIDER | local | provider of launches that name none |
| OCC_BROKER_LISTEN | 0.0.0.0 | address the broker listens on |
| OCC_BROKER_PORT | 8443 | port the broker listens on (0: any free port, another at each start) |
| OCC_BROKER_URL | https://<provider's broker address>:<port> | the broker's URL as VMs reach it |
| OCC_BROKER_NAMES | 127.0.0.1,localhost | more names and addresses for the broker's certificate |
| OCC_BROKER_IDLE_TIMEOUT | 75 | seconds a broker connection may sit idle between requests |
| OCC_BROKER_HEADER_TIMEOUT | 10 | seconds a request's head may take, from its first byte |
| OCC_BROKER_MAX_CONNECTIONS | 12000 | open broker connections in all; more are closed at once |
| OCC_BROKER_MAX_CONNECTIONS_PER_SOURCE | 6000 | the same from one address (IPv6: one /64) |
| OCC_BROKER_CA_SECRET | oneclick-broker-ca | Secret holding the broker CA (made when absent) |
| OCC_TOKEN_KEY_SECRET | oneclick-token-key | Secret holding the key bootstrap tokens derive from |
| OCC_METRICS_PORT | 9090 | Prometheus metrics port (0: off) |
| OCC_HEALTH_PORT | 8080 | kopf liveness endpoint port (0: off) |
| OCC_LOCAL_STATE_DIR | ~/.local/state/oneclick/local | where the local provider keeps its members |
| OCC_LOCAL_IMAGES_DIR | (the package's sample images) | the local provider's image folders |
| OCC_SIMULATED_PROVIDER | false | also offer the `simulated` provider (benchmarks, dry runs) |
| OCC_AGENT_BUNDLE | (image: its own) | agent file served at /v1/agent (empty: none) |
| OCC_PROVIDERS_FILE | (none) | YAML file of more providers (ssh, ec2): see docs/providers.md |
| OCC_LOG_FORMAT | text | `text`, or `json` (one object per line, for log collectors) |
| OCC_LEADER_ELECTION | false | elect one leader among replicas by a Lease (the chart turns it on) |
| OCC_LEASE_NAME | oneclick-controller | that Lease, in OCC_NAMESPACE |
| OCC_LEADER_IDENTITY | <host name>_<pid> | this replica's name in the Lease (chart: the pod's) |
| OCC_LEASE_DURATION | 15 | seconds a standby waits for a lease left unrenewed before it takes it |
| OCC_LEASE_RENEW_DEADLINE | 10 | seconds a leader may go without renewing before it exits |
| OCC_LEASE_RETRY_PERIOD | 2 | seconds between renewals, and between a standby's tries |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class Settings(BaseModel):
    namespace: str = "default"
    watch_namespaces: list[str] = Field(default_factory=list)
    default_provider: str = "local"
    broker_listen: str = "0.0.0.0"  # noqa: S104  VMs reach the broker from elsewhere
    broker_port: int = Field(default=8443, ge=0, le=65535)
    broker_url: str | None = None
    broker_names: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost"])
    # Agents long-poll for up to 60 s and keep their connection between calls: idle is longer.
    broker_idle_timeout: float = Field(default=75.0, gt=0, le=3600)
    broker_header_timeout: float = Field(default=10.0, gt=0, le=300)
    # Sized for 10,000 agents holding a connection each (~35 KiB each: within the chart's
    # 512 MiB). One address may hold half: members behind one NAT address (or a Service's
    # SNAT) are one source, and a launch of 5,000 of them must still fit.
    broker_max_connections: int = Field(default=12_000, ge=1)
    broker_max_connections_per_source: int = Field(default=6_000, ge=1)
    # The ServiceAccount the controller runs as (the chart's): the Secrets and the Lease the
    # controller makes are owned by it, so that uninstalling the chart removes them too.
    owner_service_account: str | None = None
    broker_ca_secret: str = "oneclick-broker-ca"  # noqa: S105  a Secret's name
    token_key_secret: str = "oneclick-token-key"  # noqa: S105  a Secret's name
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    health_port: int = Field(default=8080, ge=0, le=65535)
    local_state_dir: str | None = None
    local_images_dir: str | None = None
    simulated_provider: bool = False
    providers_file: str | None = None
    agent_bundle: str | None = None
    log_format: Literal["text", "json"] = "text"
    # Off by default: a lone controller (occ dev up) restarted after a crash would otherwise
    # wait out its own previous process's lease.
    leader_election: bool = False
    lease_name: str = "oneclick-controller"
    leader_identity: str | None = None
    lease_duration: float = Field(default=15.0, gt=0, le=3600)
    lease_renew_deadline: float = Field(default=10.0, gt=0, le=3600)
    lease_retry_period: float = Field(default=2.0, gt=0, le=3600)

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

    @model_validator(mode="after")
    def _lease_periods(self) -> Settings:
        # A leader must give up before a standby may take over, and renew more than once first.
        if not self.lease_retry_period < self.lease_renew_deadline < self.lease_duration:
            raise ValueError("OCC_LEASE_RETRY_PERIOD < OCC_LEASE_RENEW_DEADLINE < "
                             "OCC_LEASE_DURATION must hold")
        return self

    def broker_url_for(self, host: str, port: int) -> str:
        """The URL members use: the one configured, else the provider's broker address."""
        return self.broker_url or f"https://{host}:{port}"
