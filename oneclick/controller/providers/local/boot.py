"""What a local member's boot does, as the shell scripts its init runs: its directories bound
over this machine's, its /etc an overlay whose lower layer is this machine's and whose
secrets it cannot see, its own /run, sshd and its agent."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
from pathlib import Path

from oneclick.agent import hostkeys

NAMESPACED_INIT = """#!/bin/sh
# Boot of local member {member}, inside its own network, mount and UTS namespaces.
set -u
hostname {hostname}
# The member's root under a path no bind below hides, then its directories over this
# machine's. The paths the agent runs from stay visible inside ({keep}).
staged=/run/oneclick/{id}
mkdir -p $staged && mount --bind {root} $staged || exit 1
for p in {keep}; do
  mkdir -p $staged$p && mount --bind $p $staged$p || exit 1
done
# Its /etc: what the member has of its own (its image's files, its host name, what its agent
# and role scripts write; this machine's secrets hidden by whiteouts) over this machine's.
mkdir -p $staged/{etc_work} && mount -t overlay overlay \\
  -o lowerdir=/etc,upperdir=$staged/etc,workdir=$staged/{etc_work} /etc || exit 1
for d in {bound}; do
  mkdir -p $staged/$d /$d && mount --rbind $staged/$d /$d || exit 1
done
# Its own /run: daemons' sockets and pid files (sshd, munged, slurmd) are the member's own.
mount -t tmpfs -o mode=0755,nosuid,nodev run /run || exit 1
mkdir -p /run/sshd /run/lock
# The agent: its first pass, then it follows the launch (the member is configured again when
# members are added or removed; it ends with the launch). It says on a FIFO when the first
# pass is done; sshd starts as soon as that pass has made the host keys (its first step).
mkfifo /run/occ-agent.ready || exit 1
{agent} --bootstrap /var/lib/oneclick/bootstrap.json --root / \\
  --hostname {hostname} --address {address} --follow --ready-fd 3 3>/run/occ-agent.ready &
agent=$!
exec 4</run/occ-agent.ready
until [ -s /etc/ssh/ssh_host_{last_key}_key.pub ] || ! kill -0 $agent 2>/dev/null; do
  sleep 0.05
done
{sshd} -D -e -o PidFile=none 4<&- &
sshd=$!
read ready <&4 || echo "occ-agent ended before the member was configured"
exec 4<&-
{reload_sshd}
wait $sshd
"""
# sshd picks up what contextualization changed (host-based authentication) on SIGHUP, but only
# once it has set its handler (after it listens): a SIGHUP before that ends it. An agent that
# is ready at once (a restart with nothing new) would otherwise kill the member's sshd.
RELOAD_SSHD = """\
hup_caught() { mask=$(sed -n 's/^SigCgt:[[:space:]]*//p' /proc/$sshd/status 2>/dev/null)
  [ -n "$mask" ] && [ $(( 0x${mask#${mask%?}} & 1 )) = 1 ]; }
until hup_caught || ! kill -0 $sshd 2>/dev/null; do sleep 0.02; done
kill -HUP $sshd"""

# A member's own directories, bound over this machine's (/root last: the state directory
# may live under it). Daemons keep their state and spool under /var/lib and /var/spool: the
# sample image's batch system (munge, Slurm) gets its own, as on a machine of its own.
BOUND = ("home", "opt", "var/lib/oneclick", "var/lib/munge", "var/lib/slurm", "var/spool",
         "var/log", "root")
# Its /etc is an overlay: its root's etc/ (the upper layer, what is its own) over this
# machine's, so no member copies this machine's /etc (a fifth of a second each, once the
# members of a large launch are made one after another). The overlay's work directory:
ETC_WORK = ".etc-work"
# What this machine's /etc holds that is its own and no member's: its SSH host keys (each
# member makes its own) and its munge key (a launch's comes from its context).
MACHINE_SECRETS = ("ssh/ssh_host_*", "munge/munge.key")

LOOPBACK_INIT = """#!/bin/sh
# Boot of local member {member}: an agent process with its own loopback address and root.
set -u
# Its first pass, then it follows the launch (configured again on scale up and down).
{agent} --bootstrap {root}/var/lib/oneclick/bootstrap.json --root {root} \\
  --hostname {hostname} --address {address} --follow
echo "occ-agent exited with code $?"
exec sleep infinity  # the member stays up, like a VM whose agent has finished
"""


def hide_machine_secrets(etc: Path) -> None:
    """A whiteout (a 0/0 character device, as overlayfs reads one) in the member's /etc layer
    for each of this machine's secrets, unless its image brings a file of its own there; the
    folders on the way keep this machine's owner and mode (/etc/munge is munge's, 0700)."""
    for pattern in MACHINE_SECRETS:
        for secret in Path("/etc").glob(pattern):
            hidden = etc / secret.relative_to("/etc")
            for folder in reversed(hidden.relative_to(etc).parents[:-1]):
                made, original = etc / folder, Path("/etc") / folder
                if not made.exists():
                    made.mkdir()
                    shutil.copystat(original, made)
                    info = original.stat()
                    os.chown(made, info.st_uid, info.st_gid)
            if not hidden.exists() and not hidden.is_symlink():
                os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0))


def agent_paths() -> list[str]:
    """Where the agent's interpreter and environment live, if a member's bind would hide it."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    return sorted(p for p in paths
                  if any(p == f"/{d}" or p.startswith(f"/{d}/") for d in BOUND))


def init_script(*, namespaced: bool, member: str, hostname: str, address: str, root: Path,
                agent: list[str], instance: str, sshd: str) -> str:
    """The member's init: in its own namespaces (as root), or as a loopback member. `agent`
    is the command that runs the agent (occ-agent, or the member's python3 with occ-boot)."""
    values = {k: shlex.quote(v) for k, v in {
        "member": member, "hostname": hostname, "address": address, "root": str(root)}.items()}
    values["agent"] = shlex.join(agent)
    if not namespaced:
        return LOOPBACK_INIT.format(**values)
    return NAMESPACED_INIT.format(sshd=sshd, reload_sshd=RELOAD_SSHD, id=instance,
                                  last_key=hostkeys.KEY_TYPES[-1],  # (the agent's last made)
                                  etc_work=ETC_WORK, bound=" ".join(BOUND),
                                  keep=" ".join(agent_paths()), **values)
