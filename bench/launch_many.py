"""Many small launches at once: 100 launches of 3 members, created together, until all are Ready.

    python -m bench.launch_many                  # 100 launches of 3 members
    python -m bench.launch_many --launches 200
    python -m bench.launch_many --idle 30       # then 30 s with every launch Ready

Each launch is the quick start's shape (a head node and two compute nodes that require each
other's roles, /etc/hosts on). Instances come from the simulated provider; each member's agent
is simulated in this process (the real protocol over real TLS) and starts as soon as its member
has an instance, as a booted VM's would.

Prints: time from the first create to every launch Ready, p50/p99 of each launch's own time to
Ready, API writes per member (members and launches together), the controller's peak memory;
with --idle, the controller's CPU while every launch stays Ready and nothing happens (as a
share of one core).
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
    percentile,
    prepare,
    start_controller,
)
from oneclick.api import API_VERSION
from oneclick.kits.kube import KubeClient
from oneclick.kits.resources import custom_path

MEMBERS_PER_LAUNCH = 3


def launch(name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "ClusterLaunch",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"provider": "simulated", "roles": [
                {"name": "head-node", "image": "simulated", "provides": ["server"],
                 "requires": {"roles": ["client"]}},
                {"name": "compute-nodes", "image": "simulated", "quantity": 2,
                 "provides": ["client"], "requires": {"roles": ["server"]}}]}}


async def run(kube: KubeClient, kubeconfig: Path, count: int, workdir: Path,
              idle: float = 0.0) -> dict[str, Any]:
    controller = start_controller(kubeconfig, workdir)
    try:
        agents = await SimulatedAgents.of(kube, controller)
        writes_before = (await apiserver_writes(kube, "launchmembers")
                         + await apiserver_writes(kube, "clusterlaunches"))
        names = [f"many-{i:03d}" for i in range(count)]
        started = time.perf_counter()
        await asyncio.gather(*(kube.create(custom_path("ClusterLaunch", "default"), launch(n))
                               for n in names))
        booted: set[str] = set()
        running: list[asyncio.Task[None]] = []
        ready_after: dict[str, float] = {}
        while len(ready_after) < count:
            members = (await kube.list(custom_path("LaunchMember", "default")))["items"]
            for member in members:  # a VM boots once it exists: its agent starts
                uid = member["metadata"]["uid"]
                if (member.get("status") or {}).get("instanceId") and uid not in booted:
                    booted.add(uid)
                    running.append(asyncio.create_task(agents.run(member)))
            for cl in (await kube.list(custom_path("ClusterLaunch", "default")))["items"]:
                phase = (cl.get("status") or {}).get("phase")
                if phase == "Ready" and cl["metadata"]["name"] not in ready_after:
                    ready_after[cl["metadata"]["name"]] = time.perf_counter() - started
                elif phase == "Failed":
                    raise RuntimeError(f"{cl['metadata']['name']} failed: {cl['status']}")
            await asyncio.sleep(0.2)
        all_ready = time.perf_counter() - started
        await asyncio.gather(*running)
        writes = (await apiserver_writes(kube, "launchmembers")
                  + await apiserver_writes(kube, "clusterlaunches") - writes_before)
        total = count * MEMBERS_PER_LAUNCH
        figures = {
            "launches": count, "members": total,
            "all_ready_s": round(all_ready, 2),
            "launch_ready_s": {"p50": round(percentile(list(ready_after.values()), 0.5), 2),
                               "p99": round(percentile(list(ready_after.values()), 0.99), 2)},
            "api_writes_per_member": round(writes / total, 2),
            "controller_peak_mib": round(controller.peak_rss_mib(), 1),
        }
        if idle:
            await asyncio.sleep(2)  # (the passes that follow the last Ready writes)
            cpu_before, since = controller.cpu_seconds(), time.perf_counter()
            await asyncio.sleep(idle)
            figures["idle_cpu_percent"] = round(100 * (controller.cpu_seconds() - cpu_before)
                                                / (time.perf_counter() - since), 1)
        await asyncio.gather(*(kube.delete(custom_path("ClusterLaunch", "default", n))
                               for n in names))
        return figures
    finally:
        controller.stop()


async def main_async(count: int, idle: float) -> None:
    with control_plane() as plane, tempfile.TemporaryDirectory() as workdir:
        kube = KubeClient(plane.kubeconfig)
        try:
            await prepare(kube)
            print(json.dumps(await run(kube, plane.kubeconfig, count, Path(workdir), idle)),
                  flush=True)
        finally:
            await kube.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Many launches of 3 members at once.")
    parser.add_argument("--launches", type=int, default=100,
                        help="how many launches to create together (default 100)")
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="then measure the controller's CPU for this long, every launch "
                             "Ready (default: not measured)")
    args = parser.parse_args()
    asyncio.run(main_async(args.launches, args.idle))


if __name__ == "__main__":
    main()
