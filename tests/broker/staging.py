"""Paused launches, staged by the test the way the controller stages them: a ClusterLaunch,
one LaunchMember per role instance, each with a bootstrap token whose hash alone is in its
status; and real agent processes that boot from a member's bootstrap into a root directory
of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api import API_VERSION, PAUSED
from api.protocol import Bootstrap
from controller.broker import tokens
from tests.conftest import kubectl

SCRIPT = """#!/bin/sh
# records how it was called; fails when the image says so
echo "{name} $*" >> "$OCC_ROOT/var/log/role-calls"
echo "{name} ran for $*"
{tail}
"""


@dataclass
class StagedMember:
    name: str
    role: str
    index: int
    uid: str
    token: str

    def bootstrap(self, namespace: str, cluster: str, broker_url: str, ca_pem: str) -> Bootstrap:
        return Bootstrap(broker_url=broker_url, ca_cert=ca_pem, namespace=namespace,
                         cluster=cluster, member=self.name, token=self.token)


def stage_launch(kubeconfig: Path, namespace: str, name: str, spec: dict[str, Any],
                 key: bytes) -> dict[str, StagedMember]:
    launch = {"apiVersion": API_VERSION, "kind": "ClusterLaunch",
              "metadata": {"name": name, "namespace": namespace, "annotations": {PAUSED: "true"}},
              "spec": spec}
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(launch))
    members: dict[str, StagedMember] = {}
    for role in spec["roles"]:
        for index in range(role.get("quantity", 1)):
            member = f"{name}-{role['name']}-{index}"
            body = {"apiVersion": API_VERSION, "kind": "LaunchMember",
                    "metadata": {"name": member, "namespace": namespace,
                                 "annotations": {PAUSED: "true"}},
                    "spec": {"cluster": name, "role": role["name"], "index": index,
                             "image": role["image"], "provider": "local"}}
            created = json.loads(kubectl(kubeconfig, "create", "-o", "json", "-f", "-",
                                         stdin=json.dumps(body)).stdout)
            uid = created["metadata"]["uid"]
            token = tokens.token_for(key, uid)
            kubectl(kubeconfig, "patch", "lm", member, "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": {
                        "tokenHash": tokens.token_hash(token), "phase": "Running"}}))
            members[member] = StagedMember(member, role["name"], index, uid, token)
    return members


def make_image(root: Path, scripts: dict[str, int]) -> None:
    """An image folder: each script path (under etc/oneclick) exits with the code given."""
    for relative, code in scripts.items():
        path = root / "etc" / "oneclick" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tail = f'echo "{relative} is failing" >&2; exit {code}' if code else "exit 0"
        path.write_text(SCRIPT.format(name=relative, tail=tail))
        path.chmod(0o755)
    (root / "var" / "log").mkdir(parents=True, exist_ok=True)


def start_agent(root: Path, bootstrap: Bootstrap, hostname: str, address: str,
                *extra: str) -> subprocess.Popen[str]:
    bootstrap_file = root / "bootstrap.json"
    bootstrap_file.write_text(json.dumps(bootstrap.wire()))
    bootstrap_file.chmod(0o600)
    agent = Path(sys.executable).parent / "occ-agent"
    return subprocess.Popen(
        [str(agent), "--bootstrap", str(bootstrap_file), "--root", str(root),
         "--hostname", hostname, "--fqdn", f"{hostname}.oneclick.test", "--address", address,
         "--wait", "5", "--timeout", "180", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ),
    )


def member_status(kubeconfig: Path, namespace: str, member: str) -> dict[str, Any]:
    obj = json.loads(kubectl(kubeconfig, "get", "lm", member, "-n", namespace,
                             "-o", "json").stdout)
    status: dict[str, Any] = obj.get("status", {})
    return status
