"""The agent's contextualization against an Ansible push, on the same real members.

    python -m bench.vs_ansible --sizes 10,25,50

For each N, one launch of N real members on the local provider (one role of N peers that
require each other, as bench.real_members; the sample image's role scripts; a user key for
root), each in its own namespaces with its own sshd. The members boot with the agent's
contextualization turned off: the controller runs with the benchmark's stand-in for occ-agent
first on its PATH, which does what a stock cloud image's boot does (host keys, made by the
agent's own code; the user's key for root, as cloud-init puts it; sshd) and nothing else.
Then, on those same members, three configurations, each from the same pristine state (every
file the configuration touched is put back between them, and that is checked):

1. `ansible-playbook bench/ansible/configure.yml` over SSH from this host, default forks (5);
2. the same with forks = N and pipelining on;
3. the agent, as the product runs it (`occ-agent --bootstrap ... --root / --hostname H
   --address A`, started in every member's namespaces at once): the clock stops when the last
   agent has reported (each exits then); the launch must then be Ready.

Each end state (every file under the members' own folders and their /etc layer: content,
mode, owner) is compared with the agent's, byte for byte except where they must differ (random
certificates, a timestamp, each tool's own bookkeeping: listed in the output). Prints one JSON
line per N, then a table. Needs root. Ansible (ansible-core, pinned below) lives in a virtual
environment of its own under ~/.cache/oneclick/, made on the first run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.harness import NAMESPACE, control_plane, cpu_seconds, prepare_now
from bench.slurm_ready import start_controller
from oneclick.controller.providers.local import LocalProvider, boot, default_images_dir
from oneclick.kits.kube import KubeClient, NotFound
from oneclick.kits.resources import custom_path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLAYBOOK = Path(__file__).resolve().parent / "ansible"
ANSIBLE_CORE = "2.18.19"
ANSIBLE_VENV = Path.home() / ".cache" / "oneclick" / f"ansible-core-{ANSIBLE_CORE}"
IMAGE = "base-cluster"
SCRIPTS = Path("etc/oneclick")  # the image's role scripts (the agent's layout)
ROLE = "peers"
DOMAIN = "oneclick.local"  # the local provider's

# What a member boots with instead of the agent: what a stock cloud image does at boot (host
# keys, the user's key for root) and nothing else. The local provider's init starts sshd once
# the host keys are there and waits for a line on --ready-fd.
STAND_IN = """#!/bin/sh
# occ-agent's stand-in (bench/vs_ansible): a member without contextualization.
set -eu
{agent} --host-keys-only --root /
mkdir -p /root/.ssh
chmod 700 /root/.ssh
cp {key} /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
# The init reloads sshd (SIGHUP) when told the member is configured: not before sshd serves
# (its banner comes from its accept loop, where it has its handler), or the signal ends it.
/usr/bin/python3 -I -c '
import socket, time
for _ in range(400):
    try:
        with socket.create_connection(("127.0.0.1", 22), 1) as connection:
            if connection.recv(4) == b"SSH-":
                break
    except OSError:
        pass
    time.sleep(0.05)
