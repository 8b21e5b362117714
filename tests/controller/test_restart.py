"""A restart never strands a launch: the development controller keeps its ports, members follow
a broker that moved for good, agents say what they are doing while the broker is away, a
launch whose members can never reach the broker fails saying so, and the controller's log stays
quiet when nothing happens (and is JSON when asked)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from oneclick.cli import devcontroller
from oneclick.controller.settings import Settings
from oneclick.controlplane.local import free_port
from tests.controller.launches import create, get, members, sample, wait_for_phase, wait_until
from tests.controller_process import ControllerProcess

UNREACHABLE = re.compile(r"^(\S+) INFO broker unreachable \(connection refused\), "
                         r"attempt (\d+), next in [0-9.]+ s$", re.MULTILINE)


def _instance_dir(local_state: Path, member: dict[str, Any]) -> Path:
    return local_state / "instances" / str(member["metadata"]["uid"])


def _agent_log(local_state: Path, member: dict[str, Any]) -> str:
    path = _instance_dir(local_state, member) / "root" / "var" / "log" / "oneclick-agent.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _console(local_state: Path, member: dict[str, Any]) -> str:
    path = _instance_dir(local_state, member) / "console.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _condition(obj: dict[str, Any] | None, type: str) -> dict[str, Any]:
    for condition in ((obj or {}).get("status") or {}).get("conditions", []):
        if condition["type"] == type:
            return dict(condition)
    return {}


def _first_launched(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any] | None:
    return next((m for m in members(kubeconfig, namespace, name)
                 if (m.get("status") or {}).get("instanceId")), None)


def _log_size(controller: ControllerProcess) -> int:
    return controller.log.stat().st_size


def _log_since(controller: ControllerProcess, offset: int) -> list[str]:
    with open(controller.log, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace").splitlines()


@contextmanager
def _revived_at_the_end(controller: ControllerProcess) -> Iterator[None]:
    """Whatever happens, the session's controller runs afterwards (it terminates launches)."""
    try:
        yield
    finally:
        if controller.process is None or controller.process.poll() is not None:
            controller.start()


@contextmanager
def _restarted(controller: ControllerProcess, args: list[str],
               **env: str) -> Iterator[int]:
    """The controller restarted with these options and settings, then as it was; yields the
    offset of its log where the restarted one begins."""
    saved_env, saved_args = dict(controller.extra_env), list(controller.args)
    controller.stop()
    offset = _log_size(controller)
    controller.extra_env.update(env)
    controller.args = args
    controller.start()
    try:
        yield offset
    finally:
        controller.stop()
        controller.extra_env, controller.args = saved_env, saved_args
        controller.start()


# -- occ dev: ports chosen once per control plane -------------------------------------------

def test_the_dev_controllers_ports_are_chosen_once_and_kept(tmp_path: Path) -> None:
    first = devcontroller.kept_ports(tmp_path)
    assert set(first) == {"broker_port", "metrics_port", "health_port"}
    assert len(set(first.values())) == 3
    # A crash leaves the controller's state file behind (or not); the ports stay either way.
    (tmp_path / devcontroller.STATE).write_text(json.dumps({**first, "pid": 999999}))
    assert devcontroller.kept_ports(tmp_path) == first
    (tmp_path / devcontroller.STATE).unlink()
    assert devcontroller.kept_ports(tmp_path) == first
    devcontroller.check_free(first, tmp_path / devcontroller.PORTS)  # nothing holds them


