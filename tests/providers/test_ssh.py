"""The ssh provider on machines of the user's own: here, three members of the local provider
(each with its own sshd, address and host keys), taken over SSH with their host keys pinned.

A machine goes from one tenant to the next: what the first one's launch installed must be
gone, and who holds which machine is decided by the API server, not by the machine (whose
tenant is root there). A machine may have nothing of ours at all, only python3 and sshd: the
member's cloud-config fetches the agent from the broker there."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oneclick.agent.bootstrap import parse
from oneclick.api import API_VERSION
from oneclick.controller.providers.claims import HOST, PROVIDER_LABEL, UNUSABLE
from oneclick.controller.providers.local import network
from oneclick.controlplane import agent_bundle
from oneclick.controlplane.local import free_port
from tests.conftest import configure_providers, kubectl
from tests.controller.launches import (
    create,
    get,
    members,
    sample,
    wait_for_phase,
    wait_until,
)
from tests.controller_process import ControllerProcess
from tests.providers.conftest import create_secret

KEY_SECRET = "lab-ssh"
AGENT = str(Path(sys.executable).parent / "occ-agent")
UNINSTALL_TIMEOUT = 5

# What the agent's common tasks touch on a machine (and what must come back as it was).
TOUCHED = ("/etc/hosts", "/etc/ssh/ssh_known_hosts", "/etc/ssh/shosts.equiv",
           "/etc/hosts.equiv", "/root/.shosts", "/root/.ssh/authorized_keys",
           "/etc/ssh/sshd_config", "/etc/ssh/ssh_config")
DROP_IN_DIRS = ("/etc/ssh/sshd_config.d", "/etc/ssh/ssh_config.d")

# The owner readies a machine for the pool: its key a plain line of authorized_keys, and
# nothing left of the launch that made it (these machines are launches themselves).
READY_FOR_THE_POOL = """
set -e
for f in /etc/hosts /etc/ssh/ssh_known_hosts /etc/ssh/shosts.equiv /etc/hosts.equiv \
         /root/.shosts; do
  [ -f "$f" ] && sed -i '/^# BEGIN oneclick$/,/^# END oneclick$/d' "$f"