'
while [ $# -gt 0 ]; do
  if [ "$1" = --ready-fd ]; then echo READY=1 >&3; fi
  shift
done
"""

# Where the end states must differ, and why.
RANDOM = {  # made anew by each run: compared by kind, mode and owner only
    "root/certs/hostkey.pem": "a fresh private key (thisnode.d/10-host-certificate)",
    "root/certs/hostcert.pem": "a certificate of that fresh key",
    "var/lib/oneclick/ready": "the time the member was configured (ready.d/99-ready)",
}
AGENT_ONLY = {  # the agent's own bookkeeping
    "var/lib/oneclick/context.json": "the broker's answer as the agent received it (no broker "
                                     "in a push; no role script of this launch reads it)",
    "var/lib/oneclick/context.version": "the version of that answer (for --follow)",
    "var/lib/oneclick/installed.json": "what was there before (for occ-agent --uninstall)",
    "var/log/oneclick-agent.log": "the agent's log",
}
TOOL_PREFIXES = {  # each tool's own traces
    "root/.ansible": "Ansible's remote temporary folder",
    "var/log/wtmp": "the logins Ansible made (sshd's records)",
    "var/log/btmp": "the logins Ansible made (sshd's records)",
    "var/log/lastlog": "the logins Ansible made (sshd's records)",
}


@dataclass
class Member:
    name: str
    index: int
    hostname: str
    address: str
    pid: int  # its init: its namespaces
    directory: Path

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{DOMAIN}"

    def path(self, relative: str) -> Path:
        """`relative` as the member sees it (its mount namespace, through its init)."""
        return Path(f"/proc/{self.pid}/root") / relative


# -- Ansible's own environment ------------------------------------------------------------

def ansible_playbook() -> Path:
    """ansible-playbook of the pinned ansible-core, in a virtual environment made once."""
    done = ANSIBLE_VENV / ".complete"
    if not done.exists():
        shutil.rmtree(ANSIBLE_VENV, ignore_errors=True)
        python = shutil.which("python3", path=f"{sys.base_prefix}/bin") or sys.executable
        subprocess.run([python, "-m", "venv", str(ANSIBLE_VENV)], check=True, timeout=300)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "--quiet",
                        f"ansible-core=={ANSIBLE_CORE}"], check=True, timeout=900)
        done.write_text(ANSIBLE_CORE + "\n")
    return ANSIBLE_VENV / "bin" / "ansible-playbook"


# -- the launch -------------------------------------------------------------------------------

def document(name: str, size: int, user_key: str) -> dict[str, Any]:
    launch: dict[str, Any] = yaml.safe_load((ROOT / "samples" / "peers.yaml").read_text())
    launch["metadata"] = {"name": name, "namespace": NAMESPACE}
    spec = launch["spec"]
    spec["roles"][0]["quantity"] = size
    spec["lifetime"] = "2h"
    spec["sshAuthorizedKeys"] = [user_key]
    spec["timeouts"] = {"launch": "1h", "contextualization": "2h"}
    spec["onFailure"] = "Keep"
    return launch


def members_of(state: Path, launch: str) -> list[Member]:
    found = []
    for record in state.glob("instances/*/instance.json"):
        instance = json.loads(record.read_text())
        if instance["member"].startswith(f"{launch}-{ROLE}-") and instance.get("pid"):
            found.append(Member(instance["member"], int(instance["member"].rsplit("-", 1)[1]),
                                instance["hostname"], instance["address"], int(instance["pid"]),
                                record.parent))
    return sorted(found, key=lambda m: m.index)


async def wait_for_members(kube: KubeClient, state: Path, name: str, size: int) -> list[Member]:
    """Every member running, its sshd answering."""
    deadline = time.monotonic() + 900
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: the members were not all up within 900 s")
        status = (await kube.get(custom_path("ClusterLaunch", NAMESPACE, name))).get(
            "status") or {}
        if status.get("phase") == "Failed":
            raise RuntimeError(f"{name} failed: {status.get('conditions')}")
        if (status.get("members") or {}).get("running") == size:
            members = members_of(state, name)
            if len(members) == size and all(sshd_ready(m) for m in members):
                return members
        await asyncio.sleep(0.5)


def sshd_ready(member: Member) -> bool:
    """The member's sshd serves, after the reload its init sends once the member is said to be
    configured (sshd re-executes itself then: a connection at that moment is refused)."""
    try:
        console = (member.directory / "console.log").read_text(errors="replace")
    except OSError:
        return False
    reload = console.rfind("Received SIGHUP; restarting.")
    return (reload >= 0 and "Server listening on" in console[reload:]
            and sshd_answers(member.address))


def sshd_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=2) as connection:
            return connection.recv(4).startswith(b"SSH-")
    except OSError:
        return False


async def delete_launch(kube: KubeClient, name: str,
                        controller: subprocess.Popen[bytes]) -> None:
    """The launch deleted, its members terminated by the controller (if it still runs: else
    by terminate_leftovers)."""
    with contextlib.suppress(NotFound):
        await kube.delete(custom_path("ClusterLaunch", NAMESPACE, name))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and controller.poll() is None:
        try:
            await kube.get(custom_path("ClusterLaunch", NAMESPACE, name))
        except NotFound:
            return
        await asyncio.sleep(0.5)


async def launch_phase(kube: KubeClient, name: str, want: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    phase = ""
    while time.monotonic() < deadline:
        status = (await kube.get(custom_path("ClusterLaunch", NAMESPACE, name))).get(
            "status") or {}
        phase = status.get("phase") or ""
        if phase == want:
            break
        await asyncio.sleep(0.2)
    return phase


# -- end states -------------------------------------------------------------------------------

Entry = tuple[str, int, int, int, bytes]  # kind, mode, uid, gid, content (or link target)
State = dict[str, Entry | None]  # by path relative to the member's /; None: absent


def entry(path: Path) -> Entry | None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    mode, owner = stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)
    if stat.S_ISDIR(info.st_mode):
        return ("dir", mode, *owner, b"")
    if stat.S_ISLNK(info.st_mode):
        return ("link", mode, *owner, os.readlink(path).encode())
    if stat.S_ISREG(info.st_mode):
        return ("file", mode, *owner, path.read_bytes())
    return ("other", mode, *owner, str(info.st_rdev).encode())


def own_paths(member: Member) -> set[str]:
    """What is the member's own: its /etc layer (what differs from this machine's /etc) and
    the folders bound over this machine's, listed from this side."""
    paths = set()
    for top in ("etc", *boot.BOUND):
        base = member.directory / "root" / top
        for folder, dirs, files in os.walk(base):
            for name in [*dirs, *files]:
                paths.add(str((Path(folder) / name).relative_to(member.directory / "root")))
    return paths


