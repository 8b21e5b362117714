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


async def ip(*args: str, check: bool = True, commands: list[str] | None = None) -> str:
    """`ip ARGS`; with `commands`, `ip ARGS -force -batch -` running them in one process (a
    failing one does not stop the rest; its error is in the NetworkError if `check`)."""
    binary = shutil.which("ip") or "/usr/sbin/ip"
    if commands is not None:
        args = (*args, "-force", "-batch", "-")
    process = await asyncio.create_subprocess_exec(
        binary, *args, stdin=asyncio.subprocess.PIPE if commands is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate(
        "".join(f"{c}\n" for c in commands).encode() if commands is not None else None)
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
    """Create the member's network namespace with `address` on eth0; returns its name.

    Four `ip` processes, not one a step (members are made one after another; in a large launch
    the starts added up): the namespace, this machine's side of the veth pair in one batch,
    the member's side in another, then a check of the end state. A step that an attach cut
    short by a crash already took fails with "exists" and the rest goes on."""
    netns, veth = names(instance)
    await ensure_bridge()
    await ip("netns", "add", netns, check=False)  # (exists after a crash: the check says)
    outside = await _batch([f"link add {veth} type veth peer name eth0 netns {netns}",
                            f"link set {veth} master {BRIDGE}", f"link set {veth} up"])
    inside = await _batch([f"addr add {address}/{SUBNET.prefixlen} dev eth0",
                           "link set eth0 up", "link set lo up"], netns)
    shown = await ip("-n", netns, "-o", "addr", "show", "dev", "eth0", check=False)
    if f"{address}/" not in shown:
        raise NetworkError(f"member network {netns}: eth0 did not get {address} "
                           f"({'; '.join(e for e in (outside, inside) if e) or 'no error said'})")
    return netns


async def _batch(commands: list[str], netns: str | None = None) -> str:
    """Run `commands` in one `ip` process (in `netns`); what they said went wrong, if any."""
    try:
        await ip(*(("-n", netns) if netns else ()), commands=commands)
    except NetworkError as error:
        return str(error)
    return ""


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
