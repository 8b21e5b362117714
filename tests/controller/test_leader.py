"""Two controller replicas, as the chart runs them with `replicas: 2`: one leads (reconciles,
serves the broker), the other stands by and binds nothing. Killing the leader hands over within
the lease's duration and the launch it had begun still becomes Ready; a leader that stops
gracefully hands over at once; a leader that loses its lease, or cannot renew it, exits before
anyone else may lead.

Both replicas are real `occ-controller` processes against the real API server, configured with
the same broker port (as two pods behind one Service: members' bootstraps name one address,
and only the leader listens there). They watch only this test's namespace, and the session's
controller (which reconciles every namespace) is stopped meanwhile, so that a launch here has
exactly the two replicas as candidates; it comes back afterwards whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from oneclick.controller.leader import Elector, LeaseSettings
from oneclick.controller.settings import Settings
from oneclick.controlplane.local import free_port
from oneclick.kits.kube import KubeClient
from tests.conftest import kubectl
from tests.controller.launches import (
    create,
    instance_directories,
    live_instances,
    members,
    sample,
    wait_for_phase,
    wait_until,
)
from tests.controller_process import ControllerProcess

DEFAULTS = Settings()
LEASE = DEFAULTS.lease_name
DURATION = DEFAULTS.lease_duration
RENEW_DEADLINE = DEFAULTS.lease_renew_deadline
RETRY = DEFAULTS.lease_retry_period


@pytest.fixture
def home(kubeconfig: Path) -> Iterator[str]:
    """The replicas' own namespace: their Secrets and their Lease."""
    name = "occ-replicas-" + os.urandom(3).hex()
    kubectl(kubeconfig, "create", "namespace", name)
    yield name
    kubectl(kubeconfig, "delete", "namespace", name, "--wait=false")


@pytest.fixture
def alone(controller: ControllerProcess) -> Iterator[None]:
    """The session's controller steps aside for the test, and comes back after it."""
    controller.stop()
    try:
        yield
    finally:
        controller.start()


