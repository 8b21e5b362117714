"""Who this member is: host names and addresses, as found here or as the launcher said."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess

from pydantic import ValidationError

from oneclick.api import errors
from oneclick.api.claims import Claim, outside_domain
from oneclick.api.protocol import Identity


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
           ssh_host_keys: list[str], domain: str | None = None) -> Identity:
    """This member's identity; its FQDN is its host name under the launch's domain (the
    broker takes no other), whatever this machine's own resolver says."""
    short = hostname or socket.gethostname().split(".")[0]
    full = fqdn or (f"{short}.{domain}" if domain else short)
    found = addresses or _interface_addresses()
    if not found:
        try:
            found = [socket.gethostbyname(short)]
        except OSError as error:
            raise NoAddress(f"this member has no address to offer (give one with --address): "
                            f"{error}") from error
    try:  # what the broker would refuse is better said here, naming the option to give
        identity = Identity(hostname=short, fqdn=full, addresses=list(dict.fromkeys(found)),
                            ssh_host_keys=ssh_host_keys, cpus=os.cpu_count())
    except ValidationError as error:
        raise ValueError(f"this member's identity is not acceptable ({errors.describe(error)}); "
                         "give it with --hostname, --fqdn, --address") from None
    problem = outside_domain(Claim.of(identity.hostname, identity.fqdn, []), domain)
    if problem is not None:
        raise ValueError(f"this member's identity is not acceptable ({problem}); give it with "
                         "--hostname, --fqdn")
    return identity
