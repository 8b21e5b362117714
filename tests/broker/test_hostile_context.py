"""The agent does not take its context on trust: a broker that was compromised, or that stored
identities before it checked them, could hand it a peer that shadows another member or is not
what a member may be. Real agents get such a context from the real broker (the hostile peer's
identity put straight into its status through the API server, past the broker's checks); they
write nothing (no /etc/hosts block, no SSH trust, no context files, no role script runs) and
report the failure, naming the member and the field. The context carries the launch's domain,
so each agent holds every peer's FQDN to it as the broker does."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oneclick.controller.providers.local import DOMAIN
from tests.broker.staging import (
    make_image,
    member_status,
    stage_launch,
    stage_member,
    start_agent,
)
from tests.broker.test_contextualization import (
    COMPUTE_0,
    COMPUTE_1,
    HEAD,
    IMAGE,
    base_cluster_spec,
    short,
)
from tests.conftest import kubectl
from tests.controller_process import ControllerProcess

ADDRESSES = {HEAD: "127.11.0.1", COMPUTE_0: "127.11.0.2"}
ETC_HOSTS = "127.0.0.1 localhost\n"
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINbLeQVlsV1r+yTe9TMhp6KuWvSujLxnovGTxfNPQej+"
RSA_BLOB = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(
).public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]

# What a compromised broker hands out, each as the API server's schema still lets it be stored.
HOSTILE = {
    # The third member takes the head node's name: its /etc/hosts line would shadow the head
    # node's for every member, and its key would be trusted for the head node's name.
    "shadows-the-head-node": (
        {"hostname": "head-node-0", "fqdn": f"head-node-0.{DOMAIN}",
         "addresses": ["127.11.0.3"], "sshHostKeys": [ED25519]},
        "check-context", f"member {COMPUTE_1}: hostname: head-node-0 is already a name of "
                         f"member {HEAD}"),
    # Stored before the broker checked identities: not an address, and an RSA key's data
    # under the ed25519 type.
    "not-an-address-and-a-disguised-key": (
        {"hostname": "compute-nodes-1", "fqdn": f"compute-nodes-1.{DOMAIN}",
         "addresses": ["0.0.0.0"], "sshHostKeys": [f"ssh-ed25519 {RSA_BLOB.decode()}"]},  # noqa: S104
        "context", f"members[2] ({COMPUTE_1}).identity.addresses[0]: must be a host's address"),
    # It names itself pypi.org: every member's pip would fetch from it.
    "names-itself-pypi-org": (
        {"hostname": "compute-nodes-1", "fqdn": "pypi.org", "addresses": ["127.11.0.3"],
         "sshHostKeys": [ED25519]},
        "check-context", f"member {COMPUTE_1}: fqdn: must be compute-nodes-1.{DOMAIN} or the "
                         "host name compute-nodes-1"),
    # It calls itself localhost: every member's name for itself would lead to it.
    "calls-itself-localhost": (
        {"hostname": "localhost", "fqdn": f"localhost.{DOMAIN}", "addresses": ["127.11.0.3"],
         "sshHostKeys": [ED25519]},
        "context", f"members[2] ({COMPUTE_1}).identity.hostname: must not be localhost*"),
}


def _wait_for(check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_agents_refuse_a_context_with_a_hostile_peer_and_write_nothing(
    case: str, controller: ControllerProcess, kubeconfig: Path, namespace: str,
    token_key: bytes, tmp_path: Path,
) -> None:
    identity, step, words = HOSTILE[case]
    members = stage_launch(kubeconfig, namespace, "base", base_cluster_spec(), token_key)
    roots = {name: tmp_path / short(name) for name in (HEAD, COMPUTE_0)}
    for root in roots.values():
        make_image(root, IMAGE)
        (root / "etc" / "hosts").write_text(ETC_HOSTS)

    # Two honest members start, provide their identities and wait for the third's.
    ca = controller.ca_pem()
    agents = {name: start_agent(root, members[name].bootstrap(
        namespace, "base", controller.broker_url, ca), short(name), ADDRESSES[name])
        for name, root in roots.items()}
    _wait_for(lambda: all(member_status(kubeconfig, namespace, n).get("identity")
                          for n in agents))

    # The third member's identity arrives past the broker's checks.
    kubectl(kubeconfig, "patch", "lm", COMPUTE_1, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"identity": identity}}))

    for name, agent in agents.items():
        output, _ = agent.communicate(timeout=180)
        assert agent.returncode == 1, f"{name}: {output}"
        status = member_status(kubeconfig, namespace, name)
        assert "report" in status, f"{name}: {output}"
        report = status["report"]
        assert report["ok"] is False and report["failedStep"] == step, report
        assert words in report["message"], report["message"]

        # Nothing was written from that context.
        root = roots[name]
        assert (root / "etc" / "hosts").read_text() == ETC_HOSTS
        for path in ("etc/ssh/ssh_known_hosts", "etc/ssh/shosts.equiv", "etc/hosts.equiv",
                     "root/.shosts", "root/.ssh/authorized_keys",
                     "var/lib/oneclick/context.json", "var/lib/oneclick/context.env",
                     "var/lib/oneclick/roles", "var/lib/oneclick/data", "var/log/role-calls"):
            assert not (root / path).exists(), f"{name}: {path} was written"


def test_a_following_agent_refuses_a_hostile_member_added_by_a_scale_up(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    tmp_path: Path,
) -> None:
    """The head node follows its launch. A compute node added later states (past the broker's
    checks) the head node's own name: the head node's next pass refuses that context, writes
    nothing of it, keeps following, and its report stays its first one."""
    members = stage_launch(kubeconfig, namespace, "base", base_cluster_spec(), token_key)
    ca = controller.ca_pem()
    addresses = {**ADDRESSES, COMPUTE_1: "127.11.0.3"}
    roots = {name: tmp_path / short(name) for name in members}
    for root in roots.values():
        make_image(root, IMAGE)
        (root / "etc" / "hosts").write_text(ETC_HOSTS)
    agents = {name: start_agent(root, members[name].bootstrap(
        namespace, "base", controller.broker_url, ca), short(name), addresses[name],
        *(["--follow"] if name == HEAD else []))
        for name, root in roots.items()}
    for name in (COMPUTE_0, COMPUTE_1):
        output, _ = agents[name].communicate(timeout=180)
        assert agents[name].returncode == 0, f"{name}: {output}"
    head_root = roots[HEAD]
    _wait_for(lambda: (head_root / "var/lib/oneclick/context.version").exists())
    hosts_before = (head_root / "etc" / "hosts").read_text()
    known_before = (head_root / "etc/ssh/ssh_known_hosts").read_text()

    # Scale up: the new member's identity arrives straight in its status, naming itself as
    # the head node.
    kubectl(kubeconfig, "patch", "cl", "base", "-n", namespace, "--type=json", "-p",
            json.dumps([{"op": "replace", "path": "/spec/roles/1/quantity", "value": 3}]))
    added = stage_member(kubeconfig, namespace, "base",
                         {"name": "compute-nodes", "image": "base-cluster"}, 2, token_key)
    kubectl(kubeconfig, "patch", "lm", added.name, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"identity": {
                "hostname": "head-node-0", "fqdn": f"head-node-0.{DOMAIN}",
                "addresses": ["127.11.0.4"], "sshHostKeys": [ED25519]}}}))

    log = head_root / "var/log/oneclick-agent.log"
    _wait_for(lambda: "configuring again failed" in log.read_text())
    assert f"member {added.name}: hostname: head-node-0 is already a name of member {HEAD}" in (
        log.read_text())
    assert (head_root / "etc" / "hosts").read_text() == hosts_before
    assert (head_root / "etc/ssh/ssh_known_hosts").read_text() == known_before
    assert "127.11.0.4" not in (head_root / "var/lib/oneclick/context.json").read_text()
    assert agents[HEAD].poll() is None  # still following
    assert member_status(kubeconfig, namespace, HEAD)["report"]["ok"] is True
    kubectl(kubeconfig, "delete", "cl", "base", "-n", namespace, "--wait=false")
    output, _ = agents[HEAD].communicate(timeout=60)
    assert agents[HEAD].returncode == 0, output
