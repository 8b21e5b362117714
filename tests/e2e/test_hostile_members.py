"""A member of the user's own launch turns hostile: root on its VM, it reads the bootstrap token
from its own disk and speaks to the broker as the member: `github.com` is refused, so it states
what the broker still lets through (a host name of its choosing, `github`, under the launch's
domain) and reports escape sequences. The user runs
occ as ever: their known_hosts keeps every foreign line byte for byte and gains only names the
launch owns; their terminal receives no control character; the member's context, data values
and all, is for root's eyes only on its disk."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from oneclick.agent.bootstrap import read
from oneclick.agent.client import tls_context
from oneclick.api.protocol import Bootstrap
from tests.controller.launches import members, wait_for_phase
from tests.e2e.conftest import User

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _public(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH)


ED25519 = _public(ed25519.Ed25519PrivateKey.generate())
RSA = _public(rsa.generate_private_key(public_exponent=65537, key_size=2048))
# The user's known_hosts before the launch: hosts of their own, in every form OpenSSH reads.
FOREIGN = (b"# my own hosts\n"
           b"github.com " + ED25519 + b"\n"
           b"10.0.0.1 " + RSA + b"\n"
           b"@cert-authority *.example.org " + ED25519 + b"\n"
           b"|1|c2FsdHNhbHRzYWx0|aGFzaGhhc2hoYXNoaGFzaA== " + ED25519 + b"\n"
           b"[10.213.0.2]:2222 " + ED25519 + b"\n"
           b"gitlab.com,github\t" + ED25519 + b" a comment\r\n"
           b"\n")


def waiting_document(tmp_path: Path, name: str) -> Path:
    """The base cluster whose head node waits for data nobody has sent yet."""
    document = yaml.safe_load((SAMPLES / "base-cluster.yaml").read_text())
    document["metadata"] = {"name": name}
    document["spec"]["data"] = [{"name": "gridmap", "valueFrom": {
        "secretKeyRef": {"name": "not-yet", "key": "gridmap"}}}] + [
        item for item in document["spec"]["data"] if item["name"] != "gridmap"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def occ_run(user: User, namespace: str, cluster: Path) -> subprocess.Popen[str]:
    """`occ run`, following the launch, in the background."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "occ"), "-n", namespace, "run", "--cluster",
         str(cluster), "--known-hosts", str(user.known_hosts), "--history-dir",
         str(user.history)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user.env)