def snapshot(member: Member, also: Iterable[str] = ()) -> State:
    """Each of the member's own paths as the member sees it (its /etc is the overlay)."""
    return {p: entry(member.path(p)) for p in own_paths(member) | set(also)}


def pristine_of(pristine: State, relative: str) -> Entry | None:
    """A path's state before any configuration: as recorded, else this machine's /etc file
    under the member's layer (a path of the layer that appeared since was copied up), else
    absent."""
    if relative in pristine:
        return pristine[relative]
    if relative.startswith("etc/"):
        return entry(Path("/") / relative)
    return None


def restore(member: Member, pristine: State) -> list[str]:
    """Put every path the last configuration changed back as it was; returns the paths that
    still differ (none, if the reset worked)."""
    now = snapshot(member, set(pristine))
    changed = {p for p, e in now.items() if e != pristine_of(pristine, p)}
    for relative in sorted(changed, key=lambda p: -p.count("/")):  # the deepest first
        if pristine_of(pristine, relative) is None:
            target = member.path(relative)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    for relative in sorted(changed, key=lambda p: p.count("/")):  # folders first
        was = pristine_of(pristine, relative)
        if was is None:
            continue
        kind, mode, uid, gid, content = was
        target = member.path(relative)
        if kind == "dir":
            target.mkdir(exist_ok=True)
        elif kind == "file":
            if target.is_symlink() or target.is_dir():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            target.write_bytes(content)
        else:
            continue  # (links and devices are the boot's, never changed by a configuration)
        os.chown(target, uid, gid)
        os.chmod(target, mode)
    after = snapshot(member, set(pristine))
    return sorted(p for p, e in after.items() if e != pristine_of(pristine, p))


def explain(relative: str) -> str | None:
    if relative in AGENT_ONLY:
        return AGENT_ONLY[relative]
    for prefix, why in TOOL_PREFIXES.items():
        if relative == prefix or relative.startswith(prefix + "/"):
            return why
    return None