def test_a_kept_port_another_program_took_is_named_not_replaced(tmp_path: Path) -> None:
    ports = devcontroller.kept_ports(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", ports["broker_port"]))
        squatter.listen()
        with pytest.raises(devcontroller.PortTaken) as refused:
            devcontroller.check_free(ports, tmp_path / devcontroller.PORTS)
    message = str(refused.value)
    assert f"port {ports['broker_port']} (the context broker" in message
    assert str(tmp_path / devcontroller.PORTS) in message
    assert "remove" in message and "stop that program" in message
    assert devcontroller.kept_ports(tmp_path) == ports  # still the same: never another one


def test_the_log_format_comes_from_the_environment_too() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"OCC_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ValueError, match="log_format"):
        Settings.from_env({"OCC_LOG_FORMAT": "xml"})


# -- the broker moves for good ---------------------------------------------------------------

def test_members_follow_a_broker_that_moved_for_good_and_say_so_meanwhile(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    name = create(kubeconfig, namespace, sample("base-cluster.yaml"))
    wait_until(lambda: _first_launched(kubeconfig, namespace, name) is not None, timeout=120,
               what="a first member launched")
    with _revived_at_the_end(controller):
        _moved(controller, kubeconfig, namespace, local_state, name)

    # And once it is Ready and nothing happens, the controller has nothing to say.
    offset = _log_size(controller)
    started = time.monotonic()
    wait_until(lambda: time.monotonic() - started > 6, timeout=10, what="six idle seconds")
    quiet = [line for line in _log_since(controller, offset) if line.strip()]
    assert quiet == [], quiet
    assert "Timer 'reconcile_launch' succeeded" not in controller.log.read_text()


def _moved(controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
           name: str) -> None:
    controller.kill()  # before any member could report: all of them still need the broker
    first = _first_launched(kubeconfig, namespace, name)
    assert first is not None
    old_port = controller.broker_port

    # While the broker is away, the agent says so: the first few attempts one by one, then
    # one line per 30 s, in its log file and on its console as it happens.
    def logged_attempts() -> list[tuple[str, int]]:
        return [(t, int(n)) for t, n in UNREACHABLE.findall(_agent_log(local_state, first))]

    wait_until(lambda: any(n > 5 for _, n in logged_attempts()), timeout=120,
               what="a retry logged after the first five")
    lines = logged_attempts()
    assert [n for _, n in lines[:5]] == [1, 2, 3, 4, 5]
    assert lines[5][1] > 6, "the sixth attempt was logged: no rate limit"
    stamps = [time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S")) for t, _ in lines]
    assert stamps[5] - stamps[4] >= 29, "two lines within 30 s after the first five"
    assert len(lines) <= 5 + (stamps[-1] - stamps[4]) / 29 + 1
    assert "broker unreachable (connection refused), attempt 1," in _console(local_state, first)

    # The broker comes back elsewhere for good: the controller hands the members that have not
    # reported a new bootstrap, and they follow it.
    controller.broker_port = free_port()
    controller.start()
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed", timeout=240)
    assert launch["status"]["phase"] == "Ready", launch["status"]
    found = members(kubeconfig, namespace, name)
    assert {m["status"]["brokerUrl"].rsplit(":", 1)[1] for m in found} == {
        str(controller.broker_port)}
    follow = "the bootstrap now names the broker at https://"
    log = _agent_log(local_state, first)
    assert follow in log and f":{controller.broker_port} (was " in log, log[-2000:]
    assert f":{old_port}" in log


# -- the broker out of the members' reach ----------------------------------------------------

def test_a_launch_whose_members_never_reach_the_broker_fails_saying_so(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    closed = f"https://127.0.0.1:{free_port()}"  # (nothing listens there, for any member)
    with _restarted(controller, ["--log-format", "json"], OCC_BROKER_URL=closed) as offset:
        document = sample("base-cluster.yaml", timeouts={"contextualization": "30s"})
        name = create(kubeconfig, namespace, document)

        def all_running() -> bool:
            return _condition(get(kubeconfig, namespace, "cl", name),
                              "MembersRunning").get("status") == "True"

        wait_until(all_running, timeout=180, what="every member running")
        found = members(kubeconfig, namespace, name)
        names = [m["metadata"]["name"] for m in found]
        assert {m["status"]["brokerUrl"] for m in found} == {closed}
        # The agents say what they are doing, live.
        wait_until(lambda: all(UNREACHABLE.search(_agent_log(local_state, m)) for m in found),
                   timeout=60, what="every agent logging that the broker is unreachable")
        assert "broker unreachable (connection refused), attempt 1," in _console(
            local_state, found[0])

        # The launch's status names the members it has not heard from.
        def contextualized() -> str:
            return str(_condition(get(kubeconfig, namespace, "cl", name),
                                  "Contextualized").get("message", ""))

        wait_until(lambda: all(f"{n} not heard from for " in contextualized() for n in names),
                   timeout=60, what="every member named as not heard from")
        assert re.fullmatch(r"0 of 3 members contextualized; (\S+ not heard from for \d+ s"
                            r"(, )?){3}", contextualized()), contextualized()

        # Then the timeout fails it, saying why.
        launch = wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready", timeout=120)
        failed = _condition(launch, "Failed")
        assert failed["status"] == "True" and failed["reason"] == "BrokerUnreachable", failed
        assert f"the broker at {closed} may be unreachable from them" in failed["message"]
        assert all(n in failed["message"] for n in names), failed["message"]

        # Every line the controller wrote meanwhile is one JSON object, its own and kopf's.
        lines = [line for line in _log_since(controller, offset) if line.strip()]
        records = [json.loads(line) for line in lines]
        assert all(isinstance(r, dict) and "message" in r for r in records)
        assert any(r.get("logger", "").startswith("kopf") for r in records)
        assert any(f"launch {namespace}/{name}: Contextualizing -> Failed" in r["message"]
                   for r in records), [r["message"] for r in records][-20:]