def wait_until(check: Callable[[], Any], timeout: float = 180, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


def member(kubeconfig: Path, namespace: str, cluster: str, role_index: str) -> dict[str, Any]:
    """The member ({} until the controller has made it)."""
    return next((m for m in members(kubeconfig, namespace, cluster)
                 if m["metadata"]["name"] == f"{cluster}-{role_index}"), {})


def bootstrap_on_disk(local_state: Path, name: str) -> Bootstrap:
    """What root on the member's VM reads: its bootstrap, token and all."""
    for path in local_state.glob("instances/*/root/var/lib/oneclick/bootstrap.json"):
        found = read(path, path.parents[3])
        if found.member == name:
            return found
    raise AssertionError(f"no bootstrap of {name} under {local_state}")


def as_member(bootstrap: Bootstrap, endpoint: str, body: dict[str, Any]) -> httpx.Response:
    """A request to the broker with the member's own token, over the TLS it trusts."""
    return httpx.post(f"{bootstrap.broker_url}/v1/{endpoint}", json=body, timeout=30,
                      verify=tls_context(bootstrap.ca_cert), headers={
                          "Authorization": f"Bearer {bootstrap.token}",
                          "OneClick-Member": f"{bootstrap.namespace}/{bootstrap.cluster}/"
                                             f"{bootstrap.member}"})


def test_a_member_calling_itself_github_com_adds_only_the_launchs_own_names_to_known_hosts(
    user: User, kubeconfig: Path, namespace: str, tmp_path: Path, local_state: Path,
) -> None:
    user.known_hosts.write_bytes(FOREIGN)
    name = "renamed"
    following = occ_run(user, namespace, waiting_document(tmp_path, name))
    head = wait_until(lambda: (member(kubeconfig, namespace, name, "head-node-0").get("status")
                               or {}).get("identity"), what="the head node's identity")

    # Root on the head node restates its identity: github.com is not its launch's to give;
    # github under the launch's domain is.
    bootstrap = bootstrap_on_disk(local_state, f"{name}-head-node-0")
    assert bootstrap.domain is not None
    refused = as_member(bootstrap, "identity", {**head, "hostname": "github",
                                                "fqdn": "github.com"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["message"].startswith("invalid Identity: fqdn: must be github.")
    claimed = as_member(bootstrap, "identity", {**head, "hostname": "github",
                                                "fqdn": f"github.{bootstrap.domain}"})
    assert claimed.status_code == 200, claimed.text
    sent = user.occ("-n", namespace, "data", "set", name, "gridmap", "--value",
                    '"/O=Grid/CN=Late Data" jobrun\n')
    assert sent.returncode == 0, sent.stderr
    out, err = following.communicate(timeout=300)
    assert following.returncode == 0, out + err
    renamed = member(kubeconfig, namespace, name, "head-node-0")
    assert renamed["status"]["identity"]["fqdn"] == f"github.{bootstrap.domain}"

    # What the launch owns: each member's alias and the address its provider reported.
    found = members(kubeconfig, namespace, name)
    owned = {f"{m['spec']['role']}-{m['spec']['index']}.{name}.{namespace}.oneclick": m
             for m in found}
    owned.update({m["status"]["addresses"][0]: m for m in found})
    trusted = [line for line in err.splitlines() if line.startswith("SSH trusts")]
    chosen = (f" github.{bootstrap.domain} ", " github ")  # (its namespace says github-com)
    assert len(trusted) == 3 and not [n for n in chosen for line in trusted if n in line], trusted
    assert (f"SSH trusts new key for head-node-0.{name}.{namespace}.oneclick and "
            f"{renamed['status']['addresses'][0]}  [[ head-node ]]") in trusted

    # Every foreign line is as it was, byte for byte; only lines for owned names were added,
    # each with a key the member reported.
    after = user.known_hosts.read_bytes()
    assert after.startswith(FOREIGN)
    added = after[len(FOREIGN):].decode().splitlines()
    assert len(added) == 2 * 2 * 3  # two names, two keys, three members
    for line in added:
        host, key = line.split(" ", 1)
        assert key in owned[host]["status"]["identity"]["sshHostKeys"], line
    listed = user.occ("-n", namespace, "known-hosts", name)
    assert sorted(listed.stdout.splitlines()) == sorted(added)

    # occ ssh checks the key under the alias, strictly: the head node, named github by
    # itself, is reached and trusted as the launch's head node, and its context is root's.
    login = user.occ("-n", namespace, "ssh", name, "head-node-0", "--known-hosts",
                     str(user.known_hosts), "-i", str(user.key), "--", "stat", "-c", "%a",
                     "/var/lib/oneclick/context.json", "/var/lib/oneclick/data/gridmap")
    assert login.returncode == 0, login.stderr
    assert login.stdout.split() == ["600", "600"]
    assert user.occ("-n", namespace, "terminate", name).returncode == 0


def test_escape_sequences_a_member_reports_never_reach_the_users_terminal(
    user: User, kubeconfig: Path, namespace: str, tmp_path: Path, local_state: Path,
) -> None:
    name = "noisy"
    following = occ_run(user, namespace, waiting_document(tmp_path, name))
    wait_until(lambda: (member(kubeconfig, namespace, name, "head-node-0").get("status") or {})
               .get("identity"), what="the head node's identity")

    # Root on the head node reports first, with sequences that would clear the screen,
    # retitle the window and move the cursor over what occ printed.
    bootstrap = bootstrap_on_disk(local_state, f"{name}-head-node-0")
    reported = as_member(bootstrap, "report", {
        "ok": False, "failedStep": "\x1b[2Jroles.d/batch-client", "exitCode": 1,
        "message": "\x1b]0;pwned\x07failed \x1b[2J\x1b[1;1H",
        "steps": [{"name": "\x1b[31mred\x1b[0m", "exitCode": 1}],
        "logTail": "start\n\x1b[2J\x1b]0;title\x07\nend\r\x1b[1A\x9b2J\u202egnp.exe"})
    assert reported.status_code == 200, reported.text
    out, err = following.communicate(timeout=300)
    assert following.returncode == 1
    wait_for_phase(kubeconfig, namespace, name, "Failed")
    stored = json.dumps(member(kubeconfig, namespace, name, "head-node-0")["status"]["report"])
    assert "\\u001b]0;pwned" in stored  # the API server holds it as the member sent it

    printed = {"occ run": out + err}
    for command in (["logs", name], ["logs", name, "--member", "head-node-0"],
                    ["describe", "cluster", name], ["get", "members", "--cluster", name],
                    ["get", "members", "--cluster", name, "-o", "wide"],
                    ["get", "cluster", name, "-o", "yaml"], ["get", "members", "-o", "json"]):
        result = user.occ("-n", namespace, *command)
        assert result.returncode == 0, result.stderr
        printed[" ".join(command)] = result.stdout + result.stderr
    for shown, text in printed.items():
        for control in ("\x1b", "\x07", "\x9b", "\r", "\u202e"):
            assert control not in text, f"{shown} printed {control!r}"
    logs = printed[f"logs {name}"]
    assert "\\x1b[2J\\x1b]0;title\\x07" in logs and "FAILED at \\x1b[2Jroles.d" in logs
    assert "\\x1b]0;pwned\\x07failed" in printed[f"describe cluster {name}"]
    assert user.occ("-n", namespace, "terminate", name).returncode == 0