def compare(theirs: dict[str, State], agents: dict[str, State]) -> dict[str, Any]:
    """Every member's end state against the agent's: what is identical, what differs as it
    must (and why), what differs and should not."""
    identical, expected, unexpected = 0, dict[str, str](), dict[str, str]()
    for member, state in agents.items():
        other = theirs[member]
        for relative in sorted(set(state) | set(other)):
            mine, its = state.get(relative), other.get(relative)
            if mine == its:
                identical += 1
            elif relative in RANDOM and mine and its and mine[:4] == its[:4]:
                expected[relative] = RANDOM[relative]
            elif (why := explain(relative)) is not None:
                expected[relative] = why
            else:
                unexpected.setdefault(relative, describe(mine, its, member))
    return {"identical_paths": identical, "differ_as_they_must": expected,
            "differ": unexpected}


def describe(agent: Entry | None, other: Entry | None, member: str) -> str:
    if agent is None or other is None:
        return f"{member}: only {'Ansible' if agent is None else 'the agent'} has it"
    if agent[:4] != other[:4]:
        return f"{member}: agent {agent[:4]}, Ansible {other[:4]}"
    return (f"{member}: content differs: agent {agent[4][-200:]!r}, "
            f"Ansible {other[4][-200:]!r}")


# -- the configurations -----------------------------------------------------------------------

def image_scripts(images: Path) -> dict[str, Any]:
    """The image's role scripts as the agent would find them on a member (scripts.plan)."""
    base = images / IMAGE / SCRIPTS

    def executables(folder: str) -> list[str]:
        found = sorted(p for p in (base / folder).glob("*") if p.is_file()
                       and os.access(p, os.X_OK)) if (base / folder).is_dir() else []
        return ["/" + str(p.relative_to(images / IMAGE)) for p in found]

    def by_name(folder: str) -> dict[str, str]:
        return {Path(p).name: p for p in executables(folder)}

    return {"roles": by_name("roles.d"), "thisnode": executables("thisnode.d"),
            "restarts": by_name("restarts.d"), "ready": executables("ready.d")}


def inventory(members: list[Member], launch: str, user_key: str, images: Path) -> dict[str, Any]:
    """The members in launch order, with what the launch says of them (as a cloud's API and
    the cluster's definition tell a tool like ElastiCluster)."""
    hosts = {m.hostname: {"ansible_host": m.address, "occ_fqdn": m.fqdn, "occ_member": m.name}
             for m in members}
    return {
        "members": {"hosts": hosts, "vars": {
            "ansible_user": "root", "occ_cluster": launch, "occ_role": ROLE,
            "occ_provides": [ROLE], "occ_requires": [ROLE],
            "occ_authorized_keys": [user_key], "occ_scripts": image_scripts(images)}},
        f"role_{ROLE.replace('-', '_')}": {"hosts": {h: {} for h in hosts}},
    }


def run_playbook(workdir: Path, playbook: Path, members: list[Member], launch: str,
                 user_key: str, key: Path, forks: int | None, pipelining: bool) -> float:
    run = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    (run / "inventory.yml").write_text(json.dumps(
        inventory(members, launch, user_key, boot_images()), indent=1))
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOK / "ansible.cfg"),
           "ANSIBLE_HOME": str(run / "home"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(run / "cp"),
           "ANSIBLE_PRIVATE_KEY_FILE": str(key), "ANSIBLE_PIPELINING": str(pipelining),
           "ANSIBLE_LOCAL_TEMP": str(run / "tmp"), "ANSIBLE_NOCOLOR": "1"}
    argv = [str(playbook), "-i", str(run / "inventory.yml"), str(PLAYBOOK / "configure.yml")]
    if forks is not None:
        argv += ["--forks", str(forks)]
    started = time.perf_counter()
    try:
        with open(run / "ansible.log", "wb") as out:
            done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=3600, check=False)
        took = time.perf_counter() - started
    finally:
        close_masters(run / "cp")
    if done.returncode != 0:
        log = (run / "ansible.log").read_text(errors="replace").splitlines()
        trouble = [line for line in log if "fatal:" in line or "UNREACHABLE" in line
                   or "FAILED" in line or "ERROR" in line]
        raise RuntimeError(f"ansible-playbook exited with {done.returncode}:\n"
                           + "\n".join(trouble[:20] + log[-20:]))
    return took