done
printf '%s\\n' "$1" > /root/.ssh/authorized_keys
rm -f /etc/ssh/sshd_config.d/50-oneclick.conf /etc/ssh/ssh_config.d/50-oneclick.conf
rm -rf /var/lib/oneclick/* /var/log/oneclick-agent.log
"""

# What of a base cluster's batch system could be left on a machine given back: a Slurm daemon
# that listens, a home mounted from the old head node, its munge key or configuration.
BATCH_LEFTOVERS = ("ss -Hltn '( sport = :6817 or sport = :6818 )'; "
                   "findmnt -t fuse.sshfs,nfs,nfs4 --noheadings; "
                   "ls /etc/munge/munge.key /etc/slurm/slurm.conf 2>/dev/null")

SNAPSHOT = f"""
for f in {" ".join(TOUCHED)}; do
  echo "== $f $(stat -c %a "$f" 2>/dev/null || echo absent)"; base64 "$f" 2>/dev/null || true
done
for d in {" ".join(DROP_IN_DIRS)}; do echo "== $d"; ls -A "$d" 2>/dev/null || true; done
"""


@dataclass
class Lab:
    """The machines, and how the controller (and the test, as their owner) reaches them."""

    hosts: list[dict[str, Any]]  # address, hostKeys
    key: Path
    known_hosts: Path
    controller_namespace: str
    physics: str  # the only namespace `lab-physics` serves

    def ssh(self, address: str, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        remote = " ".join(["sh", "-c", _quote(command), "sh", *map(_quote, args)])
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
             f"root@{address}", remote], capture_output=True, text=True, timeout=60, check=False)

    @property
    def addresses(self) -> list[str]:
        return [h["address"] for h in self.hosts]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def lab(controller: ControllerProcess, kubeconfig: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Three running machines that trust our key, and pools of them: `lab` (all three),
    `lab-wrong-key`, `lab-physics` (one namespace only), `lab-reset`, `lab-bad-reset` and
    `lab-stock` (all three, with no agentCommand: the machines have no occ-agent); and, on the
    first machine with a short uninstallTimeout, `lab-short` and `lab-hang` (whose
    agentCommand is the machine's own /opt/occ-agent)."""
    directory = tmp_path_factory.mktemp("lab")
    public = _keygen(directory / "id_ed25519")
    namespace = "lab-machines"
    kubectl(kubeconfig, "create", "namespace", namespace)
    machines = create(kubeconfig, namespace, {
        "apiVersion": API_VERSION, "kind": "ClusterLaunch", "metadata": {"name": "machines"},
        "spec": {"sshAuthorizedKeys": [public], "lifetime": "3h",
                 "roles": [{"name": "machine", "image": "base-cluster", "quantity": 3}]}})
    launch = wait_for_phase(kubeconfig, namespace, machines, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    hosts = [{"address": m["status"]["addresses"][0],
              "hostKeys": m["status"]["identity"]["sshHostKeys"]}
             for m in members(kubeconfig, namespace, machines)]
    known_hosts = directory / "known_hosts"
    known_hosts.write_text("".join(f"{h['address']} {k}\n" for h in hosts for k in h["hostKeys"]))
    physics = "physics-" + os.urandom(3).hex()
    kubectl(kubeconfig, "create", "namespace", physics)
    lab = Lab(hosts, directory / "id_ed25519", known_hosts, controller.namespace, physics)
    for address in lab.addresses:
        readied = lab.ssh(address, READY_FOR_THE_POOL, public)
        assert readied.returncode == 0, readied.stderr

    create_secret(kubeconfig, controller.namespace, KEY_SECRET,
                  id_ed25519=(directory / "id_ed25519").read_text())
    entry = {"type": "ssh", "brokerHost": network.GATEWAY, "user": "root",
             "privateKey": {"secret": KEY_SECRET, "key": "id_ed25519"},
             "agentCommand": AGENT, "hosts": hosts}
    impostor = _keygen(directory / "impostor")
    configure_providers(controller, lab=entry, **{
        "lab-wrong-key": {**entry, "hosts": [{"address": hosts[0]["address"],
                                              "hostKeys": [impostor]}]},
        "lab-physics": {**entry, "hosts": hosts[:1], "allowedNamespaces": [physics]},
        "lab-reset": {**entry, "hosts": hosts[1:2],
                      "resetCommand": "echo \"reimaged $(hostname)\" > /root/reset-ran"},
        "lab-bad-reset": {**entry, "hosts": hosts[2:3],
                          "resetCommand": "echo 'the reimage service said no' >&2; exit 7"},
        "lab-stock": {k: v for k, v in entry.items() if k != "agentCommand"},
        "lab-short": {**entry, "hosts": hosts[:1], "uninstallTimeout": UNINSTALL_TIMEOUT},
        "lab-hang": {**entry, "hosts": hosts[:1], "uninstallTimeout": UNINSTALL_TIMEOUT,
                     "agentCommand": "/opt/occ-agent"}})
    return lab


def leases(lab: Lab, kubeconfig: Path) -> dict[str, dict[str, Any]]:
    """The pools' Leases, by machine address, as the API server has them."""
    listing = json.loads(kubectl(kubeconfig, "get", "leases", "-n", lab.controller_namespace,
                                 "-l", PROVIDER_LABEL, "-o", "json").stdout)
    return {item["metadata"]["annotations"][HOST].rpartition(":")[0]: item
            for item in listing["items"]}


def holders(lab: Lab, kubeconfig: Path) -> dict[str, str | None]:
    """Which idempotency key holds each machine (None: free)."""
    found = leases(lab, kubeconfig)
    return {a: (found[a]["spec"].get("holderIdentity") if a in found else None)
            for a in lab.addresses}


def all_free(lab: Lab, kubeconfig: Path) -> bool:
    return not set(leases(lab, kubeconfig)) & set(lab.addresses)


def wait_all_free(lab: Lab, kubeconfig: Path) -> None:
    wait_until(lambda: all_free(lab, kubeconfig), timeout=60,
               what="every machine back in the pool")


def snapshot(lab: Lab, address: str) -> str:
    taken = lab.ssh(address, SNAPSHOT)
    assert taken.returncode == 0, taken.stderr
    return taken.stdout


def given_back(lab: Lab, kubeconfig: Path, namespace: str, name: str,
               before: dict[str, str], leftovers: str) -> None:
    """Delete the launch: every machine is back in the pool, as it was before the launch
    (`before`: their snapshots), and `leftovers` (a command listing what of the launch
    could be left) finds nothing on any of them."""
    delete(kubeconfig, namespace, name)
    wait_all_free(lab, kubeconfig)
    for address in lab.addresses:
        assert snapshot(lab, address) == before[address], address
        left = lab.ssh(address, leftovers)
        assert left.stdout.strip() == "", (address, left.stdout)


def solo(name: str, provider: str, quantity: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "ClusterLaunch", "metadata": {"name": name},
            "spec": {"provider": provider, **spec, "roles": [
                {"name": "solo", "image": "base-cluster", "quantity": quantity}]}}


def failure(launch: dict[str, Any]) -> str:
    failed = {c["type"]: c for c in launch["status"]["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "LaunchFailed", failed
    return str(failed["message"])


def kept_out(lab: Lab, kubeconfig: Path, machine: str) -> str:
    """Why the machine is out of the pool (its Lease held by nobody, with the reason)."""
    wait_until(lambda: not holders(lab, kubeconfig)[machine], timeout=60, what="terminated")
    lease = leases(lab, kubeconfig)[machine]
    assert UNUSABLE in lease["metadata"]["annotations"], lease
    return str(lease["metadata"]["annotations"][UNUSABLE])


def give_back_by_hand(lab: Lab, kubeconfig: Path, machine: str) -> None:
    """What an administrator does once the machine is fine again: delete its Lease."""
    kubectl(kubeconfig, "delete", "lease", leases(lab, kubeconfig)[machine]["metadata"]["name"],
            "-n", lab.controller_namespace)
    wait_all_free(lab, kubeconfig)


def delete(kubeconfig: Path, namespace: str, name: str) -> None:
    """Delete the launch and wait until it is gone (its members terminated)."""
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")
    wait_until(lambda: get(kubeconfig, namespace, "cl", name) is None, timeout=180,
               what=f"launch {name} gone")


def test_a_base_cluster_on_my_own_machines(lab: Lab, kubeconfig: Path, namespace: str) -> None:
    name = create(kubeconfig, namespace, sample("base-cluster.yaml", provider="lab"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]

    # Each member is one of the machines, held (in the API server) by that member's key.
    taken = holders(lab, kubeconfig)
    found = {m["status"]["addresses"][0]: m for m in members(kubeconfig, namespace, name)}
    assert set(found) == set(taken) == set(lab.addresses)
    for address, member in found.items():
        assert member["status"]["instanceId"].startswith(f"ssh/{address}:22/")
        assert taken[address] == member["metadata"]["uid"]
        annotations = leases(lab, kubeconfig)[address]["metadata"]["annotations"]
        assert annotations["clusters.oneclick.dev/namespace"] == namespace
        assert annotations["clusters.oneclick.dev/member"] == member["metadata"]["name"]
        # The machine was contextualized for its role, by the agent the provider started.
        context = lab.ssh(address, "cat /var/lib/oneclick/context.json")
        assert context.returncode == 0, context.stderr
        assert f'"{name}"' in context.stdout and member["spec"]["role"] in context.stdout

    # Deleted: every machine is free again, and what we wrote on it is gone.
    delete(kubeconfig, namespace, name)
    wait_all_free(lab, kubeconfig)
    for address in lab.addresses:
        left = lab.ssh(address, "ls -A /var/lib/oneclick; ls /var/log/oneclick-agent.log")
        assert left.returncode != 0 and left.stdout.strip() == "", left.stdout
        # Nor does its batch system run on: slurmd, started a second time while the first
        # was still starting, once served on with no pid file to stop it by.
        left = lab.ssh(address, BATCH_LEFTOVERS)
        assert left.stdout.strip() == "", (address, left.stdout)


def test_the_next_tenant_finds_each_machine_as_it_was_before_the_last(
        lab: Lab, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    before = {a: snapshot(lab, a) for a in lab.addresses}
    user_key = _keygen(tmp_path / "user")
    document = sample("base-cluster.yaml", provider="lab", sshAuthorizedKeys=[user_key],
                      sshHostBased=True, hostsFile=True)
    first = create(kubeconfig, namespace, document)
    launch = wait_for_phase(kubeconfig, namespace, first, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    for address in lab.addresses:  # (the comparison below is not an empty one)
        during = lab.ssh(address, "cat /root/.ssh/authorized_keys /etc/ssh/shosts.equiv "
                                  "/etc/ssh/sshd_config.d/50-oneclick.conf")
        assert user_key in during.stdout and "# BEGIN oneclick" in during.stdout, during

    # What the image's role scripts started and wrote went too (its uninstall.d): no Slurm
    # daemon listens, no home is mounted from the old head node, no munge key.
    given_back(lab, kubeconfig, namespace, first, before, BATCH_LEFTOVERS)

    # The next launch brings no keys of its own: none of the first one's is left to trust.
    second = create(kubeconfig, namespace, solo("after", "lab", quantity=3))
    launch = wait_for_phase(kubeconfig, namespace, second, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    for address in lab.addresses:
        keys = lab.ssh(address, "cat /root/.ssh/authorized_keys")
        assert keys.returncode == 0 and user_key.split()[1] not in keys.stdout, keys
    delete(kubeconfig, namespace, second)
    wait_all_free(lab, kubeconfig)


def test_a_tenant_deleting_its_claim_file_frees_nothing(lab: Lab, kubeconfig: Path,
                                                        namespace: str) -> None:
    tenant = create(kubeconfig, namespace, solo("tenant", "lab", quantity=3))
    launch = wait_for_phase(kubeconfig, namespace, tenant, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    held = holders(lab, kubeconfig)

    # Root on its machines, the tenant removes what says they are taken.
    for address in lab.addresses:
        erased = lab.ssh(address, "rm -rf /var/lib/oneclick/provider/claim; "
                                  "ls /var/lib/oneclick/provider/claim")
        assert erased.returncode != 0, erased.stdout

    late = create(kubeconfig, namespace, solo("late", "lab"))
    message = failure(wait_for_phase(kubeconfig, namespace, late, "Failed", "Ready",
                                     timeout=120))
    assert "provider 'lab' has no free host for late-solo-0: 3 of 3 taken" in message, message
    assert holders(lab, kubeconfig) == held  # nobody else got in

    delete(kubeconfig, namespace, tenant)
    wait_all_free(lab, kubeconfig)  # the machines are free again once the tenant is done
    delete(kubeconfig, namespace, late)


def test_a_pool_for_some_namespaces_refuses_the_others(lab: Lab, kubeconfig: Path,
                                                        namespace: str) -> None:
    outsider = create(kubeconfig, namespace, solo("outsider", "lab-physics"))
    message = failure(wait_for_phase(kubeconfig, namespace, outsider, "Failed", "Ready",
                                     timeout=120))
    assert (f"provider 'lab-physics' serves namespaces {lab.physics}; launch is in "
            f"{namespace}") in message, message
    assert all_free(lab, kubeconfig)

    insider = create(kubeconfig, lab.physics, solo("insider", "lab-physics"))
    launch = wait_for_phase(kubeconfig, lab.physics, insider, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    delete(kubeconfig, lab.physics, insider)
    delete(kubeconfig, namespace, outsider)
    wait_all_free(lab, kubeconfig)


def test_a_machine_returns_to_the_pool_only_after_its_reset(lab: Lab, kubeconfig: Path,
                                                            namespace: str) -> None:
    machine = lab.addresses[1]
    name = create(kubeconfig, namespace, solo("resets", "lab-reset"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    assert lab.ssh(machine, "cat /root/reset-ran").returncode != 0  # not before the end
    delete(kubeconfig, namespace, name)
    wait_all_free(lab, kubeconfig)
    ran = lab.ssh(machine, "cat /root/reset-ran && rm /root/reset-ran")
    assert ran.returncode == 0 and ran.stdout.startswith("reimaged "), ran


def test_a_machine_whose_reset_fails_stays_out_of_the_pool(lab: Lab, kubeconfig: Path,
                                                           namespace: str) -> None:
    machine = lab.addresses[2]
    name = create(kubeconfig, namespace, solo("unlucky", "lab-bad-reset"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    delete(kubeconfig, namespace, name)

    # Its Lease stays, held by nobody, with the command's output.
    wait_until(lambda: not holders(lab, kubeconfig)[machine], timeout=60, what="terminated")
    lease = leases(lab, kubeconfig)[machine]
    reason = lease["metadata"]["annotations"][UNUSABLE]
    assert "the reset command exited with code 7: the reimage service said no" in reason
    # (what the agent installed was taken back all the same)
    left = lab.ssh(machine, "grep -l '^# BEGIN oneclick$' /etc/hosts /root/.ssh/authorized_keys")
    assert left.stdout == "", left.stdout

    # No launch gets it (through any pool that lists it) until an administrator says so.
    why = f"{machine}: the reset command exited with code 7: the reimage service said no"
    for provider, quantity, counts in (("lab-bad-reset", 1, "0 of 1 taken, 1 unusable"),
                                       ("lab", 3, "2 of 3 taken, 1 unusable")):
        after = create(kubeconfig, namespace, solo(f"after-{provider}", provider, quantity))
        message = failure(wait_for_phase(kubeconfig, namespace, after, "Failed", "Ready",
                                         timeout=120))
        assert f"{counts}; {why}" in message, message
        delete(kubeconfig, namespace, after)
    kubectl(kubeconfig, "delete", "lease", lease["metadata"]["name"], "-n",
            lab.controller_namespace)
    again = create(kubeconfig, namespace, solo("again", "lab-bad-reset"))
    launch = wait_for_phase(kubeconfig, namespace, again, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    assert holders(lab, kubeconfig)[machine] == members(kubeconfig, namespace, again)[0][
        "metadata"]["uid"]
    # (its reset fails again: the Lease stays out of the pool; given back by hand once more)
    delete(kubeconfig, namespace, again)
    wait_until(lambda: not holders(lab, kubeconfig)[machine], timeout=60, what="terminated")
    kubectl(kubeconfig, "delete", "lease", lease["metadata"]["name"], "-n",
            lab.controller_namespace)
    wait_all_free(lab, kubeconfig)


def test_a_machine_with_another_host_key_is_refused(lab: Lab, kubeconfig: Path,
                                                    namespace: str) -> None:
    name = create(kubeconfig, namespace, solo("trusting", "lab-wrong-key"))
    message = failure(wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready",
                                     timeout=120))
    assert "host key that is not one of its pinned keys" in message
    assert "no free host" in message
    wait_all_free(lab, kubeconfig)


def test_a_pool_too_small_fails_clearly_and_gives_every_machine_back(
        lab: Lab, kubeconfig: Path, namespace: str) -> None:
    document = sample("base-cluster.yaml", provider="lab")
    document["spec"]["roles"][1]["quantity"] = 3  # four members, three machines
    name = create(kubeconfig, namespace, document)
    message = failure(wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready",
                                     timeout=120))
    assert "provider 'lab' has no free host" in message
    assert "3 of 3 taken" in message
    # Backed out: every machine is free for the next launch.
    wait_all_free(lab, kubeconfig)


def test_a_machine_follows_a_broker_that_moved_for_good(
        lab: Lab, controller: ControllerProcess, kubeconfig: Path, namespace: str) -> None:
    """The controller comes back on another port while a member waits for its data: the
    provider uploads the member's new bootstrap, and its agent follows it."""
    document = solo("mover", "lab", data=[
        {"name": "go", "valueFrom": {"secretKeyRef": {"name": "go", "key": "go"}}}])
    document["spec"]["roles"][0]["requires"] = {"data": ["go"]}
    name = create(kubeconfig, namespace, document)
    wait_until(lambda: any((m.get("status") or {}).get("identity")
                           for m in members(kubeconfig, namespace, name)),
               timeout=120, what="the member waiting for its data")
    [member] = members(kubeconfig, namespace, name)
    address = member["status"]["addresses"][0]
    old = member["status"]["brokerUrl"]

    controller.kill()
    controller.broker_port = free_port()
    controller.start()
    new = f"{old.rsplit(':', 1)[0]}:{controller.broker_port}"
    wait_until(lambda: members(kubeconfig, namespace, name)[0]["status"].get("brokerUrl") == new,
               timeout=60, what="the member's bootstrap handed over again")
    bootstrap = lab.ssh(address, "cat /var/lib/oneclick/bootstrap.json")
    assert parse(bootstrap.stdout, "the host's bootstrap").broker_url == new, bootstrap.stderr

    kubectl(kubeconfig, "create", "secret", "generic", "go", "-n", namespace,
            "--from-literal=go=now")
    kubectl(kubeconfig, "label", "secret", "go", "-n", namespace,
            "clusters.oneclick.dev/deliverable=true")
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed", timeout=120)
    assert launch["status"]["phase"] == "Ready", launch["status"]
    log = lab.ssh(address, "cat /var/log/oneclick-agent.log").stdout
    assert f"the bootstrap now names the broker at {new} (was {old}); switching" in log, log
    delete(kubeconfig, namespace, name)
    wait_all_free(lab, kubeconfig)


@pytest.fixture
def served(controller: ControllerProcess) -> Iterator[Path]:
    """The controller serves the agent file (OCC_AGENT_BUNDLE), as long as the test runs."""
    path = Path(controller.extra_env["OCC_AGENT_BUNDLE"])
    shutil.copyfile(agent_bundle.build(log=False), path)
    yield path
    path.unlink(missing_ok=True)


def test_machines_with_only_python3_and_sshd_get_the_agent_from_the_broker(
        lab: Lab, kubeconfig: Path, namespace: str, served: Path) -> None:
    for address in lab.addresses:  # (nothing of ours: what the pool `lab-stock` runs)
        found = lab.ssh(address, "command -v occ-agent; python3 --version")
        assert found.stdout.startswith("Python 3.11"), found
    before = {a: snapshot(lab, a) for a in lab.addresses}
    name = create(kubeconfig, namespace, sample("base-cluster.yaml", provider="lab-stock"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed", timeout=300)
    assert launch["status"]["phase"] == "Ready", launch["status"]

    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    kept = f"/var/lib/oneclick/occ-agent-{digest[:16]}.pyz"
    sessions = {}
    for address in lab.addresses:
        # What the cloud-config writes, as it writes it (root's, its modes).
        written = lab.ssh(address, "stat -c '%a %U %n' /var/lib/oneclick/bootstrap.json "
                                   "/var/lib/oneclick/occ-boot.py")
        assert written.stdout.splitlines() == [
            "600 root /var/lib/oneclick/bootstrap.json",
            "700 root /var/lib/oneclick/occ-boot.py"], written
        # The agent the broker served, checked and kept, runs from the host's python3 (its
        # libraries unpacked under the state directory), and contextualized the machine.
        ran = lab.ssh(address, f"sha256sum {kept}; ls -d /var/lib/oneclick/cache/agent-*/lib; "
                               "ps -o pid=,args= -s $(cat /var/lib/oneclick/provider/agent.pid)")
        assert ran.returncode == 0 and f"{digest}  {kept}" in ran.stdout, ran
        processes = dict(line.strip().split(" ", 1) for line in ran.stdout.splitlines()
                         if line.strip().split(" ", 1)[0].isdigit())
        assert any(args.endswith(f"python3 -I {kept} --bootstrap /var/lib/oneclick/"
                                 "bootstrap.json --follow") for args in processes.values()), ran
        sessions[address] = processes
        context = lab.ssh(address, "cat /var/lib/oneclick/context.json")
        assert f'"{name}"' in context.stdout, context

    # Deleted: what the launch put there (bootstrap, occ-boot, the fetched agent and its
    # unpacked libraries, the copy it uninstalled with) and what the agent installed is gone,
    # and so are its processes.
    given_back(lab, kubeconfig, namespace, name, before,
               "ls -A /var/lib/oneclick; ls /var/log/oneclick-agent.log; "
               "ls -d /tmp/tmp.*/occ-agent.pyz; ss -Hltn '( sport = :6817 or sport = :6818 )'")
    for address in lab.addresses:
        for pid in sessions[address]:
            assert lab.ssh(address, f"kill -0 {pid}").returncode != 0, (address, pid)


