"""The local provider: members are real agent processes on this machine.

Each member gets a root directory made from its role's image folder (`<images>/<image>/`) and a
directory named by its idempotency key, so a relaunch after a crash finds what it made.

- With root (as on CI), each member lives in its own network, mount and UTS namespaces: its own
  address on a private bridge, its own host name, its own /etc, /root, /home, /opt, /var/log,
  /var/spool and /var/lib/{oneclick,munge,slurm} (bind-mounted from its root directory), its
  own /run (a tmpfs), and its own OpenSSH sshd using the host keys its agent generated.
  Host-based SSH between members is real. Every process of a member, daemons its role scripts
  started included, lives in its network namespace: terminating the member ends them all.
- Without root, each member is an agent process with its own loopback address (127.213.x.y)
  and root directory; `limitations()` says what that mode cannot offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from oneclick.controller.providers.base import Instance, InstanceState, LaunchRequest, ProviderError
from oneclick.controller.providers.local import network
from oneclick.kits.processes import running as _alive

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
until [ -s /etc/ssh/ssh_host_rsa_key.pub ] || ! kill -0 $agent 2>/dev/null; do sleep 0.05; done
{sshd} -D -e -o PidFile=none 4<&- &
sshd=$!
read ready <&4 || echo "occ-agent ended before the member was configured"
exec 4<&-
kill -HUP $sshd  # pick up what contextualization changed (host-based authentication)
wait $sshd
"""

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

# Its members' FQDNs are <hostname>.oneclick.local unless their launch names a domain (the
# agent takes it from its bootstrap).
DOMAIN = "oneclick.local"


@dataclass
class InstanceRecord:
    id: str
    namespace: str
    member: str
    hostname: str
    address: str
    namespaced: bool
    pid: int | None = None


def default_images_dir() -> Path:
    return Path(__file__).resolve().parents[4] / "samples" / "images"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "oneclick" / "local"


