"""Kill the controller (SIGKILL) and start it again: at several points of one launch, then
repeatedly at random moments (a fixed seed) with several launches in flight and once while an
agent is waiting in the broker's long poll. Every launch converges, no instance is launched
twice, and none is left behind after deletion."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
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

SEED = 16  # the kills' moments: the same in every run


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


# -- several launches, repeated kills ----------------------------------------------------------

def _named(document: dict[str, Any], name: str) -> dict[str, Any]:
    return {**document, "metadata": {"name": name}}


def _agent_log(local_state: Path, member: dict[str, Any]) -> str:
    path = (local_state / "instances" / str(member["metadata"]["uid"]) / "root" / "var" / "log"
            / "oneclick-agent.log")
    return path.read_text(errors="replace") if path.exists() else ""


def _condition(kubeconfig: Path, namespace: str, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in _status(kubeconfig, namespace, name).get("conditions", [])
                 if c["type"] == kind), {})


def _waiting_member(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any] | None:
    """A member that has given its identity and waits for data that is not there (its agent
    long-polls for its context meanwhile)."""
    if _condition(kubeconfig, namespace, name, "DataDelivered").get("status") != "False":
        return None
    return next((m for m in members(kubeconfig, namespace, name)
                 if (m.get("status") or {}).get("identity")), None)


def _in_long_poll(controller: ControllerProcess, local_state: Path,
                  member: dict[str, Any]) -> bool:
    """The member's agent is held in the broker's long poll: past its retries (its log says
    the broker answered again, or it never failed), and connected to the broker for a second
    on end (any other request takes milliseconds)."""
    log = _agent_log(local_state, member)
    if log.rfind("broker unreachable") > log.rfind("answered after"):
        return False  # waiting out a retry's delay
    address = member["status"]["addresses"][0]
    if address not in controller.peers():
        return False
    time.sleep(1)
    return address in controller.peers()


def _stragglers(kubeconfig: Path, namespace: str, name: str, local_state: Path) -> str:
    """What the agents of a launch's members that have not reported say (for a failure)."""
    return "\n".join(
        f"-- {m['metadata']['name']}: {_agent_log(local_state, m)[-1500:]}"
        for m in members(kubeconfig, namespace, name)
        if not (m.get("status") or {}).get("report"))


@pytest.fixture
def revived(controller: ControllerProcess) -> Iterator[ControllerProcess]:
    """The session's controller, running again after the test whatever happened in it."""
    yield controller
    if controller.process is None or controller.process.poll() is not None:
        controller.start()


@pytest.mark.timeout(360)
def test_launches_in_flight_converge_through_repeated_kills(
    revived: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    controller = revived
    moments = random.Random(SEED)  # noqa: S311  (moments to kill at, not secrets)
    # Two launches of three peers, a single node, and three peers that need a Secret that is
    # not there yet: their agents wait in the broker's long poll until it is. (Peers run only
    # the image's quick scripts: what is under test is the controller, not the batch system.)
    waiting = sample("peers.yaml", data=[{"name": "gridmap", "valueFrom": {
        "secretKeyRef": {"name": "gridmap", "key": "gridmap"}}}])
    waiting["spec"]["roles"][0]["requires"]["data"] = ["gridmap"]
    names = [create(kubeconfig, namespace, _named(document, name)) for name, document in (
        ("first", sample("peers.yaml")), ("second", sample("peers.yaml")),
        ("alone", sample("single-node.yaml")), ("waiting", waiting))]
    started = time.monotonic()

    # Killed at once, then four more times at random moments, each time started again and
    # ready before the next wait begins.
    phases_at_kills: list[list[str | None]] = []
    for kill in range(5):
        if kill:
            time.sleep(moments.uniform(0.5, 4.0))
        phases_at_kills.append([_status(kubeconfig, namespace, n).get("phase") for n in names])
        controller.kill()
        controller.start()

    # Once more while a waiting member's agent is in its long poll: its connection is dropped
    # under it, and it says so while the broker is away.
    wait_until(lambda: _waiting_member(kubeconfig, namespace, "waiting"), timeout=180,
               what="a member waiting for its data")
    member = _waiting_member(kubeconfig, namespace, "waiting")
    assert member is not None
    wait_until(lambda: _in_long_poll(controller, local_state, member), timeout=90,
               what="its agent in a long poll")
    before = len(_agent_log(local_state, member))
    controller.kill()
    deadline = time.monotonic() + 30
    while "broker unreachable (connection dropped), attempt 1," not in _agent_log(
            local_state, member)[before:]:
        assert time.monotonic() < deadline, ("the agent never said it lost its long poll; its "
                                             "log:\n" + _agent_log(local_state, member)[-3000:])
        time.sleep(0.2)
    controller.start()
    kubectl(kubeconfig, "create", "secret", "generic", "gridmap", "-n", namespace,
            "--from-literal=gridmap=jobrun")
    kubectl(kubeconfig, "label", "secret", "gridmap", "-n", namespace,
            "clusters.oneclick.dev/deliverable=true")

    # Every launch Ready; one instance per member, each running, none launched twice.
    expected: set[str] = set()
    for name in names:
        try:
            launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed", timeout=180)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{_stragglers(kubeconfig, namespace, name, local_state)}"
                                 f"\nphases at the kills: {phases_at_kills}") from None
        assert launch["status"]["phase"] == "Ready", (name, launch["status"], phases_at_kills)
        expected |= {m["metadata"]["name"] for m in members(kubeconfig, namespace, name)}
    assert len(expected) == 3 + 3 + 1 + 3
    assert set(live_instances(local_state, namespace)) == expected
    assert len(instance_directories(local_state, namespace)) == len(expected)
    assert time.monotonic() - started < 300

    # Deleted, nothing is left.
    kubectl(kubeconfig, "delete", "cl", *names, "-n", namespace, "--timeout=120s")
    wait_until(lambda: not live_instances(local_state, namespace), what="termination")
    assert instance_directories(local_state, namespace) == []
