"""Three agents of a head/compute cluster contextualize through the real broker, over real TLS,
with their statuses in the real API server; a failing role script is reported; a broker killed
mid-way loses nothing."""

from __future__ import annotations

import json
import os
import select
from pathlib import Path
from typing import Any

import yaml

from oneclick.api.protocol import Context
from tests.broker.staging import (
    StagedMember,
    make_image,
    member_status,
    stage_launch,
    stage_member,
    start_agent,
)
from tests.conftest import kubectl
from tests.controller_process import ControllerProcess

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HEAD, COMPUTE_0, COMPUTE_1 = "base-head-node-0", "base-compute-nodes-0", "base-compute-nodes-1"
ADDRESSES = {HEAD: "127.10.0.1", COMPUTE_0: "127.10.0.2", COMPUTE_1: "127.10.0.3"}
IMAGE = {
    "roles.d/batch-server": 0, "roles.d/nfs-server": 0,
    "roles.d/batch-client": 0, "roles.d/nfs-client": 0,
    "thisnode.d/10-self": 0, "data.d/gridmap": 0,
    "restarts.d/batch-server": 0, "restarts.d/batch-client": 0,
    "ready.d/99-ready": 0,
}


def base_cluster_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((SAMPLES / "base-cluster.yaml").read_text())["spec"]
    spec["sshAuthorizedKeys"] = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOneClickUserKeyForTests jane"]
    return spec


def short(member: str) -> str:
    return member.removeprefix("base-")


def run_agents(controller: ControllerProcess, namespace: str, members: dict[str, StagedMember],
               roots: dict[str, Path], names: list[str]) -> dict[str, tuple[int, str]]:
    ca = controller.ca_pem()
    agents = {
        name: start_agent(roots[name], members[name].bootstrap(
            namespace, "base", controller.broker_url, ca), short(name), ADDRESSES[name])
        for name in names
    }
    results = {}
    for name, agent in agents.items():
        output, _ = agent.communicate(timeout=180)
        results[name] = (agent.returncode, output)
    return results


def stage_base(kubeconfig: Path, namespace: str, token_key: bytes, tmp_path: Path,
               image: dict[str, int] | None = None,
               ) -> tuple[dict[str, StagedMember], dict[str, Path]]:
    """The base cluster staged, each member with a root made from `image`."""
    members = stage_launch(kubeconfig, namespace, "base", base_cluster_spec(), token_key)
    roots = {name: tmp_path / short(name) for name in members}
    for root in roots.values():
        make_image(root, image or IMAGE)
    return members, roots


def test_three_agents_contextualize_and_configure_themselves(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    tmp_path: Path,
) -> None:
    members, roots = stage_base(kubeconfig, namespace, token_key, tmp_path)
    for root in roots.values():
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")

    results = run_agents(controller, namespace, members, roots, list(members))
    for name, (code, output) in results.items():
        assert code == 0, f"{name}: {output}"

    # Every member's status has its identity and its ok report.
    for name in members:
        status = member_status(kubeconfig, namespace, name)
        assert status["phase"] == "Ready"
        assert status["identity"]["hostname"] == short(name)
        assert status["identity"]["addresses"] == [ADDRESSES[name]]
        keys = {k.split()[0] for k in status["identity"]["sshHostKeys"]}
        assert {"ssh-ed25519", "ecdsa-sha2-nistp256"} <= keys
        assert status["report"]["ok"] is True
        types = {c["type"]: c["status"] for c in status["conditions"]}
        assert types["IdentityProvided"] == "True" and types["Contextualized"] == "True"
        assert "token" not in json.dumps(status).replace("tokenHash", "")

    head = roots[HEAD]
    statuses = {name: member_status(kubeconfig, namespace, name) for name in members}

    # /etc/hosts: the original line kept, a managed block with every member.
    hosts = (head / "etc" / "hosts").read_text()
    assert hosts.startswith("127.0.0.1 localhost\n")
    for name in members:
        assert f"{ADDRESSES[name]} {short(name)}.oneclick.local {short(name)}" in hosts

    # Host-based SSH: every member's every key in ssh_known_hosts; every member in the
    # equivalence files.
    known = (head / "etc" / "ssh" / "ssh_known_hosts").read_text()
    for name, status in statuses.items():
        for key in status["identity"]["sshHostKeys"]:
            keytype, blob = key.split()[:2]
            assert (f"{short(name)},{short(name)}.oneclick.local,{ADDRESSES[name]} "
                    f"{keytype} {blob}") in known
    for equiv in ("etc/ssh/shosts.equiv", "etc/hosts.equiv", "root/.shosts"):
        text = (head / equiv).read_text()
        assert all(short(n) in text and ADDRESSES[n] in text for n in members), equiv
    assert "HostbasedAuthentication yes" in (
        head / "etc/ssh/sshd_config.d/50-oneclick.conf").read_text()
    assert "jane" in (head / "root/.ssh/authorized_keys").read_text()

    # The context files: JSON, env, one file per required role.
    context = Context.model_validate_json((head / "var/lib/oneclick/context.json").read_text())
    assert context.member.member == HEAD
    assert sorted(context.required_roles) == ["batch-client", "nfs-client"]
    assert [p.member for p in context.required_roles["batch-client"]] == [COMPUTE_0, COMPUTE_1]
    assert context.data["gridmap"] == '"/O=Grid/OU=OneClick/CN=Jane Doe" jobrun\n'
    assert set(context.data) == {"gridmap", "munge-key"}  # what the head node requires
    assert (head / "var/lib/oneclick/roles/batch-client").read_text().splitlines() == [
        f"{ADDRESSES[COMPUTE_0]} compute-nodes-0 compute-nodes-0.oneclick.local",
        f"{ADDRESSES[COMPUTE_1]} compute-nodes-1 compute-nodes-1.oneclick.local",
    ]
    env = (head / "var/lib/oneclick/context.env").read_text()
    assert "OCC_HOSTNAME=head-node-0" in env and "OCC_ROLE_BATCH_CLIENT_HOSTS=" in env

    # The role scripts, in the Nimbus order, with the Nimbus arguments.
    fqdn = "head-node-0.oneclick.local"
    c0, c1 = ADDRESSES[COMPUTE_0], ADDRESSES[COMPUTE_1]
    assert (head / "var/log/role-calls").read_text().splitlines() == [
        f"roles.d/batch-client {c0} compute-nodes-0 compute-nodes-0.oneclick.local",
        f"roles.d/batch-client {c1} compute-nodes-1 compute-nodes-1.oneclick.local",
        f"roles.d/nfs-client {c0} compute-nodes-0 compute-nodes-0.oneclick.local",
        f"roles.d/nfs-client {c1} compute-nodes-1 compute-nodes-1.oneclick.local",
        f"thisnode.d/10-self {ADDRESSES[HEAD]} head-node-0 {fqdn}",
        f"data.d/gridmap {head}/var/lib/oneclick/data/gridmap",
        "restarts.d/batch-client ",
        "ready.d/99-ready ",
    ]
    compute_calls = (roots[COMPUTE_0] / "var/log/role-calls").read_text().splitlines()
    # In the order the compute nodes require them: /home before the batch server.
    assert compute_calls[:2] == [f"roles.d/nfs-server {ADDRESSES[HEAD]} head-node-0 {fqdn}",
                                 f"roles.d/batch-server {ADDRESSES[HEAD]} head-node-0 {fqdn}"]
    assert not (roots[COMPUTE_0] / "var/lib/oneclick/data/gridmap").exists()


