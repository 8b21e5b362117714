"""The controller of `occ dev up`: our CRDs installed and one `occ-controller` process beside
the development control plane, started once and reused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from api.crd import KINDS
from controlplane import ControlPlane
from controlplane.local import free_port
from kits.kube import ApiError, KubeClient, custom_path
from kits.processes import running as _alive

NAMESPACE = "oneclick-system"
STATE = "controller.json"


async def install_crds(kube: KubeClient) -> None:
    """Our CRDs, applied from the models (no files needed), and the controller's namespace."""
    for kind in KINDS:
        definition = kind.definition()
        await kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                         f"{kind.name}", definition, "occ-dev")
    for _ in range(100):  # established, and served
        try:
            await kube.list(custom_path("ClusterLaunch", "default"))
            break
        except ApiError:
            await asyncio.sleep(0.2)
    with contextlib.suppress(ApiError):
        await kube.create("/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})


def running(workdir: Path) -> dict[str, int] | None:
    try:
        state: dict[str, int] = json.loads((workdir / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(state["pid"]) else None


def start(plane: ControlPlane) -> tuple[dict[str, int], bool]:
    """Start the controller for `plane` unless it runs already; True when it was started."""
    assert plane.workdir is not None
    current = running(plane.workdir)
    if current is not None:
        return current, False

    async def prepare() -> None:
        kube = KubeClient(plane.kubeconfig)
        try:
            await install_crds(kube)
        finally:
            await kube.aclose()

    asyncio.run(prepare())
    state = {"broker_port": free_port(), "metrics_port": free_port(), "health_port": free_port()}
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "OCC_NAMESPACE": NAMESPACE,
           "OCC_BROKER_LISTEN": "0.0.0.0",  # noqa: S104  members reach it over their bridge
           "OCC_BROKER_PORT": str(state["broker_port"]),
           "OCC_METRICS_PORT": str(state["metrics_port"]),
           "OCC_HEALTH_PORT": str(state["health_port"])}
    binary = shutil.which("occ-controller") or str(Path(sys.executable).parent / "occ-controller")
    log = plane.workdir / "controller.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    state["pid"] = process.pid
    (plane.workdir / STATE).write_text(json.dumps(state))
    deadline = time.monotonic() + 60
    while "context broker listening" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"occ-controller did not start; its log {log} ends with:\n"
                               + "\n".join(log.read_text().splitlines()[-15:]))
        time.sleep(0.2)
    return state, True


def stop(plane: ControlPlane, timeout: float = 120.0) -> None:
    """Terminate every launch (so no instance outlives the controller), then the controller."""
    assert plane.workdir is not None
    state = running(plane.workdir)
    if state is None:
        return

    async def terminate_all() -> None:
        kube = KubeClient(plane.kubeconfig)
        try:
            launches = await kube.list(custom_path("ClusterLaunch"))
            for item in launches.get("items", []):
                meta = item["metadata"]
                with contextlib.suppress(ApiError):
                    await kube.delete(custom_path("ClusterLaunch", meta["namespace"],
                                                  meta["name"]))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not (await kube.list(custom_path("LaunchMember"))).get("items"):
                    break
                await asyncio.sleep(1)
        finally:
            await kube.aclose()

    asyncio.run(terminate_all())
    os.kill(state["pid"], signal.SIGTERM)
    for _ in range(200):
        if not _alive(state["pid"]):
            break
        time.sleep(0.1)
    else:
        os.kill(state["pid"], signal.SIGKILL)
    (plane.workdir / STATE).unlink()

