"""Recovery from a controller crash in the middle of a large contextualization.

    python -m bench.recovery                 # 1,000 members
    python -m bench.recovery --members 200 --runs 2

One launch of N members (the shape of bench.ctx_scale: a head node and N-1 compute nodes,
simulated provider, N simulated agents speaking the real protocol over real TLS). Once half of
the agents' identities are stored, the controller is killed (SIGKILL) and started again at
once on the same broker port, as a Deployment would; the agents retry on their own (the agent's
client, its backoff). The same run without the kill is the baseline, timed from the same point.

Prints, for each run: seconds from that point (half the identities in) until every agent has
its report stored ("contextualized") and until the launch's status says N/N ("ready"); for the
killed run, how long the controller took to listen again. Then the cost of the crash: the
killed run's figures less the undisturbed one's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ctx_scale import launch, wait_members
from bench.harness import (
    Controller,
    SimulatedAgents,
    control_plane,
    open_files_up_to_the_hard_limit,
    prepare,
    start_controller,
)
from oneclick.kits.kube import KubeClient
from oneclick.kits.resources import custom_path

IDENTITY = "/v1/identity"


async def _half_identities(agents: SimulatedAgents, size: int) -> None:
    while True:  # (counted from the agents' side: no API calls while they run)
        if len(agents.latencies[IDENTITY]) >= size // 2:
            return
        await asyncio.sleep(0.01)


async def _ready(kube: KubeClient, name: str, size: int) -> None:
    while True:
        status = (await kube.get(custom_path("ClusterLaunch", "default", name))).get(
            "status") or {}
        if status.get("readyMembers") == f"{size}/{size}":
            return
        await asyncio.sleep(0.1)


async def one_run(kube: KubeClient, kubeconfig: Path, size: int, workdir: Path,
                  kill: bool, number: int) -> dict[str, Any]:
    controllers: list[Controller] = [start_controller(kubeconfig, workdir)]
    name = f"recovery-{'killed' if kill else 'undisturbed'}-{number}"
    try:
        await kube.create(custom_path("ClusterLaunch", "default"), launch(name, size))
        members = await wait_members(kube, name, size)
        agents = await SimulatedAgents.of(kube, controllers[0])
        tasks = [asyncio.create_task(agents.run(m)) for m in members]
        everyone = asyncio.gather(*tasks)
        await _half_identities(agents, size)
        half = time.perf_counter()
        figures: dict[str, Any] = {"run": "killed" if kill else "undisturbed", "members": size}
        if kill:
            controllers[0].process.kill()  # SIGKILL: no goodbye
            controllers[0].process.wait()
            controllers.append(start_controller(kubeconfig, workdir,
                                                port=controllers[0].broker_port))
            figures["controller_back_s"] = round(time.perf_counter() - half, 2)
        await everyone
        figures["contextualized_s"] = round(time.perf_counter() - half, 2)
        await _ready(kube, name, size)
        figures["ready_s"] = round(time.perf_counter() - half, 2)
        await kube.delete(custom_path("ClusterLaunch", "default", name))
        await wait_members(kube, name, 0)
        return figures
    finally:
        controllers[-1].stop()


async def main_async(size: int, runs: int) -> None:
    open_files_up_to_the_hard_limit()  # thousands of connections
    with control_plane() as plane, tempfile.TemporaryDirectory() as workdir:
        kube = KubeClient(plane.kubeconfig)
        try:
            await prepare(kube)
            results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for number in range(runs):
                for kill in (False, True):
                    figures = await one_run(kube, plane.kubeconfig, size, Path(workdir), kill,
                                            number)
                    results[kill].append(figures)
                    print(json.dumps(figures), flush=True)
            cost = {key: round(_mean(results[True], key) - _mean(results[False], key), 2)
                    for key in ("contextualized_s", "ready_s")}
            print(json.dumps({"crash_costs_s": cost, "runs": runs}), flush=True)
        finally:
            await kube.aclose()


def _mean(figures: list[dict[str, Any]], key: str) -> float:
    return sum(float(f[key]) for f in figures) / len(figures)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Time to contextualize N members through a controller crash, and without.")
    parser.add_argument("--members", type=int, default=1000, help="launch size (default 1000)")
    parser.add_argument("--runs", type=int, default=1,
                        help="pairs of runs (undisturbed, killed); default 1")
    args = parser.parse_args()
    asyncio.run(main_async(args.members, args.runs))


if __name__ == "__main__":
    main()
