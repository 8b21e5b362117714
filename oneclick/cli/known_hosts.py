"""The user's known_hosts: each member's host keys, learned over the authenticated path, under
names the launch owns and nothing else.

A member states its own host name and FQDN, and a hostile one could state `*` or `github.com`:
those never reach the file. A member's keys are trusted for
- the addresses its provider reported (status.addresses, written by the controller, not by the
  member), so `ssh root@ADDRESS` asks nothing;
- its alias `ROLE-INDEX.LAUNCH.NAMESPACE.oneclick`, a name of ours that resolves nowhere:
  `occ ssh` connects to the address and checks the key under the alias (HostKeyAlias).
Keys are parsed as strictly as the broker does (api.sshkeys): one line, a host key type, base64
of that type. One line per host and key; installing replaces only lines whose host field is
exactly one of these names, and keeps every other line byte for byte.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from oneclick.api import names, sshkeys
from oneclick.kits.kube import JSON

ALIAS_DOMAIN = "oneclick"


def alias(member: JSON) -> str | None:
    """The member's name for HostKeyAlias; None when its resource does not make a DNS name."""
    spec, meta = member.get("spec") or {}, member.get("metadata") or {}
    text = (f"{spec.get('role')}-{spec.get('index')}.{spec.get('cluster')}."
            f"{meta.get('namespace')}.{ALIAS_DOMAIN}")
    try:
        return names.fqdn(text).lower()
    except ValueError:
        return None


def provider_addresses(member: JSON) -> list[str]:
    """The addresses the provider reported, each a checked IP address or DNS name."""
    found = []
    for value in (member.get("status") or {}).get("addresses") or []:
        for check in (names.address, names.fqdn):
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                found.append(check(value))
                break
    return list(dict.fromkeys(found))


def host_keys(member: JSON) -> list[str]:
    """The member's host keys that parse strictly; anything else is left out."""
    identity = (member.get("status") or {}).get("identity") or {}
    keys = []
    for key in identity.get("sshHostKeys") or []:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            keys.append(sshkeys.host_key(key))
    return keys


def hosts(member: JSON) -> list[str]:
    """The names a member's keys are trusted for: its alias, then its provider's addresses."""
    own = alias(member)
    return [*([own] if own else []), *provider_addresses(member)]


def entries(member: JSON) -> list[str]:
    """known_hosts lines for one member: one per owned name and host key."""
    keys = host_keys(member)
    return [f"{host} {key}" for host in hosts(member) for key in keys]


def _host_field(line: bytes) -> bytes | None:
    """The host field of a plain line; None for comments, markers (@cert-authority, @revoked),
    hashed names and anything else occ never replaces."""
    fields = line.split(None, 1)
    if not fields or fields[0].startswith((b"#", b"@", b"|")):
        return None
    return fields[0]


def install(path: Path, lines: list[str]) -> None:
    """Add `lines`, replacing only earlier lines whose host field is exactly one of theirs (an
    earlier launch's key for a reused address); every other line stays byte for byte."""
    replaced = {line.split(" ", 1)[0].encode() for line in lines}
    try:
        current = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        current, mode = b"", 0o600
    kept = [line for line in current.splitlines(keepends=True)
            if _host_field(line) not in replaced]
    if kept and not kept[-1].endswith((b"\n", b"\r")):
        kept[-1] += b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent == Path.home() / ".ssh":
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".occ-tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(b"".join(kept) + "".join(f"{line}\n" for line in lines).encode())
    os.chmod(tmp, mode)
    tmp.replace(path)
