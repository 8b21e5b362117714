"""What every benchmark stands on: a real control plane with our CRDs, and a real controller
process (with the simulated provider) whose memory can be read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from oneclick import controlplane
from oneclick.agent.client import BrokerClient, tls_context
from oneclick.api.protocol import Bootstrap, Identity, Report
from oneclick.cli.devcontroller import install_crds
from oneclick.controller.broker import tokens
from oneclick.controller.providers import simulated
from oneclick.controller.secrets import read_secret
from oneclick.controlplane.local import free_port
from oneclick.kits.kube import KubeClient

NAMESPACE = "oneclick-system"  # the controller's, in every benchmark


@contextlib.contextmanager
def control_plane() -> Iterator[controlplane.ControlPlane]:
    """OCC_BENCH_KUBECONFIG's cluster, or a fresh control plane of our own."""
    given = os.environ.get("OCC_BENCH_KUBECONFIG")
    if given:
        yield controlplane.existing(Path(given))
        return
    workdir = Path(tempfile.mkdtemp(prefix="occ-bench-"))
    plane = controlplane.start(workdir)
    try:
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def prepare(kube: KubeClient) -> None:
    await install_crds(kube)
    with contextlib.suppress(Exception):
        await kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": NAMESPACE}})


def prepare_now(kubeconfig: Path) -> None:
    """`prepare`, for a benchmark that is not in an event loop yet: our CRDs and namespace,
    before the controller starts."""
    async def run() -> None:
        kube = KubeClient(kubeconfig=kubeconfig)
        try:
            await prepare(kube)
        finally:
            await kube.aclose()

    asyncio.run(run())


TICKS = os.sysconf("SC_CLK_TCK")


def open_files_up_to_the_hard_limit() -> None:
    """Raise this process's open-file limit to its hard limit (each simulated agent holds a
    connection)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int, children: bool = False) -> float:
    """The process's CPU time (or that of the children it waited for), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    first = 13 if children else 11  # cutime, cstime else utime, stime (from field 3 on)
    return (int(fields[first]) + int(fields[first + 1])) / TICKS


@dataclass
class Controller:
    process: subprocess.Popen[bytes]
    broker_port: int
    log: Path

    @property
    def broker_url(self) -> str:
        return f"https://127.0.0.1:{self.broker_port}"

    def peak_rss_mib(self) -> float:
        """The controller's peak resident memory (VmHWM)."""
        return self._memory("VmHWM")

    def rss_mib(self) -> float:
        """The controller's resident memory now (VmRSS)."""
        return self._memory("VmRSS")

    def cpu_seconds(self) -> float:
        """The controller's CPU time so far."""
        return cpu_seconds(self.process.pid)

    def _memory(self, field: str) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(field + r":\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_controller(kubeconfig: Path, workdir: Path, port: int | None = None) -> Controller:
    """A controller with its broker on `port` (a free one when None: a restart passes the
    port of the controller it replaces, as members' bootstraps name it)."""
    port = port or free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "OCC_NAMESPACE": NAMESPACE,
           "OCC_BROKER_LISTEN": "127.0.0.1", "OCC_BROKER_PORT": str(port),
           "OCC_METRICS_PORT": "0", "OCC_HEALTH_PORT": "0", "OCC_SIMULATED_PROVIDER": "true",
           "OCC_DEFAULT_PROVIDER": "simulated"}
    log = workdir / "controller.log"
    binary = str(Path(sys.executable).parent / "occ-controller")
    before = log.stat().st_size if log.exists() else 0  # (a restart appends to the same log)
    with open(log, "ab") as out:
        process = subprocess.Popen([binary], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "context broker listening" not in log.read_text(errors="replace")[before:]:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("occ-controller did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.2)
    return Controller(process, port, log)


async def apiserver_writes(kube: KubeClient, resource: str) -> int:
    """How many mutating requests the API server has served for `resource` (its own metric)."""
    total = 0
    for line in (await kube.text("/metrics")).splitlines():
        if line.startswith("apiserver_request_total{") and f'resource="{resource}"' in line and (
                re.search(r'verb="(APPLY|PATCH|POST|PUT|DELETE)"', line)):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def _host_key(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """A real public key line: the broker parses host keys as strictly as ssh does."""
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


# The kinds a real agent makes (agent/hostkeys.py).
ED25519 = _host_key(ed25519.Ed25519PrivateKey.generate())
ECDSA = _host_key(ec.generate_private_key(ec.SECP256R1()))


@dataclass
class SimulatedAgents:
    """Agents of simulated instances, in this process, speaking the real protocol over real
    TLS with the agent's own client; the latency of every request is kept by endpoint."""

    broker_url: str
    ca: str
    token_key: bytes
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    async def of(cls, kube: KubeClient, controller: Controller) -> SimulatedAgents:
        """Agents of `controller`'s broker, with its CA and the key members' tokens come from."""
        key = await read_secret(kube, NAMESPACE, "oneclick-token-key")
        ca = await read_secret(kube, NAMESPACE, "oneclick-broker-ca")
        if key is None or ca is None:
            raise RuntimeError("the controller has not made its token key and broker CA")
        return cls(controller.broker_url, ca["tls.crt"].decode(), key["key"])

    async def run(self, member: dict[str, Any]) -> None:
        """One member's agent: identity, context (long poll), report."""
        bootstrap = Bootstrap(broker_url=self.broker_url, ca_cert=self.ca,
                              namespace=member["metadata"]["namespace"],
                              cluster=member["spec"]["cluster"],
                              member=member["metadata"]["name"],
                              token=tokens.token_for(self.token_key, member["metadata"]["uid"]),
                              domain=simulated.DOMAIN)
        # One connection per agent, as real agents have (a shared pool of thousands of
        # connections costs the client more than the broker).
        async with httpx.AsyncClient(
                verify=tls_context(self.ca), timeout=httpx.Timeout(120, connect=60),
                event_hooks={"request": [self._started], "response": [self._answered]}) as http:
            client = BrokerClient(bootstrap, http=http)
            await client.provide_identity(Identity(
                hostname=member["metadata"]["name"][:63],
                fqdn=f"{member['metadata']['name'][:63]}.{bootstrap.domain}",
                addresses=[member["status"]["addresses"][0]], ssh_host_keys=[ED25519, ECDSA]))
            await client.context(wait=30)
            await client.report(Report(ok=True, message="contextualized"))

    @staticmethod
    async def _started(request: httpx.Request) -> None:
        request.extensions["t0"] = time.perf_counter()

    async def _answered(self, response: httpx.Response) -> None:
        took = time.perf_counter() - response.request.extensions["t0"]
        self.latencies[response.request.url.path].append(took)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

