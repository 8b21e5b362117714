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

A member's user data (the cloud-config of providers.userdata) is handled as cloud-init would:
kept as the member's /var/lib/cloud/instance/user-data.txt, its files (the bootstrap, occ-boot)
written. Then its boot runs this environment's occ-agent, as on an image that has the agent;
an image whose `image.json` says `{"boot": "cloud-config"}` has no agent at all: its boot runs
the cloud-config's occ-boot with the member's own python3 (Debian's, `"python"` names another),
which fetches the agent from the broker, checks its digest and runs it (root's namespaces only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oneclick.api import errors
from oneclick.controller.providers import userdata
from oneclick.controller.providers.base import Instance, InstanceState, LaunchRequest, ProviderError
from oneclick.controller.providers.local import boot, network
from oneclick.kits.processes import running as _alive

# Its members' FQDNs are <hostname>.oneclick.local unless their launch names a domain (the
# agent takes it from its bootstrap).
DOMAIN = "oneclick.local"
# An image's properties for this provider: the file at the top of its folder (not copied into
# its members' roots).
IMAGE_PROPERTIES = "image.json"
STOCK_PYTHON = "/usr/bin/python3"
# Where cloud-init keeps the user data, and the folder the cloud-config may write to here.
USER_DATA = "var/lib/cloud/instance/user-data.txt"
WRITABLE = "/var/lib/oneclick/"


class ImageProperties(BaseModel):
    """An image folder's image.json: how its members boot. `agent` (the default): this
    environment's occ-agent; `cloud-config`: the member has no agent, and its cloud-config's
    occ-boot fetches it, run with the member's `python` (an absolute path)."""

    model_config = ConfigDict(extra="forbid")

    boot: Literal["agent", "cloud-config"] = "agent"
    python: str = Field(default=STOCK_PYTHON, max_length=255, pattern=r"^/[!-~]*$")


@dataclass
class InstanceRecord:
    id: str
    namespace: str
    member: str
    hostname: str
    address: str
    namespaced: bool
    pid: int | None = None
    python: str = ""  # an image with no agent: its boot runs occ-boot with this interpreter


def default_images_dir() -> Path:
    """The sample images that ship with the package (also `samples/images` of a checkout)."""
    return Path(__file__).resolve().parent / "images"


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
        _user_data(directory / "root", user_data)

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
        properties = self._properties(image)  # (checked before anything is made)
        if self.namespaced:
            self._sshd()
        shutil.rmtree(directory, ignore_errors=True)  # a half-made one from before a crash
        root = directory / "root"
        root.mkdir(parents=True)
        if self.namespaced:
            for d in (*boot.BOUND, "etc"):
                (root / d).mkdir(parents=True, exist_ok=True)
        await _run("cp", "-a", f"{image}/.", str(root))
        if self.namespaced:
            # The member's /etc is this machine's (users, libraries, sshd's config) without
            # this machine's identity and secrets: no host keys, no munge key.
            boot.hide_machine_secrets(root / "etc")
        # A host name is one DNS label: a launch named with dots gives its members dashes.
        hostname = request.member.replace(".", "-")[:63].strip("-")
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "hostname").write_text(hostname + "\n")
        (root / IMAGE_PROPERTIES).unlink(missing_ok=True)
        _user_data(root, request.user_data)
        record = InstanceRecord(
            id=f"local-{request.idempotency_key.replace('-', '')[:12]}",
            namespace=request.namespace, member=request.member, hostname=hostname,
            address=self._free_address(directory), namespaced=self.namespaced,
            python=properties.python if properties.boot == "cloud-config" else "",
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

    def _properties(self, image: Path) -> ImageProperties:
        """The image's image.json, checked (the defaults when it has none)."""
        path = image / IMAGE_PROPERTIES
        if not path.is_file():
            return ImageProperties()
        try:
            properties = ImageProperties.model_validate_json(path.read_bytes())
        except OSError as error:
            raise ProviderError(f"{path}: {error.strerror}", permanent=True) from error
        except ValidationError as error:
            raise ProviderError(f"{path}: {errors.describe(error)}", permanent=True) from error
        if properties.boot == "cloud-config" and not self.namespaced:
            raise ProviderError(f"image {image.name!r} boots from its cloud-config, as root "
                                "would on the member: that needs the local provider's "
                                "namespaces (run the controller as root)", permanent=True)
        return properties

    async def _boot(self, directory: Path, record: InstanceRecord) -> None:
        root = directory / "root"
        # The member's own interpreter runs what its cloud-config wrote, nothing of this
        # environment's around it (a stock machine has none of it). The agent file unpacks
        # into the member's own folder, as into a VM's own /var/cache: not this machine's
        # /var/cache, which every member sees.
        agent = (["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                  "OCC_AGENT_CACHE=/var/lib/oneclick/cache", record.python, "-I",
                  userdata.BOOT_SCRIPT] if record.python else [self._agent])
        init = boot.init_script(
            namespaced=record.namespaced, member=record.member, hostname=record.hostname,
            address=record.address, root=root, agent=agent, instance=record.id,
            sshd=self._sshd() if record.namespaced else "")
        if record.namespaced:
            netns = await network.attach(record.id, record.address)
            argv = ["ip", "netns", "exec", netns, "unshare", "--mount", "--uts",
                    "--propagation", "private", "/bin/sh", str(directory / "init.sh")]
        else:
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


def _user_data(root: Path, user_data: str) -> None:
    """What cloud-init does with the member's user data: keep it (root's only) and write the
    files its cloud-config says (here only under /var/lib/oneclick/, each replaced whole: an
    agent never reads half of one). User data that is no cloud-config is the bootstrap."""
    written: dict[str, tuple[str, int]] = {"/var/lib/oneclick/bootstrap.json": (user_data, 0o600)}
    if user_data.startswith(userdata.CLOUD_CONFIG + "\n"):
        try:
            written = userdata.files(user_data)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ProviderError(f"the member's cloud-config cannot be read: {error}",
                                permanent=True) from error
    for path in written:
        if not path.startswith(WRITABLE) or "/." in path or "//" in path:
            raise ProviderError(f"the member's cloud-config writes {path}: the local provider "
                                f"writes under {WRITABLE} only", permanent=True)
    if user_data.startswith(userdata.CLOUD_CONFIG + "\n"):
        _write(root / USER_DATA, user_data, 0o600)
    for path, (content, mode) in written.items():
        _write(root / path.lstrip("/"), content, mode & 0o700)


def _write(path: Path, content: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as out:
        out.write(content)
    tmp.rename(path)


def _remove(directory: Path, staging: Path) -> None:
    with contextlib.suppress(OSError):
        staging.rmdir()  # the mount point inside the member's (now gone) mount namespace
    shutil.rmtree(directory, ignore_errors=True)


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
