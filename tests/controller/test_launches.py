"""A ClusterLaunch made by anyone becomes running, contextualized members; its status tells the
truth throughout; failure, expiry, deletion and scaling leave no instance behind."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.conftest import kubectl
from tests.controller.launches import (
    create,
    events,
    get,
    live_instances,
    members,
    sample,
    wait_for_phase,
    wait_until,
)
from tests.controller_process import ControllerProcess


def test_the_base_cluster_becomes_ready(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    name = create(kubeconfig, namespace, sample("base-cluster.yaml"))
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    status = launch["status"]
    assert status["phase"] == "Ready", json.dumps(status, indent=1)
    conditions = {c["type"]: c for c in status["conditions"]}
    for type in ("MembersLaunched", "MembersRunning", "Contextualized", "Ready"):
        assert conditions[type]["status"] == "True", type
        assert conditions[type]["observedGeneration"] == launch["metadata"]["generation"]
    assert conditions["Failed"]["status"] == "False"
    times = [conditions[t]["lastTransitionTime"] for t in
             ("MembersLaunched", "MembersRunning", "Contextualized", "Ready")]
    assert times == sorted(times)
    assert status["readyMembers"] == "3/3"
    assert status["members"] == {"total": 3, "launched": 3, "running": 3, "identified": 3,
                                 "contextualized": 3, "failed": 0}
    assert status["headNode"].startswith(f"{name}-head-node-0")
    assert status["expiresAt"] > launch["metadata"]["creationTimestamp"]

    found = members(kubeconfig, namespace, name)
    assert [m["metadata"]["name"] for m in found] == [
        f"{name}-compute-nodes-0", f"{name}-compute-nodes-1", f"{name}-head-node-0"]
    instances = live_instances(local_state, namespace)
    for member in found:
        member_status = member["status"]
        assert member_status["phase"] == "Ready"
        assert member_status["addresses"] == [instances[member["metadata"]["name"]]["address"]]
        assert member_status["identity"]["hostname"] == member["metadata"]["name"]
        assert len(member_status["identity"]["sshHostKeys"]) >= 2
        assert member["metadata"]["ownerReferences"][0]["uid"] == launch["metadata"]["uid"]
        assert "token" not in json.dumps(member_status).replace("tokenHash", "")

    # One event per milestone (their order is the conditions' order, checked above; events
    # carry times to the second only).
    assert {"AllLaunched", "AllRunning", "AllReported", "Contextualized"} <= set(
        events(kubeconfig, namespace, name))
    printed = kubectl(kubeconfig, "get", "cl", name, "-n", namespace).stdout
    assert "Ready" in printed and "3/3" in printed


def test_a_failing_role_script_backs_the_launch_out(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    document = sample("base-cluster.yaml")
    for role in document["spec"]["roles"]:
        role["image"] = "broken"
    name = create(kubeconfig, namespace, document)
    launch = wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready")
    status = launch["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "ContextualizationFailed"
    assert "roles.d/batch-server" in failed["message"] and "code 3" in failed["message"]
    wait_until(lambda: not any(m["metadata"]["name"].startswith(name)
                               for m in live_instances(local_state, namespace).values()),
               what="every instance terminated")
    found = members(kubeconfig, namespace, name)
    assert all(m["status"]["phase"] == "Terminated" for m in found)
    broken = [m for m in found if m["status"].get("report", {}).get("ok") is False]
    assert broken and "cannot reach the batch server" in broken[0]["status"]["report"]["logTail"]
    assert "ContextualizationFailed" in events(kubeconfig, namespace, name)


def test_a_launch_expires_at_the_end_of_its_lifetime(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    name = create(kubeconfig, namespace, sample("single-node.yaml", lifetime="2m"))
    ready = wait_for_phase(kubeconfig, namespace, name, "Ready")
    assert len(live_instances(local_state, namespace).keys() & {f"{name}-workstation-0"}) == 1
    expired = wait_for_phase(kubeconfig, namespace, name, "Expired", timeout=180)
    assert expired["status"]["expiresAt"] == ready["status"]["expiresAt"]
    assert f"{name}-workstation-0" not in live_instances(local_state, namespace)
    assert "Expired" in events(kubeconfig, namespace, name)


def test_deleting_a_launch_terminates_every_instance_first(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    name = create(kubeconfig, namespace, sample("peers.yaml"))
    wait_for_phase(kubeconfig, namespace, name, "Ready")
    assert len([m for m in live_instances(local_state, namespace) if m.startswith(name)]) == 3
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=true", "--timeout=120s")
    assert get(kubeconfig, namespace, "cl", name) is None
    assert members(kubeconfig, namespace, name) == []
    assert not [m for m in live_instances(local_state, namespace) if m.startswith(name)]


def test_scaling_a_role_up_and_down(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
    tmp_path: Path,
) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = create(kubeconfig, namespace, sample(
        "base-cluster.yaml", sshAuthorizedKeys=[key.with_suffix(".pub").read_text().strip()]))
    wait_for_phase(kubeconfig, namespace, name, "Ready")
    patch = [{"op": "replace", "path": "/spec/roles/1/quantity", "value": 3}]
    kubectl(kubeconfig, "patch", "cl", name, "-n", namespace, "--type=json",
            "-p", json.dumps(patch))
    # The new compute node joins the batch system once the head node learns it: the head
    # node's agent follows the launch and is configured again, with nobody running anything.
    wait_until(lambda: f"{name}-compute-nodes-2" in live_instances(local_state, namespace),
               what="the new member's instance")
    instances = live_instances(local_state, namespace)
    head = instances[f"{name}-head-node-0"]

    def on_the_head_node() -> str:
        return subprocess.run(
            ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             f"root@{head['address']}", "cat /etc/hosts /etc/slurm/slurm.conf"],
            capture_output=True, text=True, timeout=60, check=False).stdout

    address = instances[f"{name}-compute-nodes-2"]["address"]
    wait_until(lambda: f"NodeName={name}-compute-nodes-2 NodeAddr={address} " in (
        on_the_head_node()), what="the head node's slurm.conf to name the new node")
    assert f"{address} {name}-compute-nodes-2" in on_the_head_node()
    wait_until(lambda: (get(kubeconfig, namespace, "cl", name) or {}).get("status", {}).get(
        "readyMembers") == "4/4", what="four ready members")
    new_member = get(kubeconfig, namespace, "lm", f"{name}-compute-nodes-2")
    assert new_member is not None and new_member["status"]["phase"] == "Ready"

    patch[0]["value"] = 1
    kubectl(kubeconfig, "patch", "cl", name, "-n", namespace, "--type=json",
            "-p", json.dumps(patch))
    wait_until(lambda: len(members(kubeconfig, namespace, name)) == 2, what="scale-down")
    live = {m for m in live_instances(local_state, namespace) if m.startswith(name)}
    assert live == {f"{name}-head-node-0", f"{name}-compute-nodes-0"}
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready")
    assert launch["status"]["readyMembers"] == "2/2"


def scraped(controller: ControllerProcess) -> str:
    with urllib.request.urlopen(controller.metrics_url, timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


def test_a_ready_launch_is_left_alone_until_something_of_it_changes(
    controller: ControllerProcess, kubeconfig: Path, namespace: str,
) -> None:
    """No pass every second for a launch that nothing can change before it expires; a change
    to it is seen at once."""
    ready_passes = 'occ_reconcile_passes_total{phase="Ready"}'
    name = create(kubeconfig, namespace, sample("single-node.yaml"))
    wait_for_phase(kubeconfig, namespace, name, "Ready")
    time.sleep(2)  # (the pass that follows its own Ready write)
    before = value(scraped(controller), ready_passes)
    time.sleep(6)
    idle = value(scraped(controller), ready_passes) - before
    assert idle <= 2, f"{idle:.0f} passes of Ready launches in 6 idle seconds"

    kubectl(kubeconfig, "annotate", "cl", name, "-n", namespace, "example.org/note=changed")
    wait_until(lambda: value(scraped(controller), ready_passes) > before + idle, timeout=5,
               what="a pass once the launch changed")


def test_metrics_follow_a_launch(
    controller: ControllerProcess, kubeconfig: Path, namespace: str,
) -> None:
    def scrape() -> str:
        return scraped(controller)

    # Earlier tests' namespaces are deleted in the background: launches leaving them would
    # move the gauges under this test's feet.
    wait_until(lambda: "Terminating" not in kubectl(
        kubeconfig, "get", "namespaces", "--no-headers").stdout, what="namespace deletions")
    before = scrape()
    name = create(kubeconfig, namespace, sample("single-node.yaml"))
    wait_for_phase(kubeconfig, namespace, name, "Ready")
    time.sleep(1.5)  # the gauges refresh every second
    after = scrape()
    assert value(after, 'occ_clusters{phase="Ready"}') >= value(
        before, 'occ_clusters{phase="Ready"}') + 1
    assert value(after, 'occ_broker_requests_total{code="200",endpoint="/v1/report"}') > value(
        before, 'occ_broker_requests_total{code="200",endpoint="/v1/report"}')
    assert value(after, 'occ_provider_calls_total{operation="launch",outcome="ok",'
                        'provider="local"}') >= 1
    assert value(after, "occ_contextualization_duration_seconds_count") > value(
        before, "occ_contextualization_duration_seconds_count")
