"""The local provider's private network: a bridge on this machine and one network namespace
per member, joined to it by a veth pair. The subnet is used only here: no forwarding, no NAT,
no route beyond the bridge."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
from pathlib import Path

BRIDGE = "occ0"
# Addresses are claimed machine-wide (one file each), so two controllers on one machine (a
# demo and a test run, say) never hand out the same one.
CLAIMS = Path("/run/oneclick/addresses")
SUBNET = ipaddress.ip_network("10.213.0.0/16")
GATEWAY = "10.213.0.1"  # the bridge's own address: where members reach the broker


class NetworkError(RuntimeError):
    pass


async def ip(*args: str, check: bool = True) -> str:
    binary = shutil.which("ip") or "/usr/sbin/ip"
    process = await asyncio.create_subprocess_exec(
        binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if check and process.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


async def ensure_bridge() -> None:
    if BRIDGE not in await ip("-o", "link", "show", check=False):
        await ip("link", "add", BRIDGE, "type", "bridge", check=False)
    addresses = await ip("-o", "addr", "show", "dev", BRIDGE)
    if f"{GATEWAY}/" not in addresses:
        await ip("addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", BRIDGE)
    await ip("link", "set", BRIDGE, "up")


def names(instance: str) -> tuple[str, str]:
    """(namespace, host-side veth) for an instance id; interface names fit in 15 characters."""
    short = instance[-10:]
    return f"occ-{short}", f"ve{short}"


async def attach(instance: str, address: str) -> str:
    """Create the member's network namespace with `address` on eth0; returns its name."""
    netns, veth = names(instance)
    await ensure_bridge()
    if netns not in await ip("netns", "list"):
        await ip("netns", "add", netns)
    links = await ip("-o", "link", "show")
    if f" {veth}@" not in links and f" {veth}:" not in links:
        await ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    await ip("link", "set", veth, "master", BRIDGE)
    await ip("link", "set", veth, "up")
    inside = await ip("-n", netns, "-o", "addr", "show", "dev", "eth0")
    if f"{address}/" not in inside:
        await ip("-n", netns, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
    await ip("-n", netns, "link", "set", "eth0", "up")
    await ip("-n", netns, "link", "set", "lo", "up")
    return netns


async def pids(netns: str) -> list[int]:
    out = await ip("netns", "pids", netns, check=False)
    return [int(p) for p in out.split()]


async def detach(instance: str) -> None:
    """Remove the member's namespace (its veth pair goes with it)."""
    netns, veth = names(instance)
    await ip("netns", "del", netns, check=False)
    await ip("link", "del", veth, check=False)


def address_for(ordinal: int) -> str:
    """The ordinal-th member address: 10.213.0.2 onwards, skipping the gateway."""
    return str(SUBNET.network_address + 2 + ordinal)


def claim(address: str, owner: Path) -> bool:
    """Take `address` for the instance in directory `owner`; False if someone else has it.
    A claim whose owner directory is gone (a crash) is taken over."""
    CLAIMS.mkdir(parents=True, exist_ok=True)
    path = CLAIMS / address
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = Path(path.read_text().strip() or "/nonexistent")
        if holder == owner:
            return True
        if holder.exists():
            return False
        path.unlink(missing_ok=True)
        return claim(address, owner)
    with os.fdopen(fd, "w") as out:
        out.write(str(owner))
    return True


def release(address: str, owner: Path) -> None:
    path = CLAIMS / address
    with contextlib.suppress(OSError):
        if path.read_text().strip() == str(owner):
            path.unlink()
