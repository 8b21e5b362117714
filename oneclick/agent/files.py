"""The context where software finds it without speaking any protocol, under
<root>/var/lib/oneclick/: context.json, context.env, roles/<role>, data/<name>."""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

from oneclick.api.protocol import Context, Peer

STATE_DIR = Path("var/lib/oneclick")


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover keeps its mode: a new file gets `mode` from its first byte
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def read_version(root: Path) -> str | None:
    """The version of the context the last successful pass configured, if any."""
    try:
        return (root / STATE_DIR / "context.version").read_text().strip() or None
    except OSError:
        return None


def write_version(root: Path, version: str) -> None:
    write_atomically(root / STATE_DIR / "context.version", version + "\n")


def env_name(role: str) -> str:
    return role.upper().replace("-", "_").replace(".", "_")


def peer_line(peer: Peer) -> str:
    identity = peer.identity
    return f"{identity.addresses[0]} {identity.hostname} {identity.fqdn}"


def write_context(root: Path, context: Context) -> dict[str, Path]:
    """Write every context file; returns the data files by data name."""
    state = root / STATE_DIR
    # context.json holds the data values: for root's eyes only, like the data files.
    write_atomically(state / "context.json", context.model_dump_json(by_alias=True, indent=2)
                     + "\n", mode=0o600)
    me = context.member
    values = {
        "OCC_CLUSTER": context.cluster,
        "OCC_MEMBER": me.member,
        "OCC_ROLE": me.role,
        "OCC_PROVIDES": " ".join(me.provides),
        "OCC_HOSTNAME": me.identity.hostname,
        "OCC_FQDN": me.identity.fqdn,
        "OCC_ADDRESS": me.identity.addresses[0],
        "OCC_REQUIRED_ROLES": " ".join(context.required_roles),
    }
    for role, peers in context.required_roles.items():
        values[f"OCC_ROLE_{env_name(role)}_HOSTS"] = " ".join(p.identity.fqdn for p in peers)
        values[f"OCC_ROLE_{env_name(role)}_ADDRESSES"] = " ".join(
            p.identity.addresses[0] for p in peers)
    write_atomically(state / "context.env",
                     "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))
    for role, peers in context.required_roles.items():
        write_atomically(state / "roles" / role, "".join(peer_line(p) + "\n" for p in peers))
    data_files = {}
    for name, value in context.data.items():
        data_files[name] = state / "data" / name
        write_atomically(data_files[name], value, mode=0o600)
    return data_files


def environment(root: Path) -> dict[str, str]:
    """context.env as a mapping, for the role scripts' environment."""
    values = {}
    for line in (root / STATE_DIR / "context.env").read_text().splitlines():
        key, _, quoted = line.partition("=")
        values[key] = " ".join(shlex.split(quoted))
    return values
