"""What every benchmark stands on: a real control plane with our CRDs, and a real controller
process (with the simulated provider) whose memory can be read."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import controlplane
from cli.devcontroller import install_crds
from controlplane.local import free_port
from kits.kube import KubeClient, core_path


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


async def prepare(kube: KubeClient, namespace: str) -> None:
    await install_crds(kube)
    with contextlib.suppress(Exception):
        await kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": namespace}})


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
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_controller(kubeconfig: Path, namespace: str, workdir: Path) -> Controller:
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "OCC_NAMESPACE": namespace,
           "OCC_BROKER_LISTEN": "127.0.0.1", "OCC_BROKER_PORT": str(port),
           "OCC_METRICS_PORT": "0", "OCC_HEALTH_PORT": "0", "OCC_SIMULATED_PROVIDER": "true",
           "OCC_DEFAULT_PROVIDER": "simulated"}
    log = workdir / "controller.log"
    binary = str(Path(sys.executable).parent / "occ-controller")
    with open(log, "ab") as out:
        process = subprocess.Popen([binary], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "context broker listening" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("occ-controller did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.2)
    return Controller(process, port, log)


async def secret_data(kube: KubeClient, namespace: str, name: str) -> dict[str, bytes]:
    data = (await kube.get(core_path("secrets", namespace, name)))["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


async def apiserver_writes(kube: KubeClient, resource: str) -> int:
    """How many mutating requests the API server has served for `resource` (its own metric)."""
    total = 0
    for line in (await kube.text("/metrics")).splitlines():
        if line.startswith("apiserver_request_total{") and f'resource="{resource}"' in line and (
                re.search(r'verb="(APPLY|PATCH|POST|PUT|DELETE)"', line)):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

