"""The ssh provider on machines of the user's own: here, three members of the local provider
(each with its own sshd, address and host keys), taken over SSH with their host keys pinned."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api import API_VERSION
from controller.providers.config import SSHProviderConfig
from controller.providers.local import network
from controller.providers.ssh import SSHProvider
from tests.conftest import configure_providers, kubectl
from tests.controller.launches import create, members, sample, wait_for_phase, wait_until
from tests.controller_process import ControllerProcess
from tests.providers.conftest import create_secret, secret_reader

KEY_SECRET = "lab-ssh"


@dataclass
class Lab:
    """The machines, and how the controller (and the test, as their owner) reaches them."""

    hosts: list[dict[str, Any]]  # address, hostKeys
    key: Path
    provider: dict[str, Any]  # the `lab` entry of the providers file
    known_hosts: Path

    def ssh(self, address: str, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
             f"root@{address}", command], capture_output=True, text=True, timeout=60, check=False)


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def lab(controller: ControllerProcess, kubeconfig: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Three running machines that trust our key, and the `lab` and `lab-wrong-key` providers."""
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

    create_secret(kubeconfig, controller.namespace, KEY_SECRET,
                  id_ed25519=(directory / "id_ed25519").read_text())
    entry = {"type": "ssh", "brokerHost": network.GATEWAY, "user": "root",
             "privateKey": {"secret": KEY_SECRET, "key": "id_ed25519"},
             "agentCommand": str(Path(sys.executable).parent / "occ-agent"), "hosts": hosts}
    impostor = _keygen(directory / "impostor")
    configure_providers(controller, lab=entry, **{"lab-wrong-key": {
        **entry, "hosts": [{"address": hosts[0]["address"], "hostKeys": [impostor]}]}})
    return Lab(hosts, directory / "id_ed25519", {"name": "lab", **entry}, known_hosts)


def holders(lab: Lab, controller: ControllerProcess, kubeconfig: Path) -> dict[str, str | None]:
    """Which idempotency key holds each machine (None: free), as the provider reads them."""
    provider = SSHProvider(SSHProviderConfig.model_validate(lab.provider),
                           secret_reader(kubeconfig, controller.namespace))

    async def read() -> dict[str, str | None]:
        try:
            claims, unusable = await provider.claims()
        finally:
            await provider.close()
        assert not unusable, unusable
        return {c.host.address: c.key for c in claims}

    return asyncio.run(read())


def test_a_base_cluster_on_my_own_machines(lab: Lab, controller: ControllerProcess,
                                           kubeconfig: Path, namespace: str) -> None:
    name = create(kubeconfig, namespace, sample("base-cluster.yaml", provider="lab"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]

    # Each member is one of the machines, held by that member's key.
    taken = holders(lab, controller, kubeconfig)
    found = {m["status"]["addresses"][0]: m for m in members(kubeconfig, namespace, name)}
    assert set(found) == set(taken) == {h["address"] for h in lab.hosts}
    for address, member in found.items():
        assert member["status"]["instanceId"].startswith(f"ssh/{address}:22/")
        assert taken[address] == member["metadata"]["uid"]
        # The machine was contextualized for its role, by the agent the provider started.
        context = lab.ssh(address, "cat /var/lib/oneclick/context.json")
        assert context.returncode == 0, context.stderr
        assert f'"{name}"' in context.stdout and member["spec"]["role"] in context.stdout

    # Deleted: every machine is free again, and what we wrote on it is gone.
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--timeout=120s")
    assert set(holders(lab, controller, kubeconfig).values()) == {None}
    for host in lab.hosts:
        left = lab.ssh(host["address"], "ls -A /var/lib/oneclick; ls /var/log/oneclick-agent.log")
        assert left.returncode != 0 and left.stdout.strip() == "", left.stdout


def test_a_machine_with_another_host_key_is_refused(lab: Lab, kubeconfig: Path,
                                                    namespace: str) -> None:
    name = create(kubeconfig, namespace, {
        "apiVersion": API_VERSION, "kind": "ClusterLaunch", "metadata": {"name": "trusting"},
        "spec": {"provider": "lab-wrong-key",
                 "roles": [{"name": "solo", "image": "base-cluster", "quantity": 1}]}})
    launch = wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready", timeout=120)
    failed = {c["type"]: c for c in launch["status"]["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "LaunchFailed", failed
    assert "host key that is not one of its pinned keys" in failed["message"], failed
    assert "no free host" in failed["message"]


def test_a_pool_too_small_fails_clearly_and_gives_every_machine_back(
        lab: Lab, controller: ControllerProcess, kubeconfig: Path, namespace: str) -> None:
    document = sample("base-cluster.yaml", provider="lab")
    document["spec"]["roles"][1]["quantity"] = 3  # four members, three machines
    name = create(kubeconfig, namespace, document)
    launch = wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready", timeout=120)
    failed = {c["type"]: c for c in launch["status"]["conditions"]}["Failed"]
    assert failed["reason"] == "LaunchFailed", failed
    assert "provider 'lab' has no free host" in failed["message"], failed
    assert "3 of 3 taken" in failed["message"], failed
    # Backed out: every machine is free for the next launch.
    wait_until(lambda: set(holders(lab, controller, kubeconfig).values()) == {None},
               timeout=60, what="every machine back in the pool")
