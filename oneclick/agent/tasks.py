"""The common tasks, each idempotent: a managed block of /etc/hosts, host-based SSH across all
accounts, the user's keys for root. Each writes only between its BEGIN/END marker lines and
keeps the rest of the file as it was."""

from __future__ import annotations

import collections
import os
from pathlib import Path

from oneclick.agent.files import write_atomically
from oneclick.api.protocol import Context, Peer

BEGIN = "# BEGIN oneclick"
END = "# END oneclick"

SSHD_OPTIONS = """# Host-based authentication across the members of this launch (occ-agent).
HostbasedAuthentication yes
IgnoreRhosts no
HostbasedUsesNameFromPacketOnly yes
"""
SSH_OPTIONS = """# Host-based authentication across the members of this launch (occ-agent).
Host *
    HostbasedAuthentication yes
    EnableSSHKeysign yes
"""


def replace_block(path: Path, lines: list[str], mode: int = 0o644) -> None:
    """Put `lines` between the markers, in place of an earlier block or at the end."""
    for line in lines:  # the context was checked; this file's shape is checked here too
        if not line.isprintable() or line.strip() in (BEGIN, END):
            raise ValueError(f"refusing to write into {path}: a line that is not one line of "
                             "printable text, or a marker")
    try:
        current = path.read_text().splitlines()
    except FileNotFoundError:
        current = []
    if BEGIN in current and END in current[current.index(BEGIN):]:
        start = current.index(BEGIN)
        end = current.index(END, start)
        before, after = current[:start], current[end + 1:]
    else:
        before, after = current, []
    text = "\n".join([*before, BEGIN, *lines, END, *after]) + "\n"
    if path.exists():
        mode = path.stat().st_mode & 0o777
    write_atomically(path, text, mode)


def _shared(context: Context) -> set[str]:
    """Addresses several members list (a bridge every member of one image has): they name
    no member in particular, so no trust file lists them."""
    counts = collections.Counter(a for p in context.members for a in set(p.identity.addresses))
    return {address for address, count in counts.items() if count > 1}


def _names(peer: Peer, shared: set[str]) -> list[str]:
    identity = peer.identity
    addresses = [a for a in identity.addresses if a not in shared]
    return list(dict.fromkeys([identity.hostname, identity.fqdn, *addresses]))


def hosts(root: Path, context: Context) -> None:
    lines = []
    for peer in context.members:
        identity = peer.identity
        names = [identity.fqdn, identity.hostname] if identity.fqdn != identity.hostname else [
            identity.hostname]
        lines.append(f"{identity.addresses[0]} {' '.join(names)}")
    replace_block(root / "etc" / "hosts", lines)


def _ensure_include(config: Path, include: str) -> None:
    """sshd and ssh take the first value of an option: our drop-in must be read first."""
    try:
        text = config.read_text()
    except FileNotFoundError:
        text = ""
    if include not in text.splitlines()[:5]:
        write_atomically(config, f"{include}\n{text}")


def ssh_host_based(root: Path, context: Context) -> None:
    ssh = root / "etc" / "ssh"
    shared = _shared(context)
    known = [f"{','.join(_names(p, shared))} {key}" for p in context.members
             for key in p.identity.ssh_host_keys]
    replace_block(ssh / "ssh_known_hosts", known)
    names = [name for p in context.members for name in _names(p, shared)]
    for equiv in (ssh / "shosts.equiv", root / "etc" / "hosts.equiv"):
        replace_block(equiv, names)
    home = root / "root"
    home.mkdir(parents=True, exist_ok=True)
    replace_block(home / ".shosts", names, mode=0o600)  # sshd ignores the equiv files for root
    write_atomically(ssh / "sshd_config.d" / "50-oneclick.conf", SSHD_OPTIONS)
    write_atomically(ssh / "ssh_config.d" / "50-oneclick.conf", SSH_OPTIONS)
    _ensure_include(ssh / "sshd_config", "Include /etc/ssh/sshd_config.d/*.conf")
    _ensure_include(ssh / "ssh_config", "Include /etc/ssh/ssh_config.d/*.conf")


def authorized_keys(root: Path, context: Context) -> None:
    directory = root / "root" / ".ssh"
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    replace_block(directory / "authorized_keys", context.ssh_authorized_keys, mode=0o600)


def run_all(root: Path, context: Context) -> list[str]:
    """Every common task the context asks for; returns their names in order."""
    done = []
    if context.hosts_file:
        hosts(root, context)
        done.append("hosts")
    if context.ssh_host_based:
        ssh_host_based(root, context)
        done.append("ssh-host-based")
    if context.ssh_authorized_keys:
        authorized_keys(root, context)
        done.append("authorized-keys")
    return done