def close_masters(folder: Path) -> None:
    """End the SSH connections Ansible keeps open (ControlPersist): nothing stays running,
    and no run reuses another's."""
    for socket_path in folder.glob("*") if folder.is_dir() else []:
        subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "member"],
                       capture_output=True, timeout=30, check=False)


def boot_images() -> Path:
    """The controller's image folders (it has this environment)."""
    given = os.environ.get("OCC_LOCAL_IMAGES_DIR")
    return Path(given) if given else default_images_dir()


def children_cpu() -> float:
    """CPU seconds of this process's children that have ended (and theirs, waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sshd_cpu(members: list[Member]) -> float:
    """CPU seconds of the sessions the members' sshd served and that have ended (what a push
    runs on the members: the modules' Python, the role scripts)."""
    total = 0.0
    for member in members:
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{member.pid}/task/{member.pid}/children").read_text().split():
                if Path(f"/proc/{child}/comm").read_text().strip() == "sshd":
                    total += cpu_seconds(int(child), children=True)
    return total


async def run_agents(members: list[Member]) -> float:
    """The agent in every member's namespaces at once, as each member's boot starts it;
    until the last has reported."""
    agent = str(BIN / "occ-agent")
    started = time.perf_counter()
    processes = [await asyncio.create_subprocess_exec(
        "nsenter", "-t", str(m.pid), "-n", "-m", "-u", "--", agent,
        "--bootstrap", "/var/lib/oneclick/bootstrap.json", "--root", "/",
        "--hostname", m.hostname, "--address", m.address,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True) for m in members]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in processes)), 900)
    finally:
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
    took = time.perf_counter() - started
    failed = [(m.name, p.returncode, err.decode(errors="replace")[-500:])
              for m, p, (_, err) in zip(members, processes, results, strict=True)
              if p.returncode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} agents failed: {failed[:3]}")
    return took


# -- one size ---------------------------------------------------------------------------------

async def one_size(kube: KubeClient, controller: subprocess.Popen[bytes], workdir: Path,
                   playbook: Path, key: Path, user_key: str, size: int) -> dict[str, Any]:
    name, state = f"vs-{size}", workdir / "local"
    started = time.perf_counter()
    await kube.create(custom_path("ClusterLaunch", NAMESPACE), document(name, size, user_key))
    try:
        members = await wait_for_members(kube, state, name, size)
        up = time.perf_counter() - started
        pristine = {m.name: snapshot(m) for m in members}
        seconds: dict[str, float] = {}
        ends: dict[str, dict[str, State]] = {}
        cpu: dict[str, dict[str, float]] = {}
        for run, forks, pipelining in (("ansible", None, False),
                                       ("ansible_tuned", size, True)):
            here, there = children_cpu(), sshd_cpu(members)
            seconds[run] = round(run_playbook(workdir, playbook, members, name, user_key, key,
                                              forks, pipelining), 2)
            await asyncio.sleep(0.5)  # (the sessions ended with the connections: reaped)
            cpu[run] = {"this_host": round(children_cpu() - here, 1),
                        "members": round(sshd_cpu(members) - there, 1)}
            ends[run] = {m.name: snapshot(m, set(pristine[m.name])) for m in members}
            left = {m.name: bad for m in members if (bad := restore(m, pristine[m.name]))}
            if left:
                raise RuntimeError(f"the reset after {run} left changes: {left}")
        here, broker = children_cpu(), cpu_seconds(controller.pid)
        seconds["agent"] = round(await run_agents(members), 2)
        cpu["agent"] = {"members": round(children_cpu() - here, 1),
                        "controller": round(cpu_seconds(controller.pid) - broker, 1)}
        ends["agent"] = {m.name: snapshot(m, set(pristine[m.name])) for m in members}
        phase = await launch_phase(kube, name, "Ready", 120)
        same = {run: compare(ends[run], ends["agent"]) for run in ("ansible", "ansible_tuned")}
        first = members[0].name  # what a configuration changes on a member (the agent's)
        changed = sorted(p for p, e in ends["agent"][first].items()
                         if e != pristine_of(pristine[first], p))
        return {
            "members": size, "members_up_s": round(up, 1), "seconds": seconds,
            "ratio": round(seconds["ansible"] / seconds["agent"], 1),
            "ratio_tuned": round(seconds["ansible_tuned"] / seconds["agent"], 1),
            "cpu_s": cpu,
            "launch_phase": phase,
            "end_states_identical": all(not s["differ"] for s in same.values()),
            "changed_by_the_agent": changed,
            "compared": same,
        }
    finally:
        await delete_launch(kube, name, controller)


