"""What a new user trips over in the first ten minutes, tried again as they tried it: the real
occ against the real API server and controller.

One launch of three members (`grid`, run on a terminal) serves the stories that need members;
launches that never make an instance (a provider nobody configured, an image nobody has) serve
the rest, in a second namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import kubectl
from tests.controller.launches import get, members
from tests.controller_process import ControllerProcess
from tests.e2e import terminal
from tests.e2e.conftest import User, make_user

GRID = {
    "apiVersion": "clusters.oneclick.dev/v1alpha1", "kind": "ClusterLaunch",
    "metadata": {"name": "grid"},
    "spec": {"roles": [
        {"name": "head-node", "image": "base-cluster",
         "requires": {"roles": ["compute-nodes"]}},
        {"name": "compute-nodes", "image": "base-cluster", "quantity": 2,
         "requires": {"roles": ["head-node"]}},
    ]},
}


def document(tmp: Path, name: str, labels: dict[str, str] | None = None,
             **spec: object) -> Path:
    """A one-member launch document, changed by `spec`."""
    body = {"apiVersion": "clusters.oneclick.dev/v1alpha1", "kind": "ClusterLaunch",
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": {"roles": [{"name": "solo", "image": "base-cluster"}], **spec}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@dataclass
class Grid:
    namespace: str
    run: terminal.Session  # `occ run` on a terminal
    logs: subprocess.CompletedProcess[str]  # `occ logs grid -w`, started next to it


@dataclass
class Elsewhere:
    namespace: str
    team: str  # the label `lost` carries, team=TEAM (unique to this run)
    run: subprocess.CompletedProcess[str]  # `occ run` of `lost`, naming provider nowhere
    took: float


@contextlib.contextmanager
def _namespace(kubeconfig: Path, name: str) -> Iterator[str]:
    name = f"{name}-{os.urandom(3).hex()}"
    kubectl(kubeconfig, "create", "namespace", name)
    yield name
    kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="module")
def newcomer(controller: ControllerProcess, kubeconfig: Path,
             tmp_path_factory: pytest.TempPathFactory) -> User:
    return make_user(tmp_path_factory.mktemp("newcomer"), kubeconfig)


@pytest.fixture(scope="module")
def grid(newcomer: User, kubeconfig: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    """`occ run --hours 1` of the grid on a terminal; once it says the launch is made,
    `occ logs grid -w` starts in another window (a pipe)."""
    with _namespace(kubeconfig, "first-minutes") as namespace:
        cluster = tmp_path_factory.mktemp("grid") / "grid.yaml"
        cluster.write_text(yaml.safe_dump(GRID))
        following: list[subprocess.Popen[str]] = []

        def start_logs(output: str) -> None:
            if "Launching grid... done." in output and not following:
                following.append(subprocess.Popen(
                    [newcomer.occ_binary, "-n", namespace, "logs", "grid", "-w"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    env=newcomer.env))

        run = terminal.run(
            [newcomer.occ_binary, "-n", namespace, "run", "--hours", "1", "--cluster",
             str(cluster), "--known-hosts", str(newcomer.known_hosts), "--history-dir",
             str(newcomer.history)], newcomer.env, watch=start_logs)
        assert run.returncode == 0, run.raw
        assert following, run.raw
        out, err = following[0].communicate(timeout=60)
        logs = subprocess.CompletedProcess(following[0].args, following[0].returncode, out, err)
        yield Grid(namespace, run, logs)
        newcomer.occ("-n", namespace, "terminate", "grid")


@pytest.fixture(scope="module")
def elsewhere(newcomer: User, kubeconfig: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elsewhere]:
    """Another namespace, where `lost` (label team=blue-...) names a provider nobody
    configured."""
    with _namespace(kubeconfig, "elsewhere") as namespace:
        team = f"blue-{os.urandom(3).hex()}"
        lost = document(tmp_path_factory.mktemp("lost"), "lost", {"team": team},
                        provider="nowhere")
        started = time.monotonic()
        run = newcomer.occ("-n", namespace, "run", "--cluster", str(lost), "--no-known-hosts",
                           "--history-dir", str(newcomer.history), timeout=120)
        yield Elsewhere(namespace, team, run, time.monotonic() - started)


# -- occ run ---------------------------------------------------------------------------------


def test_occ_run_on_a_terminal_shows_one_live_line_per_role(grid: Grid) -> None:
    # The roles' lines were drawn again and again in place: erased, the cursor moved up...
    assert "\x1b[2K" in grid.run.raw and "\x1b[1A" in grid.run.raw
    drawn = re.findall(r"compute-nodes +launched \d/2 +running \d/2 +contextualized (\d)/2",
                       grid.run.raw)
    assert len(drawn) > 1 and drawn[0] == "0" and drawn[-1] == "2", drawn
    # ... and the screen shows each role once, where it ended, not a scroll of counts.
    screen = grid.run.screen()
    roles = [line for line in screen if re.match(r"\s+(head-node|compute-nodes)\s+launched",
                                                 line)]
    assert roles == [
        "  head-node      launched 1/1  running 1/1  contextualized 1/1",
        "  compute-nodes  launched 2/2  running 2/2  contextualized 2/2"], screen
    assert not any("members running:" in line for line in screen)
    # The rest reads as it always did, with times in the user's terms.
    assert any(re.fullmatch(r"  - grid: contextualized, Ready in \d+\.\d s", line)
               for line in screen), screen
    assert any(re.fullmatch(r"expires in 5\dm \(at \S+Z\): occ terminate grid ends it sooner",
                            line) for line in screen), screen


def test_occ_logs_w_prints_each_report_as_it_arrives_and_ends_when_all_are_in(
    grid: Grid,
) -> None:
    assert grid.logs.returncode == 0, grid.logs.stderr
    headers = re.findall(r"^==> (\S+) <==\nok$", grid.logs.stdout, re.M)
    assert sorted(headers) == ["grid-compute-nodes-0", "grid-compute-nodes-1",
                               "grid-head-node-0"]


def test_progress_never_says_something_false_for_a_member_that_never_ran(
    newcomer: User, elsewhere: Elsewhere, kubeconfig: Path, tmp_path: Path,
) -> None:
    # The only member's image does not exist: its provider never makes it.
    imageless = document(tmp_path, "imageless", roles=[{"name": "solo",
                                                         "image": "no-such-image"}])
    run = newcomer.occ("-n", elsewhere.namespace, "run", "--cluster", str(imageless),
                       "--no-known-hosts", "--history-dir", str(newcomer.history))
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "all members are Running" not in output
    assert "FAILED: imageless-solo-0: unknown image 'no-such-image'" in output
    # Off a terminal: plain lines, as CI logs want them, and none about members not counted.
    assert "\x1b" not in output and "\r" not in output
    counted = re.findall(r"^  members running: (\d+)/(\d+) \((\w+)\)$", output, re.M)
    assert counted and all(total != "0" for _, total, _ in counted), output
    launch = get(kubeconfig, elsewhere.namespace, "cl", "imageless") or {}
    running = {c["type"]: c for c in launch["status"]["conditions"]}["MembersRunning"]
    assert running["status"] == "False" and running["message"] == "0 of 1 members running"


def test_a_launch_naming_an_unconfigured_provider_fails_at_once(
    elsewhere: Elsewhere, kubeconfig: Path,
) -> None:
    output = elsewhere.run.stdout + elsewhere.run.stderr
    assert elsewhere.run.returncode == 1, output
    assert elsewhere.took < 30, output
    assert re.search(r"lost: FAILED: no provider named 'nowhere' is configured; this "
                     r"controller's providers: (\S+, )*local\b", output), output
    assert "all members are Running" not in output and "0/0" not in output
    launch = get(kubeconfig, elsewhere.namespace, "cl", "lost") or {}
    failed = {c["type"]: c for c in launch["status"]["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "UnknownProvider"
    assert members(kubeconfig, elsewhere.namespace, "lost") == []  # nothing was made
    events = kubectl(kubeconfig, "get", "events", "-n", elsewhere.namespace, "-o", "json",
                     "--field-selector", "involvedObject.name=lost").stdout
    assert "UnknownProvider" in events


# -- when it expires -------------------------------------------------------------------------


def test_expiry_reads_in_the_users_terms_in_kubectl_and_occ(
    grid: Grid, newcomer: User, kubeconfig: Path,
) -> None:
    launch = get(kubeconfig, grid.namespace, "cl", "grid") or {}
    expires_at = launch["status"]["expiresAt"]
    # kubectl: the lifetime beside the age, never <invalid>; the time itself in -o wide.
    shown = kubectl(kubeconfig, "get", "cl", "-n", grid.namespace).stdout.splitlines()
    assert "<invalid>" not in "\n".join(shown)
    assert shown[0].split() == ["NAME", "PHASE", "READY", "HEAD-NODE", "LIFETIME", "AGE"]
    assert shown[1].split()[4] == "1h"
    wide = kubectl(kubeconfig, "get", "cl", "-n", grid.namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[-1] == "EXPIRES-AT"
    assert wide.splitlines()[1].split()[-1] == expires_at
    # occ: the countdown.
    listed = newcomer.occ("-n", grid.namespace, "get").stdout.splitlines()
    assert listed[0].split() == ["NAME", "PHASE", "READY", "HEAD-NODE", "AGE", "EXPIRES"]
    assert re.fullmatch(r"grid +Ready +3/3 +grid-head-node-0\S* +\d+s +in 5\dm", listed[1])
    described = newcomer.occ("-n", grid.namespace, "describe", "cluster", "grid").stdout
    assert re.search(rf"^Expires: +{expires_at} \(in 5\dm\)$", described, re.M), described
    assert re.search(r"^Lifetime: +1h$", described, re.M)


# -- occ ssh ---------------------------------------------------------------------------------


def test_occ_ssh_runs_the_command_after_dashes_on_the_head_node_or_the_member_named(
    grid: Grid, newcomer: User,
) -> None:
    def ssh(*args: str) -> subprocess.CompletedProcess[str]:
        return newcomer.occ("-n", grid.namespace, "ssh", *args)

    trust = ("--known-hosts", str(newcomer.known_hosts), "-i", str(newcomer.key))
    on_head = ssh("grid", *trust, "--", "hostname")
    assert on_head.returncode == 0, on_head.stderr
    assert on_head.stdout.strip() == "grid-head-node-0"
    for member in ("compute-nodes-1", "grid-compute-nodes-1"):
        on_member = ssh("grid", member, *trust, "--", "hostname")
        assert on_member.returncode == 0, on_member.stderr
        assert on_member.stdout.strip() == "grid-compute-nodes-1"
    # What follows -- is the command, options and all.
    listed = ssh("grid", "compute-nodes-0", *trust, "--", "ls", "-d", "/etc")
    assert listed.stdout.strip() == "/etc", listed.stderr
    unknown = ssh("grid", "login-node", "--", "hostname")
    assert unknown.returncode != 0
    assert ("grid has no member 'login-node' (its members: head-node-0, compute-nodes-0, "
            "compute-nodes-1)") in unknown.stderr


# -- occ describe ----------------------------------------------------------------------------


def test_describe_lists_events_oldest_first_with_their_age(
    grid: Grid, newcomer: User, kubeconfig: Path,
) -> None:
    described = newcomer.occ("-n", grid.namespace, "describe", "cluster", "grid").stdout
    section = described.split("\nEvents:\n", 1)[1].splitlines()
    assert section[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    rows = [line.split(None, 4) for line in section[2:]]
    assert all(re.fullmatch(r"\d+(s|m)", row[2]) for row in rows), section
    said = json.loads(kubectl(kubeconfig, "get", "events", "-n", grid.namespace, "-o", "json",
                              "--field-selector", "involvedObject.name=grid").stdout)["items"]
    in_time = [e["reason"] for e in sorted(said, key=lambda e: e["eventTime"])]
    assert [row[1] for row in rows] == in_time
    assert in_time.index("AllLaunched") < in_time.index("AllRunning") < in_time.index(
        "AllReported")
    # Members in the launch's order: the head node first.
    listed = described.split("\nMembers:\n", 1)[1].split("\nEvents:", 1)[0].splitlines()
    assert [line.split()[0] for line in listed[1:]] == [
        "grid-head-node-0", "grid-compute-nodes-0", "grid-compute-nodes-1"]


# -- kubectl's options -----------------------------------------------------------------------


def test_get_members_of_a_launch_by_its_name(grid: Grid, newcomer: User) -> None:
    listed = newcomer.occ("-n", grid.namespace, "get", "members", "grid").stdout.splitlines()
    assert [line.split()[0] for line in listed] == [
        "NAME", "grid-compute-nodes-0", "grid-compute-nodes-1", "grid-head-node-0"]
    one = newcomer.occ("get", "members", "grid-head-node-0", "-n", grid.namespace)
    assert [line.split()[0] for line in one.stdout.splitlines()] == ["NAME", "grid-head-node-0"]


def test_all_namespaces_and_label_selectors(
    grid: Grid, elsewhere: Elsewhere, newcomer: User,
) -> None:
    everywhere = newcomer.occ("get", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    rows = {tuple(line.split()[:3]) for line in everywhere[1:]}
    assert (grid.namespace, "grid", "Ready") in rows
    assert (elsewhere.namespace, "lost", "Failed") in rows
    blue = newcomer.occ("get", "-A", "-l", f"team={elsewhere.team}").stdout.splitlines()
    assert [line.split()[:3] for line in blue[1:]] == [[elsewhere.namespace, "lost", "Failed"]]
    none = newcomer.occ("get", "-n", grid.namespace, "-l", f"team={elsewhere.team}")
    assert none.returncode == 0 and none.stdout == ""
    assert f"No resources found in {grid.namespace} namespace." in none.stderr
    described = newcomer.occ("describe", "cluster", "-A", "-l", f"team={elsewhere.team}").stdout
    assert re.findall(r"^Name: +(\S+)$", described, re.M) == ["lost"]
    assert f"Namespace:   {elsewhere.namespace}" in described
    computes = newcomer.occ("logs", "-n", grid.namespace, "-l",
                            "clusters.oneclick.dev/role=compute-nodes").stdout
    assert re.findall(r"^==> (\S+) <==$", computes, re.M) == [
        "grid-compute-nodes-0", "grid-compute-nodes-1"]
    across = newcomer.occ("logs", "-A", "-l", "clusters.oneclick.dev/cluster=grid").stdout
    assert f"==> {grid.namespace}/grid-head-node-0 <==" in across
    refused = newcomer.occ("get", "cluster", "grid", "-A")
    assert refused.returncode == 2 and "cannot be looked up across all namespaces" in \
        refused.stderr


class Lines:
    """The lines a running process prints, read as they come (select on its pipe, no
    buffering in between)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd, self.pending = process.stdout.fileno(), b""

    def until(self, text: str, seconds: float) -> list[str]:
        """Lines up to the first that contains `text`; fails after `seconds`."""
        found: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                found.append(line.decode())
                if text in found[-1]:
                    return found
            ready, _, _ = select.select([self.fd], [], [], 1.0)
            if ready:
                data = os.read(self.fd, 65536)
                if not data:
                    break
                self.pending += data
        raise AssertionError(f"never printed {text!r}; printed: {found}")


