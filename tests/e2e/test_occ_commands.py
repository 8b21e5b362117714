"""The rest of occ, as a user reaches for it: describe, logs, data set, completion, and the
known_hosts file it keeps tidy."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml

from oneclick.cli import known_hosts
from tests.e2e.conftest import User

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_data_sent_to_a_running_launch_completes_its_context(
    user: User, namespace: str, tmp_path: Path,
) -> None:
    # The gridmap comes from a Secret nobody has made yet: the head node waits for it.
    document = yaml.safe_load((SAMPLES / "base-cluster.yaml").read_text())
    document["spec"]["data"] = [{"name": "gridmap", "valueFrom": {
        "secretKeyRef": {"name": "not-yet", "key": "gridmap"}}}] + [
        item for item in document["spec"]["data"] if item["name"] != "gridmap"]
    cluster = tmp_path / "waiting.yaml"
    cluster.write_text(yaml.safe_dump(document))
    started = user.occ("-n", namespace, "run", "--cluster", str(cluster), "--no-wait")
    assert started.returncode == 0, started.stderr
    handle = started.stdout.strip()
    time.sleep(8)
    waiting = json.loads(user.occ("-n", namespace, "get", "cluster", handle, "-o", "json").stdout)
    assert waiting["status"]["phase"] != "Ready"

    mapfile = tmp_path / "grid-mapfile"
    mapfile.write_text('"/O=Grid/CN=Late Data" jobrun\n')
    sent = user.occ("-n", namespace, "data", "set", handle, "gridmap", "--from-file", str(mapfile))
    assert sent.returncode == 0, sent.stderr
    ready = user.occ("-n", namespace, "wait", handle, "--for=condition=Ready", "--timeout=120")
    assert ready.returncode == 0, ready.stderr

    described = user.occ("-n", namespace, "describe", "cluster", handle).stdout
    assert "Phase:       Ready" in described and f"{handle}-head-node-0" in described
    assert re.search(r"^  Ready +True +Contextualized ", described, re.M), described
    assert "AllReported" in described
    logs = user.occ("-n", namespace, "logs", handle, "--member", "head-node-0").stdout
    assert logs.startswith(f"==> {handle}-head-node-0 <==\nok\n")
    assert "installed the grid-mapfile" in logs
    user.occ("-n", namespace, "terminate", handle)


def test_shell_completion_and_help_teach(user: User) -> None:
    script = user.occ("completion", "bash")
    assert script.returncode == 0 and "_OCC_COMPLETE" in script.stdout
    for command in (["run"], ["get"], ["describe"], ["logs"], ["data", "set"], ["dev", "up"],
                    ["ssh"]):
        helped = user.occ(*command, "--help")
        assert helped.returncode == 0 and "Example" in helped.stdout, command


def test_known_hosts_replaces_stale_entries_and_keeps_the_rest(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINbLeQVlsV1r+yTe9TMhp6KuWvSujLxnovGTxfNPQej+"
    path = tmp_path / "known_hosts"
    path.write_bytes(b"# mine\nold.example.org ssh-ed25519 AAAAold\n"
                     b"10.213.0.2 ssh-ed25519 AAAAstale\n"
                     b"[10.213.0.2]:2222 ssh-rsa AAAAstaleport\n"
                     b"10.213.0.2,elsewhere ssh-ed25519 AAAAkeep\n"
                     b"head-0.grid.lab.oneclick ssh-ed25519 AAAAstalealias\n"
                     b"github.com ssh-ed25519 AAAAgithub\r\n"
                     b"* ssh-ed25519 AAAAstar\n"
                     b"@cert-authority * ssh-ed25519 AAAAca")
    # What a hostile member left in its status (past the broker's checks, as an old broker
    # stored it): names of other hosts, and a key with a line of its own after it.
    member = {"metadata": {"name": "grid-head-0", "namespace": "lab"},
              "spec": {"cluster": "grid", "role": "head", "index": 0},
              "status": {"addresses": ["10.213.0.2"], "identity": {
                  "hostname": "*", "fqdn": "github.com", "addresses": ["10.0.0.1"],
                  "sshHostKeys": [key, f"{key}\n@cert-authority * {key}", "ssh-rsa AAAAnew"]}}}
    known_hosts.install(path, known_hosts.entries(member))
    # Only the lines for exactly its alias or its provider's address went; the rest is as it
    # was, byte for byte; the new lines name only those, with the one key that parses.
    assert path.read_bytes() == (
        b"# mine\nold.example.org ssh-ed25519 AAAAold\n"
        b"[10.213.0.2]:2222 ssh-rsa AAAAstaleport\n"
        b"10.213.0.2,elsewhere ssh-ed25519 AAAAkeep\n"
        b"github.com ssh-ed25519 AAAAgithub\r\n"
        b"* ssh-ed25519 AAAAstar\n"
        b"@cert-authority * ssh-ed25519 AAAAca\n"
        + f"head-0.grid.lab.oneclick {key}\n10.213.0.2 {key}\n".encode())