def stand_in(workdir: Path, public_key: Path) -> Path:
    """A folder with the stand-in occ-agent, for the controller's PATH (outside /root and the
    other folders a member binds over this machine's: the member runs it from there)."""
    folder = workdir / "stand-in"
    folder.mkdir()
    script = folder / "occ-agent"
    script.write_text(STAND_IN.format(agent=BIN / "occ-agent", key=public_key))
    script.chmod(0o755)
    return folder


def terminate_leftovers(state: Path) -> None:
    """Whatever member is still there (the controller failed to end it): ended here."""
    provider = LocalProvider(state_dir=state)
    records = provider.records()
    if records:
        print(f"ending {len(records)} members left behind", file=sys.stderr)
        asyncio.run(provider.terminate([r.id for _, r in records]))


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| N | agent | Ansible, forks 5 | ratio | Ansible, forks N, pipelining | ratio | "
             "end states |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        s = r["seconds"]
        lines.append(f"| {r['members']} | {s['agent']:.2f} s | {s['ansible']:.1f} s | "
                     f"{r['ratio']}x | {s['ansible_tuned']:.1f} s | {r['ratio_tuned']}x | "
                     f"{'identical' if r['end_states_identical'] else 'DIFFER'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,25,50")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.vs_ansible needs root: the local provider's members get their own "
                 "namespaces")
    # SIGTERM as ^C: the launch is deleted and every member ended on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    playbook = ansible_playbook()
    workdir = Path(tempfile.mkdtemp(prefix="occ-bench-vs-ansible-"))
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f",
                    str(key)], check=True)
    user_key = f"ssh-ed25519 {key.with_suffix('.pub').read_text().split()[1]} user@oneclick"
    path = os.environ["PATH"]
    results: list[dict[str, Any]] = []
    try:
        with control_plane() as plane:
            prepare_now(plane.kubeconfig)
            os.environ["PATH"] = f"{stand_in(workdir, key.with_suffix('.pub'))}:{path}"
            try:
                controller = start_controller(plane.kubeconfig, workdir)
            finally:
                os.environ["PATH"] = path
            try:
                async def run_all() -> None:
                    kube = KubeClient(kubeconfig=plane.kubeconfig)
                    try:
                        for size in (int(s) for s in args.sizes.split(",")):
                            result = await one_size(kube, controller, workdir, playbook,
                                                    key, user_key, size)
                            results.append(result)
                            print(json.dumps(result), flush=True)
                    finally:
                        await kube.aclose()

                asyncio.run(run_all())
            finally:
                controller.terminate()
                try:
                    controller.wait(30)
                except subprocess.TimeoutExpired:
                    controller.kill()
                    controller.wait()
    finally:
        terminate_leftovers(workdir / "local")
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))


if __name__ == "__main__":
    main()
