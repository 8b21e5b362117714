"""Who this member is: host names and addresses, as found here or as the launcher said."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess

from api.protocol import Identity


class NoAddress(Exception):
    pass


def _interface_addresses() -> list[str]:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        out = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for interface in json.loads(out or "[]"):
        for info in interface.get("addr_info", []):
            address = ipaddress.ip_address(info["local"])
            if not (address.is_loopback or address.is_link_local):
                found.append(str(address))
    return found


def gather(hostname: str | None, fqdn: str | None, addresses: list[str],
           ssh_host_keys: list[str]) -> Identity:
    short = hostname or socket.gethostname().split(".")[0]
    full = fqdn or socket.getfqdn(short)
    found = addresses or _interface_addresses()
    if not found:
        try:
            found = [socket.gethostbyname(short)]
        except OSError as error:
            raise NoAddress(f"this member has no address to offer (give one with --address): "
                            f"{error}") from error
    return Identity(hostname=short, fqdn=full, addresses=found, ssh_host_keys=ssh_host_keys)
