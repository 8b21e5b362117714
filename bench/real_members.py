"""N real members on the local provider: from the launch's creation to Ready, and where the
time goes.

    python -m bench.real_members                    # N = 10, 25, 50, one run each
    python -m bench.real_members --sizes 50 --runs 3

Everything is real: the control plane, the controller with the local provider, and N members
each in its own network, mount and UTS namespaces with its own sshd and agent (the sample
image's scripts: a host certificate, the jobrun account). The launch is one role of N peers
that require each other (every member learns every other: /etc/hosts, host-based SSH), as
`samples/peers.yaml` with its quantity set. Needs root.

Prints one JSON line per run: seconds from the create to each milestone (every member
launched, running, identified, contextualized; the launch Ready), the failures (must be 0),
the controller's CPU seconds and peak memory, and the members' CPU (what each member's boot
ran and waited for: its agent's first pass, key generation, role scripts), and the member
whose identity came last with its agent's log until then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import NAMESPACE, control_plane, cpu_seconds, prepare_now
from bench.slurm_ready import start_controller
from oneclick.kits.kube import KubeClient, NotFound
from oneclick.kits.resources import custom_path

ROOT = Path(__file__).resolve().parents[1]


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def members_cpu_seconds(state: Path, launch: str) -> float:
    """What each member's init waited for (its agent's first pass, key generation, scripts),
    summed over the launch's members."""
    total = 0.0
    for record in state.glob("instances/*/instance.json"):
        instance = json.loads(record.read_text())
        if instance["member"].startswith(f"{launch}-") and instance.get("pid"):
            total += cpu_seconds(int(instance["pid"]), children=True)
    return total


def document(name: str, size: int) -> dict[str, Any]:
    launch: dict[str, Any] = yaml.safe_load((ROOT / "samples" / "peers.yaml").read_text())
    launch["metadata"] = {"name": name, "namespace": NAMESPACE}
    launch["spec"]["roles"][0]["quantity"] = size
    launch["spec"]["lifetime"] = "1h"
    return launch


def last_identified(state: Path, launch: str) -> dict[str, Any]:
    """The member whose agent sent its identity last, and its agent's log until then (what
    the tail of a launch waited for: a slow boot, a retry)."""
    latest: tuple[str, str, list[str]] = ("", "", [])
    for record in state.glob("instances/*/instance.json"):
        instance = json.loads(record.read_text())
        if not instance["member"].startswith(f"{launch}-"):
            continue
        log = record.parent / "root" / "var" / "log" / "oneclick-agent.log"
        lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
        until = next((i for i, line in enumerate(lines) if " identity: " in line), len(lines))
        when = lines[until].split()[0] if until < len(lines) else "~"  # (~: never; sorts last)
        if when > latest[1]:
            latest = (instance["member"], when, lines[:until + 1])
    member, when, lines = latest
    return {"member": member, "at": when, "agent_log": lines[-12:]}


async def one_run(kube: KubeClient, state: Path, controller_pid: int, size: int,
                  name: str) -> dict[str, Any]:
    cpu_before = cpu_seconds(controller_pid)
    started = time.perf_counter()
    await kube.create(custom_path("ClusterLaunch", NAMESPACE), document(name, size))
    milestones: dict[str, float] = {}
    counts: dict[str, Any] = {}
    phase = None
    while phase not in ("Ready", "Failed", "Expired"):
        if time.perf_counter() - started > 900:
            raise RuntimeError(f"{name} not Ready within 900 s: {counts}")
        await asyncio.sleep(0.1)
        status = (await kube.get(custom_path("ClusterLaunch", NAMESPACE, name))).get(
            "status") or {}
        phase, counts = status.get("phase"), status.get("members") or {}
        now = round(time.perf_counter() - started, 2)
        for milestone in ("launched", "running", "identified", "contextualized"):
            if counts.get(milestone) == size and milestone not in milestones:
                milestones[milestone] = now
    milestones["ready"] = round(time.perf_counter() - started, 2)
    members_cpu = members_cpu_seconds(state, name)
    last = last_identified(state, name)
    result = {
        "members": size, "phase": phase, "seconds": milestones,
        "failed": counts.get("failed", 0) + (0 if phase == "Ready" else 1),
        "controller_cpu_s": round(cpu_seconds(controller_pid) - cpu_before, 1),
        "controller_peak_mib": round(peak_mib(controller_pid), 1),
        "members_cpu_s": round(members_cpu, 1),
        "last_identified": last,
    }
    await kube.delete(custom_path("ClusterLaunch", NAMESPACE, name))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            await kube.get(custom_path("ClusterLaunch", NAMESPACE, name))
        except NotFound:
            break
        await asyncio.sleep(0.5)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,25,50")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.real_members needs root: the local provider's members get their own "
                 "namespaces")
    workdir = Path(tempfile.mkdtemp(prefix="occ-bench-real-"))
    with control_plane() as plane:
        prepare_now(plane.kubeconfig)
        controller = start_controller(plane.kubeconfig, workdir)

        async def run_all() -> None:
            kube = KubeClient(kubeconfig=plane.kubeconfig)
            try:
                for size in (int(s) for s in args.sizes.split(",")):
                    for run in range(args.runs):
                        print(json.dumps(await one_run(
                            kube, workdir / "local", controller.pid, size,
                            f"real-{size}-{run}")), flush=True)
            finally:
                await kube.aclose()

        try:
            asyncio.run(run_all())
        finally:
            controller.terminate()
            controller.wait(30)


if __name__ == "__main__":
    main()
