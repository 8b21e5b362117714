"""Kill the controller (SIGKILL) at several points of a launch and start it again: the launch
converges, and no instance is launched twice or left behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


def _status(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any]:
    return (get(kubeconfig, namespace, "cl", name) or {}).get("status") or {}


def _some_launched(kubeconfig: Path, namespace: str, name: str) -> bool:
    return any(m.get("status", {}).get("instanceId") for m in members(kubeconfig, namespace, name))


MOMENTS: dict[str, Callable[[Path, str, str], bool]] = {
    "as soon as the launch exists": lambda k, n, c: True,
    "while members are launching": _some_launched,
    "while members contextualize": lambda k, n, c: any(
        m.get("status", {}).get("identity") for m in members(k, n, c)),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_killed_controller_resumes_without_duplicates_or_leaks(
    moment: str, controller: ControllerProcess, kubeconfig: Path, namespace: str,
    local_state: Path,
) -> None:
    name = create(kubeconfig, namespace, sample("base-cluster.yaml"))
    wait_until(lambda: MOMENTS[moment](kubeconfig, namespace, name), timeout=120,
               what=moment)
    controller.kill()
    controller.start()

    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    names = {m["metadata"]["name"] for m in members(kubeconfig, namespace, name)}
    assert len(names) == 3
    # One instance directory per member (by idempotency key), each one running.
    mine = {member: record for member, record in live_instances(local_state, namespace).items()
            if member in names}
    assert set(mine) == names
    assert len(instance_directories(local_state, namespace)) == 3

    # And when it is deleted, nothing is left behind.
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--timeout=120s")
    wait_until(lambda: not set(live_instances(local_state, namespace)) & names, what="termination")
    assert instance_directories(local_state, namespace) == []