def test_a_failing_role_script_is_reported_with_its_step_code_and_log(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    tmp_path: Path,
) -> None:
    members = stage_launch(kubeconfig, namespace, "base", base_cluster_spec(), token_key)
    roots = {name: tmp_path / short(name) for name in members}
    for name, root in roots.items():
        make_image(root, {**IMAGE, "roles.d/batch-server": 7} if "compute" in name else IMAGE)

    results = run_agents(controller, namespace, members, roots, list(members))
    assert results[HEAD][0] == 0
    assert results[COMPUTE_0][0] == 1

    status = member_status(kubeconfig, namespace, COMPUTE_0)
    report = status["report"]
    assert status["phase"] == "Failed"
    assert report["ok"] is False and report["exitCode"] == 7
    assert report["failedStep"].startswith("etc/oneclick/roles.d/batch-server 127.10.0.1")
    assert "roles.d/batch-server is failing" in report["logTail"]
    assert [s["exitCode"] for s in report["steps"]][-1] == 7
    contextualized = next(c for c in status["conditions"] if c["type"] == "Contextualized")
    assert contextualized["status"] == "False" and contextualized["reason"] == "StepFailed"


def test_a_broker_killed_midway_loses_nothing(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    tmp_path: Path,
) -> None:
    members, roots = stage_base(kubeconfig, namespace, token_key, tmp_path)
    ca = controller.ca_pem()
    first = {
        name: start_agent(roots[name], members[name].bootstrap(
            namespace, "base", controller.broker_url, ca), short(name), ADDRESSES[name])
        for name in (HEAD, COMPUTE_0)
    }
    # Both have provided identity and are waiting for the third member's.
    _wait_for(lambda: all(member_status(kubeconfig, namespace, n).get("identity")
                          for n in first))
    controller.kill()
    controller.start()  # same port, same CA (kept in its Secret), state from the API server
    results = run_agents(controller, namespace, members, roots, [COMPUTE_1])
    assert results[COMPUTE_1][0] == 0, results[COMPUTE_1][1]
    for name, agent in first.items():
        output, _ = agent.communicate(timeout=180)
        assert agent.returncode == 0, f"{name}: {output}"
    for name in members:
        status = member_status(kubeconfig, namespace, name)
        assert status["report"]["ok"] is True, name
        assert status["phase"] == "Ready"