class LocalProvider:
    name = "local"

    def __init__(self, state_dir: Path | None = None, images_dir: Path | None = None,
                 namespaced: bool | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.images_dir = images_dir or default_images_dir()
        can_namespace = os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(
            shutil.which("ip") or Path("/usr/sbin/ip").exists())
        self.namespaced = can_namespace if namespaced is None else namespaced
        self._lock = asyncio.Lock()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._agent = shutil.which("occ-agent") or str(Path(sys.executable).parent / "occ-agent")

    # -- what this machine offers ---------------------------------------------------------

    @property
    def broker_host(self) -> str:
        return network.GATEWAY if self.namespaced else "127.0.0.1"

    @property
    def domain(self) -> str:
        return DOMAIN

    def limitations(self) -> list[str]:
        if self.namespaced:
            return []
        return [
            "members share this machine's network namespace: each has a loopback address "
            "(127.213.x.y) instead of an address on a private bridge",
            "no sshd per member: `ssh` into members and host-based SSH between them need root",
            "members share /etc with this machine: role scripts and common tasks write under "
            "each member's root directory, not /etc",
        ]

    def _sshd(self) -> str:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not Path(sshd).exists():
            raise ProviderError("the local provider needs OpenSSH's sshd for every member: "
                                "install openssh-server (hack/bootstrap does)", permanent=True)
        return sshd

    # -- the interface --------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> Instance:
        async with self._lock:
            directory = self.state_dir / "instances" / request.idempotency_key
            record = self._load(directory)
            if record is None:
                record = await self._create(directory, request)
            if record.pid is None:
                await self._boot(directory, record)
            return self._describe_one(directory)

    async def lookup(self, idempotency_key: str) -> Instance | None:
        directory = self.state_dir / "instances" / idempotency_key
        return self._describe_one(directory) if self._load(directory) else None

    async def describe(self, instance_ids: list[str]) -> dict[str, Instance]:
        found = {record.id: directory for directory, record in self.records()}
        return {
            i: self._describe_one(found[i]) if i in found
            else Instance(i, InstanceState.TERMINATED, message="no such instance")
            for i in instance_ids
        }

    async def terminate(self, instance_ids: list[str]) -> None:
        wanted = set(instance_ids)
        for directory, record in self.records():
            if record.id in wanted:
                await self._destroy(directory, record)

    async def aclose(self) -> None:
        """Nothing is held open (members outlive the controller, as VMs do)."""

    async def refresh_bootstrap(self, instance_id: str, user_data: str) -> None:
        """A new bootstrap where the member's agent reads it (replaced whole: the agent never
        sees half of one)."""
        directory = next((d for d, r in self.records() if r.id == instance_id), None)
        if directory is None:
            raise ProviderError(f"no local instance {instance_id}")
        bootstrap = directory / "root" / "var" / "lib" / "oneclick" / "bootstrap.json"
        tmp = bootstrap.with_name("bootstrap.json.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(user_data)
        tmp.rename(bootstrap)

    # -- instances on disk ----------------------------------------------------------------

    def records(self) -> list[tuple[Path, InstanceRecord]]:
        records = []
        for directory in sorted((self.state_dir / "instances").glob("*")):
            record = self._load(directory)
            if record is not None:
                records.append((directory, record))
        return records

    @staticmethod
    def _load(directory: Path) -> InstanceRecord | None:
        try:
            return InstanceRecord(**json.loads((directory / "instance.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def _save(directory: Path, record: InstanceRecord) -> None:
        tmp = directory / "instance.json.tmp"
        tmp.write_text(json.dumps(asdict(record)))
        tmp.rename(directory / "instance.json")

    def _free_address(self, owner: Path) -> str:
        used = {record.address for _, record in self.records()}
        for ordinal in range(60000):
            address = (network.address_for(ordinal) if self.namespaced
                       else f"127.213.{(ordinal + 2) // 256}.{(ordinal + 2) % 256}")
            if address not in used and network.claim(address, owner):
                return address
        raise ProviderError("the local provider has no free address left", permanent=True)

    async def _create(self, directory: Path, request: LaunchRequest) -> InstanceRecord:
        image = self._image(request.image)
        if self.namespaced:
            self._sshd()
        shutil.rmtree(directory, ignore_errors=True)  # a half-made one from before a crash
        root = directory / "root"
        root.mkdir(parents=True)
        if self.namespaced:
            for d in (*BOUND, "etc"):
                (root / d).mkdir(parents=True, exist_ok=True)
        await _run("cp", "-a", f"{image}/.", str(root))
        if self.namespaced:
            # The member's /etc is this machine's (users, libraries, sshd's config) without
            # this machine's identity and secrets: no host keys, no munge key.
            _hide_machine_secrets(root / "etc")
        # A host name is one DNS label: a launch named with dots gives its members dashes.
        hostname = request.member.replace(".", "-")[:63].strip("-")
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "hostname").write_text(hostname + "\n")
        bootstrap = root / "var" / "lib" / "oneclick" / "bootstrap.json"
        bootstrap.parent.mkdir(parents=True, exist_ok=True)
        bootstrap.touch(mode=0o600)
        bootstrap.write_text(request.user_data)
        record = InstanceRecord(
            id=f"local-{request.idempotency_key.replace('-', '')[:12]}",
            namespace=request.namespace, member=request.member, hostname=hostname,
            address=self._free_address(directory), namespaced=self.namespaced,
        )
        self._save(directory, record)
        return record

    def _image(self, name: str) -> Path:
        """The image's folder: a plain name of a folder under the images folder, and still
        under it once every link is followed (a role could name any tree otherwise)."""
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ProviderError(f"image {name!r} is not a folder name: the local provider's "
                                f"images are the folders of {self.images_dir}", permanent=True)
        image, images = self.images_dir / name, self.images_dir.resolve()
        resolved = image.resolve()
        if resolved == images or not resolved.is_relative_to(images):
            raise ProviderError(f"image {name!r} leads out of the images folder "
                                f"{self.images_dir}", permanent=True)
        if not resolved.is_dir():
            raise ProviderError(f"unknown image {name!r}: there is no folder {image}",
                                permanent=True)
        return resolved  # (copied from where it was checked, not through the link again)

    async def _boot(self, directory: Path, record: InstanceRecord) -> None:
        root = directory / "root"
        values = {k: shlex.quote(v) for k, v in {
            "member": record.member, "hostname": record.hostname, "address": record.address,
            "root": str(root), "agent": self._agent,
        }.items()}
        if record.namespaced:
            netns = await network.attach(record.id, record.address)
            init = NAMESPACED_INIT.format(sshd=self._sshd(), id=record.id, etc_work=ETC_WORK,
                                          bound=" ".join(BOUND), keep=" ".join(_agent_paths()),
                                          **values)
            argv = ["ip", "netns", "exec", netns, "unshare", "--mount", "--uts",
                    "--propagation", "private", "/bin/sh", str(directory / "init.sh")]
        else:
            init = LOOPBACK_INIT.format(**values)
            argv = ["/bin/sh", str(directory / "init.sh")]
        (directory / "init.sh").write_text(init)
        child = _spawn(argv, directory / "console.log")
        self._children[child.pid] = child
        record.pid = child.pid
        self._save(directory, record)

    def _describe_one(self, directory: Path) -> Instance:
        record = self._load(directory)
        if record is None:
            return Instance("", InstanceState.TERMINATED, message="no such instance")
        if record.pid is None:
            return Instance(record.id, InstanceState.PENDING, [record.address])
        child = self._children.get(record.pid)
        if child is not None:
            child.poll()  # reap it if it ended, so it does not linger as a zombie
        if _alive(record.pid):
            return Instance(record.id, InstanceState.RUNNING, [record.address])
        return Instance(record.id, InstanceState.FAILED, [record.address],
                        message="the member's processes ended: " + _tail(
                            directory / "console.log"))

    async def _destroy(self, directory: Path, record: InstanceRecord) -> None:
        victims = set()
        if record.namespaced:
            netns, _ = network.names(record.id)
            victims.update(await network.pids(netns))
        if record.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)
            victims.add(record.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            for pid in victims:
                child = self._children.pop(pid, None)
                if child is not None:
                    child.wait()
            if not any(_alive(p) for p in victims):
                break
            await asyncio.sleep(0.05)
        if record.namespaced:
            await network.detach(record.id)
        network.release(record.address, directory)
        _remove(directory, Path(f"/run/oneclick/{record.id}"))


def _hide_machine_secrets(etc: Path) -> None:
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


def _remove(directory: Path, staging: Path) -> None:
    with contextlib.suppress(OSError):
        staging.rmdir()  # the mount point inside the member's (now gone) mount namespace
    shutil.rmtree(directory, ignore_errors=True)


def _agent_paths() -> list[str]:
    """Where the agent's interpreter and environment live, if a member's bind would hide it."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    return sorted(p for p in paths
                  if any(p == f"/{d}" or p.startswith(f"/{d}/") for d in BOUND))


def _spawn(argv: list[str], console: Path) -> subprocess.Popen[bytes]:
    """Start a member in a session of its own: it outlives a controller that crashes."""
    with open(console, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no console log)"


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    if process.returncode != 0:
        raise ProviderError(f"{' '.join(argv)}: {err.decode().strip()}")