@contextlib.contextmanager
def replicas(*processes: ControllerProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()


def replica(kubeconfig: Path, home: str, watched: str, log: Path, broker_port: int,
            local_state: Path, images: Path, identity: Path | None = None) -> ControllerProcess:
    return ControllerProcess(
        kubeconfig, home, log, identity=identity, broker_port=broker_port,
        extra_env={"OCC_LEADER_ELECTION": "true", "OCC_WATCH_NAMESPACES": watched,
                   "OCC_BROKER_LISTEN": "0.0.0.0",  # noqa: S104  members reach it on the bridge
                   "OCC_LOCAL_STATE_DIR": str(local_state), "OCC_LOCAL_IMAGES_DIR": str(images)})


def identity_of(process: ControllerProcess) -> str:
    """The name a replica goes by in the Lease (its host's name and its pid)."""
    assert process.process is not None
    return f"{socket.gethostname()}_{process.process.pid}"


def lease(kubeconfig: Path, home: str) -> dict[str, object]:
    found = kubectl(kubeconfig, "get", "lease", LEASE, "-n", home, "-o", "json", check=False)
    return dict(json.loads(found.stdout)["spec"]) if found.returncode == 0 else {}


def holder(kubeconfig: Path, home: str) -> str:
    return str(lease(kubeconfig, home).get("holderIdentity") or "")


def standing_by(process: ControllerProcess, since: int = 0) -> bool:
    with open(process.log, "rb") as log:
        log.seek(since)
        return b"standing by: " in log.read()


def test_one_replica_leads_and_a_killed_leader_hands_over_without_stranding_a_launch(
    alone: None, kubeconfig: Path, namespace: str, home: str, local_state: Path, images: Path,
    tmp_path: Path,
) -> None:
    first = replica(kubeconfig, home, namespace, tmp_path / "first.log", free_port(),
                    local_state, images)
    second = replica(kubeconfig, home, namespace, tmp_path / "second.log", first.broker_port,
                     local_state, images)
    with replicas(first, second):
        first.start()
        second.start(wait=False)
        wait_until(lambda: standing_by(second), timeout=30, what="the second to stand by")

        # Only the first leads: the second holds no listening socket (no broker, no
        # metrics) and has started nothing that reconciles.
        assert holder(kubeconfig, home) == identity_of(first)
        assert first.broker_port in first.listening_ports()
        assert second.listening_ports() == set()
        assert "context broker listening" not in second.log.read_text()

        name = create(kubeconfig, namespace, sample("peers.yaml"))
        wait_until(lambda: any((m.get("status") or {}).get("identity")
                               for m in members(kubeconfig, namespace, name)),
                   timeout=120, what="a member's identity, under the first")
        transitions = int(str(lease(kubeconfig, home)["leaseTransitions"]))

        killed = time.monotonic()
        first.kill()
        second.wait_ready(DURATION + RETRY + 30)
        took = time.monotonic() - killed
        # A standby takes a lease left unrenewed for its duration (by its own clock), then
        # starts: within the duration and a few seconds more.
        assert took < DURATION + RETRY + 15, took
        assert holder(kubeconfig, home) == identity_of(second)
        assert lease(kubeconfig, home)["leaseTransitions"] == transitions + 1

        launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
        assert launch["status"]["phase"] == "Ready", launch["status"]
        names = {m["metadata"]["name"] for m in members(kubeconfig, namespace, name)}
        assert set(live_instances(local_state, namespace)) == names and len(names) == 3
        assert len(instance_directories(local_state, namespace)) == 3  # none launched twice

        # The first comes back as a standby; the second stops gracefully, releasing the
        # lease: the first leads at its next try, not a lease duration later.
        offset = first.log.stat().st_size
        first.start(wait=False)
        wait_until(lambda: standing_by(first, offset), timeout=30, what="the first to stand by")
        stopped = time.monotonic()
        second.stop()
        wait_until(lambda: holder(kubeconfig, home) == identity_of(first), timeout=DURATION,
                   what="the first to take the released lease")
        assert time.monotonic() - stopped < DURATION - RETRY
        first.wait_ready(60)

        # The leader finishes the job: deleting the launch terminates every instance.
        kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--timeout=120s")
        wait_until(lambda: not live_instances(local_state, namespace), what="termination")
        assert instance_directories(local_state, namespace) == []


def test_a_leader_whose_lease_another_took_stops_at_once(
    kubeconfig: Path, namespace: str, home: str, local_state: Path, images: Path,
    tmp_path: Path,
) -> None:
    leader = replica(kubeconfig, home, namespace, tmp_path / "leader.log", free_port(),
                     local_state, images)
    with replicas(leader):
        leader.start()
        assert holder(kubeconfig, home) == identity_of(leader)
        # Someone writes themselves into the Lease (an administrator, a misconfigured twin).
        kubectl(kubeconfig, "patch", "lease", LEASE, "-n", home, "--type=merge", "-p",
                json.dumps({"spec": {"holderIdentity": "an-intruder"}}))
        taken = time.monotonic()
        assert leader.process is not None
        leader.process.wait(RETRY + 10)
        assert time.monotonic() - taken < RETRY + 10
        assert leader.process.returncode != 0
        assert "lost leadership: an-intruder holds the lease now" in leader.log.read_text()
        with pytest.raises(OSError):  # its broker is gone with it
            socket.create_connection(("127.0.0.1", leader.broker_port), timeout=2).close()
        assert holder(kubeconfig, home) == "an-intruder"


def test_a_leader_cut_off_from_the_api_server_exits_before_a_standby_may_lead(
    kubeconfig: Path, namespace: str, home: str, local_state: Path, images: Path,
    tmp_path: Path,
) -> None:
    """A network partition between the leader and the API server: the leader cannot renew,
    and must stop serving before the standby's wait for an unrenewed lease is over."""
    with ApiServerProxy(kubeconfig, tmp_path / "proxied.kubeconfig") as proxy:
        first = replica(kubeconfig, home, namespace, tmp_path / "first.log",
                        free_port(), local_state, images, identity=proxy.kubeconfig)
        second = replica(kubeconfig, home, namespace, tmp_path / "second.log",
                         first.broker_port, local_state, images)
        with replicas(first, second):
            first.start()
            second.start(wait=False)
            wait_until(lambda: standing_by(second), timeout=30, what="the second to stand by")
            assert holder(kubeconfig, home) == identity_of(first)

            proxy.cut()
            cut = time.monotonic()
            exited = led = 0.0
            deadline = cut + DURATION + RETRY + 30
            while not (exited and led) and time.monotonic() < deadline:
                assert first.process is not None
                if not exited and first.process.poll() is not None:
                    exited = time.monotonic()
                if not led and holder(kubeconfig, home) == identity_of(second):
                    led = time.monotonic()
                time.sleep(0.1)
            assert exited, "the cut-off leader went on"
            assert exited - cut < RENEW_DEADLINE + RETRY + 3, exited - cut
            assert led, "the standby never took over"
            assert exited < led, "two leaders at once"
            assert "lost leadership: the lease was not renewed" in first.log.read_text()
            second.wait_ready(60)


class ApiServerProxy:
    """A TCP relay to the API server that can be cut, closing every connection through it:
    the leader behind it is partitioned from the API server, nothing else is."""

    def __init__(self, kubeconfig: Path, path: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        server = config["clusters"][0]["cluster"]["server"]
        host, port = server.removeprefix("https://").rsplit(":", 1)
        self._target = (host.strip("[]"), int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        config["clusters"][0]["cluster"]["server"] = (
            f"https://127.0.0.1:{self._listener.getsockname()[1]}")
        path.write_text(yaml.safe_dump(config))
        self.kubeconfig = path
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> ApiServerProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                return
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._listener.close()  # new connections are refused
        with self._lock:
            for end in self._open:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            self._open.clear()


def test_of_candidates_trying_at_the_same_moment_exactly_one_leads(
    kubeconfig: Path, home: str,
) -> None:
    """The API server decides between simultaneous writes (each carries the version it read):
    round after round, of three candidates racing for a lease not yet made, or one just
    released, one wins and the others see it held."""

    async def race() -> None:
        kubes = [KubeClient(kubeconfig) for _ in range(3)]
        try:
            for round_ in range(10):
                name = f"race-{round_}"
                electors = [Elector(kube, LeaseSettings(home, name, f"candidate-{i}"))
                            for i, kube in enumerate(kubes)]
                attempts = await asyncio.gather(*(e.attempt() for e in electors))
                winners = [e.lease.identity for e, a in zip(electors, attempts, strict=True)
                           if a.leading]
                assert len(winners) == 1, (round_, attempts)
                again = await asyncio.gather(*(e.attempt() for e in electors))
                assert [a.holder for a in again] == winners * 3, (round_, again)
                assert [a.leading for a in again] == [
                    e.lease.identity == winners[0] for e in electors]
                # Released, it is free again: the race is between updates of one object now.
                [winner] = [e for e in electors if e.leading]
                await winner.release()
                attempts = await asyncio.gather(*(e.attempt() for e in electors))
                assert sum(a.leading for a in attempts) == 1, (round_, attempts)
        finally:
            for kube in kubes:
                await kube.aclose()

    asyncio.run(race())
