"""One launch of N members contextualized through the real API server, controller and broker.

    python -m bench.ctx_scale                    # N = 10, 100, 1000
    python -m bench.ctx_scale --sizes 5000

The launch has the shape of a large batch cluster: one head node and N-1 compute nodes that
require each other's roles, with /etc/hosts and host-based SSH off (at thousands of members,
every member receiving every other member is gigabytes of context). Instances come from the
simulated provider (running at once); the agents are simulated in this process but speak the
real protocol over real TLS with the agent's own client: identity, context long poll, report.

Prints: time from the last agent's start until every member is contextualized (reports
stored, and the launch's status says N/N), broker requests per second, p50/p99 latency per
endpoint, API writes per member, the controller's peak memory, the largest object written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    SimulatedAgents,
    apiserver_writes,
    control_plane,
    open_files_up_to_the_hard_limit,
    percentile,
    prepare,
    start_controller,
)
from oneclick.api import API_VERSION
from oneclick.kits.kube import KubeClient
from oneclick.kits.resources import custom_path


def launch(name: str, size: int) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "ClusterLaunch",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"provider": "simulated", "hostsFile": False, "sshHostBased": False,
                     "timeouts": {"launch": "30m", "contextualization": "30m"},
                     "roles": [
                         {"name": "head-node", "image": "simulated", "provides": ["server"],
                          "requires": {"roles": ["client"]}},
                         {"name": "compute-nodes", "image": "simulated", "quantity": size - 1,
                          "provides": ["client"], "knownHosts": False,
                          "requires": {"roles": ["server"]}}]}}


async def wait_members(kube: KubeClient, name: str, size: int) -> list[dict[str, Any]]:
    """Poll until exactly `size` members exist, each with its instance."""
    while True:
        items = (await kube.list(custom_path("LaunchMember", "default"),
                                 labelSelector=f"clusters.oneclick.dev/cluster={name}"))["items"]
        launched = [m for m in items if (m.get("status") or {}).get("instanceId")]
        if len(launched) == size == len(items):
            return launched
        await asyncio.sleep(0.5)


async def one_size(kube: KubeClient, kubeconfig: Path, size: int, workdir: Path) -> dict[str, Any]:
    controller = start_controller(kubeconfig, workdir)
    name = f"scale-{size}"
    try:
        await kube.create(custom_path("ClusterLaunch", "default"), launch(name, size))
        members = await wait_members(kube, name, size)
        writes_before = await apiserver_writes(kube, "launchmembers")
        agents = await SimulatedAgents.of(kube, controller)
        latencies = agents.latencies
        launched_mib = controller.rss_mib()
        tasks = [asyncio.create_task(agents.run(m)) for m in members]
        last_start = time.perf_counter()
        await asyncio.gather(*tasks)
        reported = time.perf_counter() - last_start
        while True:  # ... and the controller has aggregated them
            status = (await kube.get(custom_path("ClusterLaunch", "default", name))).get(
                "status") or {}
            if status.get("readyMembers") == f"{size}/{size}":
                break
            await asyncio.sleep(0.1)
        ready = time.perf_counter() - last_start
        writes = await apiserver_writes(kube, "launchmembers") - writes_before
        launch_json = await kube.get(custom_path("ClusterLaunch", "default", name))
        member_list = await kube.list(custom_path("LaunchMember", "default"),
                                      labelSelector=f"clusters.oneclick.dev/cluster={name}")
        largest = max([len(json.dumps(launch_json))] + [
            len(json.dumps(m)) for m in member_list["items"]])
        requests = sum(len(v) for v in latencies.values())
        figures = {
            "members": size,
            "contextualized_s": round(reported, 2),
            "launch_ready_s": round(ready, 2),
            "broker_requests": requests,
            "requests_per_s": round(requests / reported, 1),
            "latency_ms": {path.rsplit("/", 1)[1]: {
                "p50": round(1000 * percentile(v, 0.5), 1),
                "p99": round(1000 * percentile(v, 0.99), 1)} for path, v in latencies.items()},
            "api_writes_per_member": round(writes / size, 2),
            "controller_mib_before_agents": round(launched_mib, 1),
            "controller_peak_mib": round(controller.peak_rss_mib(), 1),
            "largest_object_kib": round(largest / 1024, 1),
        }
        await kube.delete(custom_path("ClusterLaunch", "default", name))
        await wait_members(kube, name, 0)
        return figures
    finally:
        controller.stop()


async def main_async(sizes: list[int]) -> None:
    open_files_up_to_the_hard_limit()  # thousands of connections
    with control_plane() as plane, tempfile.TemporaryDirectory() as workdir:
        kube = KubeClient(plane.kubeconfig)
        try:
            await prepare(kube)
            for size in sizes:
                figures = await one_size(kube, plane.kubeconfig, size, Path(workdir))
                print(json.dumps(figures), flush=True)
        finally:
            await kube.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Contextualize one launch of N members.")
    parser.add_argument("--sizes", default="10,100,1000",
                        help="comma-separated member counts (default 10,100,1000)")
    args = parser.parse_args()
    asyncio.run(main_async([int(s) for s in args.sizes.split(",")]))


if __name__ == "__main__":
    main()