def test_a_machine_that_gets_no_agent_fails_the_launch_and_goes_back_clean(
        lab: Lab, controller: ControllerProcess, kubeconfig: Path, namespace: str) -> None:
    assert not Path(controller.extra_env["OCC_AGENT_BUNDLE"]).exists()  # (served by none)
    name = create(kubeconfig, namespace, solo("agentless", "lab-stock"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready", timeout=180)
    failed = {c["type"]: c for c in launch["status"]["conditions"]}["Failed"]
    assert failed["status"] == "True", launch["status"]
    assert "this image has no occ-agent and the broker serves none" in failed["message"], failed
    # Nothing ran there that terminating needs an agent for: the machine is free again.
    delete(kubeconfig, namespace, name)
    wait_all_free(lab, kubeconfig)
    for address in lab.addresses:
        left = lab.ssh(address, "ls -A /var/lib/oneclick")  # (a mount point here: it stays)
        assert left.stdout.strip() == "", (address, left.stdout)


# The previous tenant's occ-agent (root on the machine, it replaced the one the pool names):
# the real one, except that its uninstall never ends.
HANGING_AGENT = f"""#!/bin/sh
case " $* " in *" --uninstall "*) echo $$ > /opt/hung.pid; exec sleep 3600 ;; esac
exec {AGENT} "$@"
"""


def test_an_uninstall_that_hangs_keeps_the_machine_out_and_the_deletion_completes(
        lab: Lab, kubeconfig: Path, namespace: str) -> None:
    machine = lab.addresses[0]
    put = lab.ssh(machine, 'printf %s "$1" > /opt/occ-agent && chmod 755 /opt/occ-agent',
                  HANGING_AGENT)
    assert put.returncode == 0, put.stderr
    name = create(kubeconfig, namespace, solo("hangs", "lab-hang"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]

    delete(kubeconfig, namespace, name)  # (it completes: the uninstall is given up on)
    reason = kept_out(lab, kubeconfig, machine)
    assert reason == (f"taking back what the agent installed: it did not finish within "
                      f"{UNINSTALL_TIMEOUT}s (at: uninstalling with /opt/occ-agent (or the "
                      "fetched agent))"), reason
    hung = lab.ssh(machine, "cat /opt/hung.pid")
    assert hung.returncode == 0 and hung.stdout.strip().isdigit(), hung  # (it did hang)

    # The owner takes the machine back by hand: the real uninstall, then its Lease.
    done = lab.ssh(machine, f"kill {hung.stdout.strip()} 2>/dev/null; "
                            f"{AGENT} --uninstall --root / && rm -rf /opt/occ-agent "
                            "/opt/hung.pid /var/lib/oneclick/* /var/log/oneclick-agent.log")
    assert done.returncode == 0, done
    give_back_by_hand(lab, kubeconfig, machine)


# An occ-agent that never reaches the broker (its member stays Running, described by the
# provider) and uninstalls nothing.
SILENT_AGENT = """#!/bin/sh
case " $* " in *" --uninstall "*) exit 0 ;; esac
exec sleep 3600
"""


def test_fifos_for_the_agents_pid_exit_and_log_block_nothing(lab: Lab, kubeconfig: Path,
                                                              namespace: str) -> None:
    machine = lab.addresses[0]
    put = lab.ssh(machine, 'printf %s "$1" > /opt/occ-agent && chmod 755 /opt/occ-agent',
                  SILENT_AGENT)
    assert put.returncode == 0, put.stderr
    name = create(kubeconfig, namespace, solo("piped", "lab-hang", onFailure="Keep"))
    wait_until(lambda: members(kubeconfig, namespace, name)[0]["status"].get("phase")
               == "Running", timeout=120, what="the member running")

    # The tenant, root there, ends the agent and puts FIFOs where the provider reads its exit
    # code and log (a reader would wait for a writer forever): the member is still described.
    piped = lab.ssh(machine, "cd /var/lib/oneclick/provider && rm -f agent.exit agent.log && "
                             "mkfifo agent.exit agent.log && kill -KILL -$(cat agent.pid)")
    assert piped.returncode == 0, piped.stderr
    wait_for_phase(kubeconfig, namespace, name, "Failed", timeout=120)
    [member] = members(kubeconfig, namespace, name)
    running = {c["type"]: c for c in member["status"]["conditions"]}["Running"]
    assert running["status"] == "False", member["status"]
    assert running["message"].startswith("occ-agent exited with code ?"), running

    # And one for its pid: terminating does not wait on it, and cannot tell that the agent's
    # session is gone: the machine stays out, saying so, and the deletion completes.
    piped = lab.ssh(machine, "cd /var/lib/oneclick/provider && rm agent.pid && mkfifo agent.pid")
    assert piped.returncode == 0, piped.stderr
    delete(kubeconfig, namespace, name)
    reason = kept_out(lab, kubeconfig, machine)
    assert reason == ("taking back what the agent installed: /var/lib/oneclick/provider/"
                      "agent.pid is not a file: the agent may still run; (exit code 5)"), reason
    left = lab.ssh(machine, "ls -A /var/lib/oneclick; rm /opt/occ-agent")
    assert left.returncode == 0 and left.stdout == "", left
    give_back_by_hand(lab, kubeconfig, machine)


def test_a_file_that_cannot_be_put_in_place_fails_the_launch(lab: Lab, kubeconfig: Path,
                                                             namespace: str) -> None:
    """A previous tenant's occ-boot, made immutable: moving the launch's over it fails, and
    the launch fails saying so (the agent does not start with what was there)."""
    machine = lab.addresses[0]
    stuck = "/var/lib/oneclick/occ-boot.py"
    left = lab.ssh(machine, f"touch {stuck} && chattr +i {stuck}")
    assert left.returncode == 0, left.stderr
    try:
        name = create(kubeconfig, namespace, solo("stuck", "lab-short", onFailure="Keep"))
        message = failure(wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready",
                                         timeout=120))
        assert f"cannot put {stuck} in place (exit code 7)" in message, message
        assert "Operation not permitted" in message, message
        # The folder it was uploaded to (the bootstrap: the member's token) is gone.
        staged = lab.ssh(machine, "ls -d /root/.oneclick-*")
        assert staged.returncode != 0 and staged.stdout == "", staged.stdout

        delete(kubeconfig, namespace, name)  # the machine stays out: that file is still there
        reason = kept_out(lab, kubeconfig, machine)
        assert f"still installed: {stuck}" in reason, reason
    finally:
        lab.ssh(machine, f"chattr -i {stuck}; rm -rf /var/lib/oneclick/*")
    give_back_by_hand(lab, kubeconfig, machine)


def test_a_token_left_in_the_logins_home_goes_with_the_machine(lab: Lab, kubeconfig: Path,
                                                                namespace: str) -> None:
    """A launch whose connection dropped after its upload left its folder (a bootstrap, the
    member's token, in it) in the login's home: giving the machine back removes it."""
    machine = lab.addresses[0]
    dropped = lab.ssh(machine, "mkdir -m 700 /root/.oneclick-dropped && "
                               "echo '{\"token\": \"secret\"}' > /root/.oneclick-dropped/0")
    assert dropped.returncode == 0, dropped.stderr
    name = create(kubeconfig, namespace, solo("after-drop", "lab-short"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    delete(kubeconfig, namespace, name)
    wait_all_free(lab, kubeconfig)
    left = lab.ssh(machine, "ls -A /root")
    assert left.returncode == 0 and ".oneclick-" not in left.stdout, left.stdout
