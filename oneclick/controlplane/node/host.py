"""What a node needs from this machine, and puts back: its name and address, the cgroup
subtree its pods live in, mounts left under its folders, kernel settings it turns on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

CGROUP_ROOT = "oneclick-node"  # kubelet's cgroupRoot: every pod's cgroup is below it
CGROUPS = Path("/sys/fs/cgroup")


class HostError(RuntimeError):
    """This machine cannot host a node as it is; the message says what to change."""


def local_addresses() -> set[str]:
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {a["local"] for link in json.loads(out) for a in link.get("addr_info", [])}


def node_name() -> str:
    """This machine's host name, which must resolve to one of its own addresses: the API
    server dials the node by it for logs, exec and port-forward."""
    name = socket.gethostname().lower()
    try:
        resolved = {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except socket.gaierror as error:
        raise HostError(f"this machine's host name {name!r} does not resolve ({error}); the "
                        f"API server reaches the node by it: add it to /etc/hosts") from error
    if not resolved & local_addresses():
        raise HostError(f"this machine's host name {name!r} resolves to "
                        f"{', '.join(sorted(resolved))}, none of them this machine's; the API "
                        f"server reaches the node by it: fix /etc/hosts")
    return name


def node_address() -> str:
    """The IPv4 address of the interface of the default route (what kubelet would pick)."""
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "default"],
                                       capture_output=True, text=True, check=True).stdout)
    for route in routes:
        out = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", route["dev"]],
                             capture_output=True, text=True, check=True).stdout
        for link in json.loads(out):
            for address in link.get("addr_info", []):
                if address.get("scope") == "global":
                    return str(address["local"])
    raise HostError("no IPv4 default route with an address: the node needs an address that "
                    "pods and the API server reach it by")


# -- cgroups (v1 hierarchies, as kubelet's cgroupfs driver uses them) --------------------------

def _hierarchies() -> list[Path]:
    """Every mounted hierarchy: the v1 controllers, and the v2 one beside them (runc makes
    each container's group there too)."""
    return [p for p in sorted(CGROUPS.iterdir()) if (p / "cgroup.procs").exists()]


def make_cgroup_root() -> None:
    """The subtree kubelet puts its pods under (it refuses a cgroupRoot that does not exist)."""
    for hierarchy in _hierarchies():
        path = hierarchy / CGROUP_ROOT
        path.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":  # a cpuset group admits tasks once it has cpus and mems
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not (path / name).read_text().strip():
                    (path / name).write_text((hierarchy / name).read_text())


def cgroup_pids() -> set[int]:
    """Every process in the node's cgroup subtree: its pods' processes."""
    pids: set[int] = set()
    for hierarchy in _hierarchies():
        for procs in (hierarchy / CGROUP_ROOT).rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroup_root() -> None:
    for hierarchy in _hierarchies():
        root = hierarchy / CGROUP_ROOT
        if not root.exists():
            continue
        for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def processes_with(argument: str) -> set[int]:
    """Processes whose command line has `argument` (containerd's shims name its socket)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if argument in (entry / "cmdline").read_bytes().decode(errors="replace").split(
                        "\0"):
                    found.add(int(entry.name))
    return found


# -- mounts --------------------------------------------------------------------------------

def mounts_under(*folders: Path) -> list[str]:
    """Mount points at or below `folders`, deepest first."""
    prefixes = [str(f.resolve()) for f in folders]
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: -p.count("/"))


def unmount_under(*folders: Path) -> None:
    """Unmount what containers, volumes and network namespaces left mounted there."""
    for _ in range(3):  # a mount may hide another at the same point
        points = mounts_under(*folders)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


# -- kernel settings -----------------------------------------------------------------------

def sysctl(name: str, value: str | None = None) -> str:
    """Read a kernel setting, and set it when `value` is given; returns the value before."""
    path = Path("/proc/sys") / name.replace(".", "/")
    before = path.read_text().strip()
    if value is not None and before != value:
        path.write_text(value)
    return before
