"""The agent as one file (`oneclick-agent.pyz`): run by a stock Python with nothing of ours
installed, it contextualizes a member against the real broker, and it carries the agent's
three libraries, none of the operator's."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from oneclick.api.protocol import Bootstrap
from oneclick.controller.broker import agent_file
from oneclick.controlplane import agent_bundle
from tests.broker.staging import (
    StagedMember,
    contextualize_alone,
    stage_launch,
)
from tests.conftest import kubectl
from tests.controller.launches import create, sample, wait_until
from tests.controller_process import ControllerProcess

STOCK_PYTHON = "/usr/bin/python3"  # Debian's: no pydantic, no httpx, nothing of ours
OPERATOR_ONLY = ("kopf", "kubernetes", "boto3", "botocore", "asyncssh", "aiohttp", "click",
                 "rich", "prometheus_client")


@pytest.fixture(scope="module")
def bundle() -> Path:
    return agent_bundle.build(log=False)


def stock(*args: str, cache: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STOCK_PYTHON, "-I", *args], capture_output=True, text=True,
                          check=False, input=stdin,
                          env={"OCC_AGENT_CACHE": str(cache), "PATH": "/usr/bin"})


def test_the_bundle_carries_the_agent_and_its_libraries_only(bundle: Path,
                                                              tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        top = {name.split("/")[1] for name in archive.namelist() if name.startswith("lib/")}
    assert {"oneclick", "pydantic", "pydantic_core", "httpx", "cryptography"} <= top
    assert not top & set(OPERATOR_ONLY), top & set(OPERATOR_ONLY)
    assert stock("-c", "import pydantic", cache=tmp_path).returncode != 0  # (truly stock)
    # Run by the stock interpreter: it unpacks itself once, and the operator's libraries are
    # not there to import.
    helped = stock(str(bundle), "--help", cache=tmp_path)
    assert helped.returncode == 0 and "occ-agent" in helped.stdout, helped.stderr
    [unpacked] = tmp_path.glob("agent-*/lib")
    probe = stock("-c", f"import sys; sys.path.insert(0, {str(unpacked)!r}); "
                        "import oneclick.agent.main; import kopf", cache=tmp_path)
    assert "No module named 'kopf'" in probe.stderr, probe.stderr
    assert not (unpacked / "oneclick" / "controller").exists()


PLANTED = "def main():\n    print('planted code ran')\n"


def plant(base: Path, digest: str, owner: int) -> None:
    """An unpacked agent's place, `.complete` and all, with someone else's code in it."""
    target = base / f"agent-{digest}"
    for package in ("lib/oneclick", "lib/oneclick/agent"):
        (target / package).mkdir(parents=True)
        (target / package / "__init__.py").write_text("")
    (target / "lib/oneclick/agent/main.py").write_text(PLANTED)
    (target / ".complete").touch()
    for path in [target, *target.rglob("*")]:
        os.lchown(path, owner, owner)


def unpacked_digest(bundle: Path) -> str:
    with zipfile.ZipFile(bundle) as archive:
        main = archive.read("__main__.py").decode()
    found = re.search(r"^BUNDLE, DIGEST, PYTHON = '[^']+', '([0-9a-f]+)'", main, re.M)
    assert found, main
    return found.group(1)


def test_root_runs_no_libraries_another_user_could_have_put_in_its_cache(
    bundle: Path, tmp_path: Path,
) -> None:
    """A cache others can write to (even holding root's files: anyone could have swapped
    them), and a shared /tmp where a local user unpacked first: root trusts neither, and
    unpacks where only it writes, or refuses saying where to. (This machine's /var/cache is
    read-only here: a mount namespace of the test's.)"""
    digest = unpacked_digest(bundle)
    shared = tmp_path / "tmp"  # (TMPDIR: what tempfile.gettempdir() gives)
    shared.mkdir()
    shared.chmod(0o1777)
    plant(shared, digest, owner=65534)
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    plant(loose, digest, owner=0)

    def run(home: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs -o ro none /var/cache && exec "$@"', "sh",
             STOCK_PYTHON, "-I", str(bundle), "--help"],
            capture_output=True, text=True, check=False, timeout=120,
            env={"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": str(shared),
                 "OCC_AGENT_CACHE": str(loose)})

    nowhere = run("/var/cache/home")  # (read-only: no ~/.cache to make)
    assert "planted code ran" not in nowhere.stdout, nowhere.stdout
    assert nowhere.returncode != 0
    assert (f"no directory to unpack its libraries into that only this user can write (tried "
            f"{loose}, /var/cache/oneclick, /var/cache/home/.cache/oneclick, {shared}): name "
            "one in OCC_AGENT_CACHE") in nowhere.stderr, nowhere.stderr
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    helped = run(str(home))
    assert helped.returncode == 0 and "occ-agent" in helped.stdout, helped.stderr
    assert "planted code ran" not in helped.stdout
    assert (home / f".cache/oneclick/agent-{digest}/.complete").is_file()
    assert (home / ".cache/oneclick").stat().st_mode & 0o777 == 0o700


