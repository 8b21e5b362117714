"""A launch's objects deleted the ways people delete them: its whole namespace, its members by
hand, its launch behind the controller's back. The control plane runs kube-controller-manager
as a real cluster does (namespace deletion, garbage collection of owner references), and every
instance still ends through our finalizers: nothing is left running, nothing stays Terminating.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from oneclick.api import API_VERSION, FINALIZER
from tests.conftest import kubectl
from tests.controller.launches import (
    create,
    get,
    instance_directories,
    live_instances,
    members,
    sample,
    wait_for_phase,
    wait_until,
)
from tests.controller_process import ControllerProcess

CLUSTER_LABEL = "clusters.oneclick.dev/cluster"


def _uids(kubeconfig: Path, namespace: str, name: str) -> dict[str, str]:
    return {m["metadata"]["name"]: m["metadata"]["uid"]
            for m in members(kubeconfig, namespace, name)}


def test_deleting_a_namespace_terminates_every_instance_and_the_namespace_goes(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    ready = create(kubeconfig, namespace, sample("base-cluster.yaml"))
    wait_for_phase(kubeconfig, namespace, ready, "Ready")
    assert len(live_instances(local_state, namespace)) == 3
    # A second launch, just made: the namespace controller meets it wherever it has got to.
    create(kubeconfig, namespace, sample("peers.yaml"))

    kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
    wait_until(lambda: get(kubeconfig, namespace, "namespace", namespace) is None,
               timeout=180, what=f"namespace {namespace} to be gone")
    assert live_instances(local_state, namespace) == {}
    assert instance_directories(local_state, namespace) == []


def test_members_deleted_by_hand_are_made_again(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    name = create(kubeconfig, namespace, sample("base-cluster.yaml"))
    wait_for_phase(kubeconfig, namespace, name, "Ready")
    before = _uids(kubeconfig, namespace, name)
    assert len(before) == 3

    kubectl(kubeconfig, "delete", "lm", "-n", namespace, "-l", f"{CLUSTER_LABEL}={name}",
            "--wait=false")

    def made_again_and_ready() -> bool:
        now = members(kubeconfig, namespace, name)
        return (len(now) == 3
                and not {m["metadata"]["uid"] for m in now} & set(before.values())
                and all((m.get("status") or {}).get("phase") == "Ready" for m in now))

    wait_until(made_again_and_ready, timeout=240, what="three new members, each Ready")
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready")
    assert launch["status"]["readyMembers"] == "3/3"
    # Exactly one live instance per member (live_instances refuses two), each the one its
    # member names; the deleted members' instances are gone, directories too.
    instances = live_instances(local_state, namespace)
    assert set(instances) == set(before)
    for member in members(kubeconfig, namespace, name):
        assert member["status"]["instanceId"] == instances[member["metadata"]["name"]]["id"]
    assert len(instance_directories(local_state, namespace)) == 3


def _orphan(name: str, namespace: str) -> dict[str, Any]:
    """A member as the controller makes them, but whose launch never existed."""
    return {
        "apiVersion": API_VERSION, "kind": "LaunchMember",
        "metadata": {
            "name": f"{name}-solo-0", "namespace": namespace, "finalizers": [FINALIZER],
            "labels": {CLUSTER_LABEL: name},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "ClusterLaunch",
                                 "name": name, "uid": str(uuid.uuid4()), "controller": True,
                                 "blockOwnerDeletion": True}]},
        "spec": {"cluster": name, "role": "solo", "index": 0, "image": "base-cluster",
                 "provider": "local"},
    }


def test_a_member_whose_launch_does_not_exist_is_collected(
    controller: ControllerProcess, kubeconfig: Path, namespace: str,
) -> None:
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(_orphan("vanished", namespace)))
    # The garbage collector deletes it; our finalizer (no instance to end) is then released.
    # (A CRD's objects are watched from the collector's next discovery, within 30 s.)
    wait_until(lambda: get(kubeconfig, namespace, "lm", "vanished-solo-0") is None,
               timeout=120, what="the orphan to be collected")


def test_members_of_a_launch_removed_behind_the_controllers_back_are_collected(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    """The controller is down; someone deletes a launch and, tired of waiting, strips its
    finalizer. Its members are orphans: the garbage collector deletes them, and each one's
    instance is terminated by its finalizer once the controller is back."""
    name = create(kubeconfig, namespace, sample("peers.yaml"))
    wait_for_phase(kubeconfig, namespace, name, "Ready")
    assert len(live_instances(local_state, namespace)) == 3
    controller.stop()
    try:
        kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")
        kubectl(kubeconfig, "patch", "cl", name, "-n", namespace, "--type=json",
                "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')
        wait_until(lambda: get(kubeconfig, namespace, "cl", name) is None, what="launch gone")
        wait_until(lambda: all("deletionTimestamp" in m["metadata"]
                               for m in members(kubeconfig, namespace, name)),
                   timeout=120, what="the collector to delete the orphaned members")
        # Held by their finalizer: nothing has ended their instances yet.
        assert len(members(kubeconfig, namespace, name)) == 3
        assert len(live_instances(local_state, namespace)) == 3
    finally:
        controller.start()
    wait_until(lambda: not members(kubeconfig, namespace, name), timeout=120,
               what="the orphaned members to go")
    assert live_instances(local_state, namespace) == {}
    assert instance_directories(local_state, namespace) == []
