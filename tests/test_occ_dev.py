"""`occ dev up / env / down`, as a person uses them from a shell."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oneclick.api.protocol import Bootstrap
from oneclick.cli import devcontroller
from oneclick.controlplane import agent_bundle
from oneclick.kits.processes import running
from tests.controller.launches import (
    create,
    live_instances,
    members,
    sample,
    wait_for_phase,
    wait_until,
)


def occ(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["occ", *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


def test_up_env_reuse_and_down(binaries: dict[str, Path], tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path))
    env.pop("KUBECONFIG", None)

    first = occ("dev", "up", env=env)
    try:
        _walk_through(first, tmp_path, env)
    finally:
        occ("dev", "down", env=env)


def _walk_through(first: subprocess.CompletedProcess[str], tmp_path: Path,
                  env: dict[str, str]) -> None:
    assert first.returncode == 0, first.stderr
    assert "started control plane" in first.stderr
    kubeconfig = Path(first.stdout.strip())
    assert kubeconfig.is_file()
    # The controller serves the agent file, built from this checkout (cached), from its copy.
    served = tmp_path / "oneclick" / "dev" / "oneclick-agent.pyz"
    assert f"it serves the agent file {served} to members" in first.stderr, first.stderr
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    log = (tmp_path / "oneclick" / "dev" / "controller.log").read_text()
    assert f"serving the agent file {served} (sha256 {digest})" in log, log[-3000:]

    exported = occ("dev", "env", env=env)
    assert exported.stdout.strip() == f"export KUBECONFIG={shlex.quote(str(kubeconfig))}"
    shell = subprocess.run(
        ["bash", "-c", 'eval "$(occ dev env)" && kubectl get --raw /readyz'],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert shell.stdout.strip() == "ok", shell.stderr

    again = occ("dev", "up", env=env)
    assert again.returncode == 0 and "reusing control plane" in again.stderr
    assert again.stdout.strip() == str(kubeconfig)
    assert "note:" not in again.stderr, again.stderr
    # Reused, a controller keeps serving what it served: asked otherwise, occ dev up says so.
    otherwise = occ("dev", "up", "--no-agent", env=env)
    assert otherwise.returncode == 0, otherwise.stderr
    assert f"note: it serves the agent file {served} (--no-agent was asked for)" in (
        otherwise.stderr), otherwise.stderr

    state = json.loads((tmp_path / "oneclick" / "dev" / "state.json").read_text())
    pids = [state[key] for key in ("etcd_pid", "apiserver_pid", "controller_manager_pid")]
    assert all(running(pid) for pid in pids)
    assert occ("dev", "down", env=env).returncode == 0
    assert not (tmp_path / "oneclick" / "dev").exists()
    gone = occ("dev", "env", env=env)
    assert gone.returncode == 1 and "no control plane is running" in gone.stderr
    assert not any(running(pid) for pid in pids)


def test_the_agent_file_occ_dev_up_serves(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCC_AGENT_BUNDLE", raising=False)
    # This checkout's bundle, copied into the workdir (a later build removes the cache's).
    served = devcontroller.agent_file(tmp_path)
    assert served == tmp_path / "oneclick-agent.pyz"
    assert served.read_bytes() == agent_bundle.build(log=False).read_bytes()
    # --no-agent: none, and no copy an earlier start left.
    assert devcontroller.agent_file(tmp_path, serve=False) is None
    assert not served.exists()
    # A file the environment names is served as it is.
    monkeypatch.setenv("OCC_AGENT_BUNDLE", str(tmp_path / "mine.pyz"))
    assert devcontroller.agent_file(tmp_path) == tmp_path / "mine.pyz"
    assert not served.exists()


def test_a_reused_controller_that_serves_an_older_agent_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCC_AGENT_BUNDLE", raising=False)
    served = devcontroller.agent_file(tmp_path)
    assert served is not None
    record = {"file": str(served), "sha256": hashlib.sha256(served.read_bytes()).hexdigest(),
              "build": agent_bundle.bundle_path().name}
    (tmp_path / devcontroller.SERVED).write_text(json.dumps(record))
    assert devcontroller.agent_differs(tmp_path) is None
    assert devcontroller.agent_differs(tmp_path, serve=False) == (
        f"it serves the agent file {served} (--no-agent was asked for)")
    # Started before this checkout's sources changed: its copy is of another build.
    (tmp_path / devcontroller.SERVED).write_text(json.dumps(
        {**record, "build": "oneclick-agent-0.1.0-000000000000.pyz"}))
    differs = devcontroller.agent_differs(tmp_path)
    assert differs is not None and "have changed since" in differs, differs
    # Started serving a file OCC_AGENT_BUNDLE named, that the environment names no more.
    (tmp_path / devcontroller.SERVED).write_text(json.dumps(
        {**record, "file": str(tmp_path / "mine.pyz"), "build": ""}))
    assert devcontroller.agent_differs(tmp_path) == (
        f"it serves the agent file {tmp_path / 'mine.pyz'}, not {served}")
    # Started with --no-agent, asked for the agent now.
    (tmp_path / devcontroller.SERVED).write_text(json.dumps({"file": "", "sha256": "",
                                                              "build": ""}))
    assert devcontroller.agent_differs(tmp_path) == (
        "it serves no agent file (it was started with --no-agent)")


@contextlib.contextmanager
def squatting(port: int, patience: float = 15.0) -> Iterator[None]:
    """Another program listening on `port` meanwhile. (The killed broker's connections linger
    a moment: a real squatter, like the controller itself, binds past them, waiting for the
    port a while if it must; what still holds it then is named.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + patience
        while True:
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError as error:
                if time.monotonic() > deadline:
                    sockets = subprocess.run(["ss", "-tanpeo", f"( sport = :{port} )"],
                                             capture_output=True, text=True).stdout
                    raise AssertionError(f"{error}: port {port} is held by\n{sockets}") from error
                time.sleep(0.25)
        squatter.listen()
        yield


def member_bootstrap(local_state: Path, namespace: str) -> Bootstrap:
    """One running member's bootstrap, where the local provider wrote it in its root."""
    for record in sorted(local_state.glob("instances/*/instance.json")):
        if json.loads(record.read_text())["namespace"] == namespace:
            return Bootstrap.model_validate_json(
                (record.parent / "root" / "var" / "lib" / "oneclick" / "bootstrap.json"
                 ).read_text())
    raise AssertionError(f"no member of {namespace} in {local_state}")


def fetch_agent(bootstrap: Bootstrap) -> httpx.Response:
    """GET /v1/agent as the member: its token, and the broker's CA alone trusted."""
    tls = ssl.create_default_context(cadata=bootstrap.ca_cert)
    return httpx.get(f"{bootstrap.broker_url}/v1/agent", verify=tls, timeout=60, headers={
        "Authorization": f"Bearer {bootstrap.token}",
        "OneClick-Member": f"{bootstrap.namespace}/{bootstrap.cluster}/{bootstrap.member}"})


def test_occ_dev_up_after_a_crash_brings_the_broker_back_where_members_look(
        binaries: dict[str, Path], tmp_path: Path) -> None:
    """A launch in flight, the controller killed, `occ dev up` again: the broker listens on the
    port the members' bootstraps name, and the launch finishes. Something else holding that
    port meanwhile is named, never worked around by picking another one."""
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path))
    env.pop("KUBECONFIG", None)
    workdir = tmp_path / "oneclick" / "dev"
    first = occ("dev", "up", env=env)
    try:
        assert first.returncode == 0, first.stderr
        kubeconfig = Path(first.stdout.strip())
        state = json.loads((workdir / "controller.json").read_text())
        port = state["broker_port"]
        name = create(kubeconfig, "default", sample("base-cluster.yaml"))
        wait_until(lambda: any((m.get("status") or {}).get("instanceId")
                               for m in members(kubeconfig, "default", name)),
                   timeout=120, what="a first member launched")
        os.kill(state["pid"], signal.SIGKILL)
        wait_until(lambda: not running(state["pid"]), timeout=10, what="the controller gone")

        with squatting(port):
            refused = occ("dev", "up", env=env)
        assert refused.returncode == 1
        assert f"port {port} (the context broker" in refused.stderr, refused.stderr
        assert str(workdir / "ports.json") in refused.stderr

        again = occ("dev", "up", env=env)
        assert again.returncode == 0, again.stderr
        assert "started occ-controller (pid " in again.stderr
        assert f"broker port {port}," in again.stderr, again.stderr
        launch = wait_for_phase(kubeconfig, "default", name, "Ready", "Failed", timeout=240)
        assert launch["status"]["phase"] == "Ready", launch["status"]
        assert {m["status"]["brokerUrl"].rsplit(":", 1)[1]
                for m in members(kubeconfig, "default", name)} == {str(port)}
        # The restarted controller serves the agent file too: a member fetches it with its own
        # bootstrap (token, CA), as a member whose image has no agent does, and gets the file
        # whose digest its bootstrap carries.
        served = (workdir / "oneclick-agent.pyz").read_bytes()
        bootstrap = member_bootstrap(tmp_path / "oneclick" / "local", "default")
        assert bootstrap.agent_sha256 == hashlib.sha256(served).hexdigest()
        fetched = fetch_agent(bootstrap)
        assert fetched.status_code == 200, fetched.text
        assert fetched.content == served
        assert fetched.headers["Content-Digest"] == (
            f"sha-256=:{base64.b64encode(hashlib.sha256(served).digest()).decode()}:")
    finally:
        occ("dev", "down", env=env)
    assert live_instances(tmp_path / "oneclick" / "local", "default") == {}
