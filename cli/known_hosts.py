"""The user's known_hosts: the members' host keys, learned over the authenticated path, in
place of whatever an earlier launch left for the same names or addresses."""

from __future__ import annotations

import os
from pathlib import Path

from cli.launches import address
from kits.kube import JSON


def entries(member: JSON) -> list[str]:
    """known_hosts lines for one member: its names and address, then each host key."""
    identity = (member.get("status") or {}).get("identity") or {}
    names = list(dict.fromkeys(filter(None, [
        identity.get("fqdn"), identity.get("hostname"), address(member)])))
    return [f"{','.join(names)} {key}" for key in identity.get("sshHostKeys", [])]


def _hosts(line: str) -> set[str]:
    field = line.split(maxsplit=1)[0] if line.strip() else ""
    hosts = set()
    for host in field.split(","):
        if host.startswith("[") and "]:" in host:
            host = host[1:host.index("]:")]
        hosts.add(host)
    return hosts


def install(path: Path, lines: list[str]) -> None:
    """Add `lines`, dropping every older line for any of their hosts (a reused address)."""
    new_hosts = set().union(*(_hosts(line) for line in lines)) if lines else set()
    try:
        kept = [line for line in path.read_text().splitlines()
                if line.startswith("#") or not (_hosts(line) & new_hosts)]
    except FileNotFoundError:
        kept = []
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent == Path.home() / ".ssh":
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".occ-tmp")
    tmp.write_text("".join(f"{line}\n" for line in [*kept, *lines]))
    tmp.replace(path)
