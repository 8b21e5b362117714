"""What a node leaves on this machine once stopped: nothing, or the test says what."""

from __future__ import annotations

import subprocess
from pathlib import Path

from oneclick.controlplane.node import host
from oneclick.controlplane.node import network as node_network
from oneclick.controlplane.node.node import NODE_DATA, RUN_DIR, SOCKET


def machine_leftovers(workdir: Path) -> list[str]:
    """What a stopped node must not leave on this machine."""
    found = []
    if host.processes_with(str(SOCKET)):
        found.append(f"containerd shims: {sorted(host.processes_with(str(SOCKET)))}")
    if host.cgroup_pids() or any((h / host.CGROUP_ROOT).exists()
                                 for h in host.CGROUPS.iterdir()):
        found.append("the pods' cgroup subtree")
    mounts = host.mounts_under(workdir, RUN_DIR, NODE_DATA)
    if mounts:
        found.append(f"mounts: {mounts}")
    found += [str(folder) for folder in (RUN_DIR, NODE_DATA) if folder.exists()]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    if f" {node_network.BRIDGE}:" in links:
        found.append(f"the bridge {node_network.BRIDGE}")
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True,
                               text=True).stdout
        found += [f"{table}: {line}" for line in rules.splitlines()
                  if node_network.CHAIN in line or "KUBE-" in line]
    return found