def test_a_following_agent_configures_its_member_again_as_the_launch_scales(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    tmp_path: Path,
) -> None:
    members, roots = stage_base(kubeconfig, namespace, token_key, tmp_path)
    ca = controller.ca_pem()
    told, tell = os.pipe()  # (where the head node's agent says it is configured)
    head = start_agent(roots[HEAD], members[HEAD].bootstrap(
        namespace, "base", controller.broker_url, ca), short(HEAD), ADDRESSES[HEAD], "--follow",
        "--ready-fd", str(tell), pass_fds=[tell])
    os.close(tell)
    assert select.select([told], [], [], 1)[0] == []  # not before the others are known
    results = run_agents(controller, namespace, members, roots, [COMPUTE_0, COMPUTE_1])
    assert all(code == 0 for code, _ in results.values()), results
    assert select.select([told], [], [], 60)[0] == [told]
    assert os.read(told, 64) == b"READY=1\n" and os.read(told, 64) == b""  # said, then closed
    os.close(told)
    assert head.poll() is None  # and following
    compute_nodes = roots[HEAD] / "var/lib/oneclick/roles/batch-client"
    calls = roots[HEAD] / "var/log/role-calls"

    def listed() -> list[str]:
        return [line.split()[1] for line in compute_nodes.read_text().splitlines()] if (
            compute_nodes.exists()) else []

    _wait_for(lambda: listed() == ["compute-nodes-0", "compute-nodes-1"])

    def scale(quantity: int) -> None:
        kubectl(kubeconfig, "patch", "cl", "base", "-n", namespace, "--type=json", "-p",
                json.dumps([{"op": "replace", "path": "/spec/roles/1/quantity",
                             "value": quantity}]))

    # Scale up: a third compute node boots and provides its identity; the head node, whose
    # agent follows the launch, is configured again for it (its role scripts run again).
    scale(3)
    added = stage_member(kubeconfig, namespace, "base",
                         {"name": "compute-nodes", "image": "base-cluster"}, 2, token_key)
    make_image(tmp_path / "compute-nodes-2", IMAGE)
    agent = start_agent(tmp_path / "compute-nodes-2", added.bootstrap(
        namespace, "base", controller.broker_url, ca), "compute-nodes-2", "127.10.0.4")
    output, _ = agent.communicate(timeout=180)
    assert agent.returncode == 0, output
    _wait_for(lambda: listed() == ["compute-nodes-0", "compute-nodes-1", "compute-nodes-2"])
    _wait_for(lambda: calls.read_text().count("restarts.d/batch-client") == 2)
    assert "127.10.0.4 compute-nodes-2.oneclick.local" in (
        roots[HEAD] / "etc/hosts").read_text()

    # Scale down to one: the head node forgets the others.
    scale(1)
    _wait_for(lambda: listed() == ["compute-nodes-0"])
    _wait_for(lambda: calls.read_text().count("restarts.d/batch-client") == 3)
    assert head.poll() is None  # still following

    # The launch ends: the broker refuses the token, and the agent stops following.
    kubectl(kubeconfig, "delete", "cl", "base", "-n", namespace, "--wait=false")
    output, _ = head.communicate(timeout=60)
    assert head.returncode == 0, output
    assert output.count("the context changed") == 2, output
    assert "stopped following" in output
    # Its report is its first contextualization's.
    assert member_status(kubeconfig, namespace, HEAD)["report"]["ok"] is True


def _wait_for(check: Any, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_an_image_with_the_nimbus_layout_works_as_it_is(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    tmp_path: Path,
) -> None:
    spec = {"roles": [{"name": "peers", "image": "nimbus", "quantity": 2,
                       "requires": {"roles": ["peers"], "data": ["motd"]}}],
            "data": [{"name": "motd", "value": "hello\n"}]}
    members = stage_launch(kubeconfig, namespace, "ring", spec, token_key)
    addresses = {"ring-peers-0": "127.11.0.1", "ring-peers-1": "127.11.0.2"}
    roots = {name: tmp_path / name for name in members}
    nimbus = ("1-ipandhost/peers", "2-thishost/ip", "3-data/motd", "4-restarts/peers",
              "5-thishost-finalize/done")
    for root in roots.values():
        make_image(root, {f"../../opt/nimbus/ctx-scripts/{s}": 0 for s in nimbus})
    ca = controller.ca_pem()
    agents = [start_agent(roots[n], members[n].bootstrap(namespace, "ring", controller.broker_url,
                                                         ca), n, addresses[n])
              for n in members]
    for agent in agents:
        output, _ = agent.communicate(timeout=120)
        assert agent.returncode == 0, output
    root = roots["ring-peers-0"]
    scripts = "../../opt/nimbus/ctx-scripts"
    assert (root / "var/log/role-calls").read_text().splitlines() == [
        f"{scripts}/1-ipandhost/peers 127.11.0.1 ring-peers-0 ring-peers-0.oneclick.local",
        f"{scripts}/1-ipandhost/peers 127.11.0.2 ring-peers-1 ring-peers-1.oneclick.local",
        f"{scripts}/2-thishost/ip 127.11.0.1 ring-peers-0 ring-peers-0.oneclick.local",
        f"{scripts}/3-data/motd {root}/var/lib/oneclick/data/motd",
        f"{scripts}/4-restarts/peers ",
        f"{scripts}/5-thishost-finalize/done ",
    ]
    assert (root / "var/lib/oneclick/data/motd").read_text() == "hello\n"