def test_get_w_and_describe_w_print_each_change_as_it_happens(
    elsewhere: Elsewhere, newcomer: User, kubeconfig: Path, tmp_path: Path,
) -> None:
    def watch(*command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([newcomer.occ_binary, "-n", elsewhere.namespace, *command],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=newcomer.env)

    listing, describing = watch("get", "-w"), watch("describe", "cluster", "-w")
    try:
        rows, events = Lines(listing), Lines(describing)
        first = rows.until("lost", 30)
        assert first[0].split() == ["NAME", "PHASE", "READY", "HEAD-NODE", "AGE", "EXPIRES"]
        assert ["lost", "Failed"] in [line.split()[:2] for line in first[1:]]
        events.until("Events:", 30)  # (described as it is: the watch starts after)
        # Another launch comes, and fails at once (its provider too is unknown): each change
        # is a line under the same header, and its event a line of its own.
        kubectl(kubeconfig, "create", "-n", elsewhere.namespace, "-f",
                str(document(tmp_path, "watched", provider="nowhere-either")))
        later = rows.until("Failed", 60)
        said = ""
        while "UnknownProvider" not in said:  # (its DataAvailable may come first)
            said = events.until("/watched", 60)[-1]
    finally:
        for process in (listing, describing):
            process.kill()
            process.wait()
    assert all(line.split()[0] == "watched" for line in later), later
    assert later[-1].split()[:3] == ["watched", "Failed", "0/1"]
    assert not any(line.startswith("NAME") for line in later)
    assert said.split()[:3] == [f"{elsewhere.namespace}/watched", "Warning", "UnknownProvider"]
    assert "no provider named 'nowhere-either' is configured" in said