def test_the_bundle_contextualizes_a_member_with_a_stock_python(
    bundle: Path, controller: ControllerProcess, kubeconfig: Path, namespace: str,
    token_key: bytes, tmp_path: Path,
) -> None:
    contextualize_alone([STOCK_PYTHON, "-I", str(bundle)], controller, kubeconfig, namespace,
                        "bare", token_key, tmp_path / "root", "127.30.0.1")


def test_a_member_fetches_the_agent_from_the_broker_and_checks_its_digest(
    bundle: Path, controller: ControllerProcess, kubeconfig: Path, namespace: str,
    token_key: bytes, tmp_path: Path,
) -> None:
    """An image with nothing of ours: its bootstrap's token and CA fetch the agent over the
    broker's TLS, Content-Digest says what to check, and its own python3 runs it. Nobody
    else fetches it."""
    [member] = stage_launch(kubeconfig, namespace, "fetch", {
        "roles": [{"name": "solo", "image": "base-cluster"}]}, token_key).values()
    mine = {"Authorization": f"Bearer {member.token}",
            "OneClick-Member": f"{namespace}/fetch/{member.name}"}
    served = Path(controller.extra_env["OCC_AGENT_BUNDLE"])
    with httpx.Client(base_url=controller.broker_url, verify=controller.tls(),
                      timeout=60) as broker:
        served.unlink(missing_ok=True)
        absent = broker.get("/v1/agent", headers=mine)
        assert absent.status_code == 404 and str(served) in absent.json()["message"]

        shutil.copyfile(bundle, served)
        assert broker.get("/v1/agent").status_code == 401  # no token: nothing
        stranger = {**mine, "Authorization": "Bearer " + "A" * 43}
        assert broker.get("/v1/agent", headers=stranger).status_code == 401
        fetched = broker.get("/v1/agent", headers=mine)
    assert fetched.status_code == 200, fetched.text
    digest = hashlib.sha256(fetched.content).digest()
    assert fetched.headers["Content-Digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert fetched.content == bundle.read_bytes()

    # The way docs/agent-on-images.md says an image does it, with Debian's python3 alone.
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(json.dumps(member.bootstrap(
        namespace, "fetch", controller.broker_url, controller.ca_pem()).wire()))
    agent = tmp_path / "occ-agent"
    fetching = stock("-", str(bootstrap), str(agent), cache=tmp_path / "cache",
                     stdin=documented_fetch())
    assert fetching.returncode == 0, fetching.stderr
    assert agent.read_bytes() == bundle.read_bytes()
    helped = stock(str(agent), "--help", cache=tmp_path / "cache")
    assert helped.returncode == 0 and "occ-agent" in helped.stdout, helped.stderr


def test_members_that_ask_for_the_agent_and_never_read_it_cannot_exhaust_the_controller(
    bundle: Path, controller: ControllerProcess, kubeconfig: Path, namespace: str,
    token_key: bytes,
) -> None:
    """40 members ask for the 8 MiB file at once and never read it. Each download holds one
    of 32 slots and a few chunks, not the whole file encrypted into its connection: the
    controller's memory barely moves, the members beyond the slots are told to retry, one
    member gets one download at a time, and once the stalled readers are cut off an honest
    member is served the whole file."""
    shutil.copyfile(bundle, controller.extra_env["OCC_AGENT_BUNDLE"])
    members = list(stage_launch(kubeconfig, namespace, "hoard", {"roles": [
        {"name": "w", "image": "base-cluster", "quantity": 42}]}, token_key).values())
    assert controller.process is not None
    pid = controller.process.pid

    def ask(member: StagedMember) -> ssl.SSLSocket:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (reads nothing more)
        raw.connect(("127.0.0.1", controller.broker_port))
        tls = controller.tls().wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall((f"GET /v1/agent HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {member.token}\r\n"
                     f"OneClick-Member: {namespace}/hoard/{member.name}\r\n\r\n").encode())
        return tls

    before = rss_mib(pid)
    hoarders = [ask(member) for member in members[:40]]
    answers = [tls.recv(12).decode() for tls in hoarders]  # the status line's start, no more
    time.sleep(2)
    grown = rss_mib(pid) - before
    again = ask(members[0])  # (holds a slot already)
    try:
        assert grown < 64, f"the controller grew by {grown:.0f} MiB for 40 stalled downloads"
        assert answers.count("HTTP/1.1 200") == agent_file.DOWNLOADS, answers
        assert answers.count("HTTP/1.1 429") == 40 - agent_file.DOWNLOADS, answers
        assert again.recv(12).decode() == "HTTP/1.1 429"

        honest = {"Authorization": f"Bearer {members[41].token}",
                  "OneClick-Member": f"{namespace}/hoard/{members[41].name}"}
        with httpx.Client(base_url=controller.broker_url, verify=controller.tls(),
                          timeout=10) as broker:
            assert broker.get("/v1/agent", headers=honest).status_code == 429  # (all taken)
            time.sleep(agent_file.STALL + 5)  # the stalled readers are cut off by then
            fetched = broker.get("/v1/agent", headers=honest)
        assert fetched.status_code == 200 and fetched.content == bundle.read_bytes()
    finally:
        for tls in [*hoarders, again]:
            tls.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def documented_fetch() -> str:
    """The Python that docs/agent-on-images.md gives for fetching the agent at boot."""
    text = (Path(__file__).parents[2] / "docs" / "agent-on-images.md").read_text()
    start = text.index("python3 - /run/oneclick/bootstrap.json")
    body = text[text.index("\n", start) + 1:]
    return body[:body.index("\nEOF\n") + 1]


def test_the_bootstraps_of_a_broker_that_serves_the_agent_carry_its_digest(
    bundle: Path, controller: ControllerProcess, kubeconfig: Path, namespace: str,
    local_state: Path,
) -> None:
    """The member's user data says which agent to accept: a broker serving another (or a
    copy changed on the way) is refused by the check of docs/agent-on-images.md."""
    shutil.copyfile(bundle, controller.extra_env["OCC_AGENT_BUNDLE"])
    name = create(kubeconfig, namespace, sample("single-node.yaml"))
    try:
        wait_until(lambda: bootstrap_of(local_state, namespace) is not None, timeout=120,
                   what="the member's bootstrap on its instance")
        bootstrap = bootstrap_of(local_state, namespace)
        assert bootstrap is not None
        assert bootstrap.agent_sha256 == hashlib.sha256(bundle.read_bytes()).hexdigest()
    finally:
        kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")


def bootstrap_of(local_state: Path, namespace: str) -> Bootstrap | None:
    for record in local_state.glob("instances/*/instance.json"):
        if json.loads(record.read_text()).get("namespace") == namespace:
            written = record.parent / "root/var/lib/oneclick/bootstrap.json"
            if written.exists() and written.stat().st_size:
                return Bootstrap.model_validate_json(written.read_text())
    return None


def test_a_build_leaves_the_bundles_other_checkouts_use_and_prunes_forgotten_ones(
        bundle: Path) -> None:
    """Two checkouts (or CI and a developer) build bundles of different sources on one
    machine: a build deletes neither's, only one nobody has used for a week."""
    in_use = bundle.with_name("oneclick-agent-0.0.0-0123456789ab.pyz")
    forgotten = bundle.with_name("oneclick-agent-0.0.0-ba9876543210.pyz")
    for other in (in_use, forgotten):
        other.write_bytes(b"another checkout's bundle")
    long_ago = time.time() - agent_bundle.UNUSED_FOR - 3600
    os.utime(forgotten, (long_ago, long_ago))
    os.utime(bundle, (long_ago, long_ago))  # (this one's last use was long ago too)
    try:
        assert agent_bundle.build(log=False) == bundle
        assert in_use.exists()
        assert not forgotten.exists()
        assert bundle.stat().st_mtime > long_ago + 3600  # (the build used it: kept)
    finally:
        in_use.unlink(missing_ok=True)
        forgotten.unlink(missing_ok=True)
