"""The rest of occ, as a user reaches for it: describe, logs, data set, completion, and the
known_hosts file it keeps tidy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from cli import known_hosts
from tests.e2e.conftest import User

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_data_sent_to_a_running_launch_completes_its_context(
    user: User, namespace: str, tmp_path: Path,
) -> None:
    # The gridmap comes from a Secret nobody has made yet: the head node waits for it.
    document = yaml.safe_load((SAMPLES / "base-cluster.yaml").read_text())
    document["spec"]["data"] = [{"name": "gridmap", "valueFrom": {
        "secretKeyRef": {"name": "not-yet", "key": "gridmap"}}}]
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
    assert "Ready            True" in described and "AllReported" in described
    logs = user.occ("-n", namespace, "logs", handle, "--member", "head-node-0").stdout
    assert logs.startswith(f"==> {handle}-head-node-0 <==\nok\n")
    assert "installed the grid-mapfile" in logs
    user.occ("-n", namespace, "terminate", handle)


def test_shell_completion_and_help_teach(user: User) -> None:
    script = user.occ("completion", "bash")
    assert script.returncode == 0 and "_OCC_COMPLETE" in script.stdout
    for command in (["run"], ["get"], ["data", "set"], ["dev", "up"], ["ssh"]):
        helped = user.occ(*command, "--help")
        assert helped.returncode == 0 and "Example" in helped.stdout, command


def test_known_hosts_replaces_stale_entries_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("# mine\nold.example.org ssh-ed25519 AAAAold\n"
                    "10.213.0.2 ssh-ed25519 AAAAstale\n"
                    "[10.213.0.2]:2222 ssh-rsa AAAAstaleport\n"
                    "elsewhere ssh-ed25519 AAAAkeep\n")
    member = {"status": {"addresses": ["10.213.0.2"], "identity": {
        "hostname": "head", "fqdn": "head.oneclick.local", "addresses": ["10.213.0.2"],
        "sshHostKeys": ["ssh-ed25519 AAAAnew", "ssh-rsa AAAAnewrsa"]}}}
    known_hosts.install(path, known_hosts.entries(member))
    assert path.read_text().splitlines() == [
        "# mine", "old.example.org ssh-ed25519 AAAAold", "elsewhere ssh-ed25519 AAAAkeep",
        "head.oneclick.local,head,10.213.0.2 ssh-ed25519 AAAAnew",
        "head.oneclick.local,head,10.213.0.2 ssh-rsa AAAAnewrsa",
    ]
