"""Paused launches, staged by the test the way the controller stages them: a ClusterLaunch,
one LaunchMember per role instance, each with a bootstrap token whose hash alone is in its
status; and real agent processes that boot from a member's bootstrap into a root directory
of their own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneclick.api import API_VERSION, PAUSED
from oneclick.api.protocol import Bootstrap
from oneclick.controller.broker import tokens
from oneclick.controller.cache import LaunchRecord
from oneclick.controller.providers.local import DOMAIN  # the test controller's default provider's
from oneclick.controller.reconcile import generated
from oneclick.kits.kube import KubeClient
from tests.conftest import kubectl
from tests.controller_process import ControllerProcess

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

    def bootstrap(self, namespace: str, cluster: str, broker_url: str, ca_pem: str,
                  domain: str | None = DOMAIN) -> Bootstrap:
        """As the controller makes it: the agent names itself <hostname>.<domain>."""
        return Bootstrap(broker_url=broker_url, ca_cert=ca_pem, namespace=namespace,
                         cluster=cluster, member=self.name, token=self.token, domain=domain)


def stage_launch(kubeconfig: Path, namespace: str, name: str, spec: dict[str, Any],
                 key: bytes) -> dict[str, StagedMember]:
    launch = {"apiVersion": API_VERSION, "kind": "ClusterLaunch",
              "metadata": {"name": name, "namespace": namespace, "annotations": {PAUSED: "true"}},
              "spec": spec}
    created_launch = json.loads(kubectl(kubeconfig, "create", "-o", "json", "-f", "-",
                                        stdin=json.dumps(launch)).stdout)
    _generate_data(kubeconfig, LaunchRecord.from_object(created_launch))
    members: dict[str, StagedMember] = {}
    for role in spec["roles"]:
        for index in range(role.get("quantity", 1)):
            staged = stage_member(kubeconfig, namespace, name, role, index, key)
            members[staged.name] = staged
    return members


def stage_member(kubeconfig: Path, namespace: str, cluster: str, role: dict[str, Any],
                 index: int, key: bytes) -> StagedMember:
    """One member of a staged launch, Running, with its token (a scale-up does this)."""
    member = f"{cluster}-{role['name']}-{index}"
    body = {"apiVersion": API_VERSION, "kind": "LaunchMember",
            "metadata": {"name": member, "namespace": namespace,
                         "annotations": {PAUSED: "true"}},
            "spec": {"cluster": cluster, "role": role["name"], "index": index,
                     "image": role["image"], "provider": "local"}}
    created = json.loads(kubectl(kubeconfig, "create", "-o", "json", "-f", "-",
                                 stdin=json.dumps(body)).stdout)
    uid = created["metadata"]["uid"]
    token = tokens.token_for(key, uid)
    kubectl(kubeconfig, "patch", "lm", member, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {
                "tokenHash": tokens.token_hash(token), "phase": "Running"}}))
    return StagedMember(member, role["name"], index, uid, token)


def _generate_data(kubeconfig: Path, launch: LaunchRecord) -> None:
    """What the reconciler does for a launch it is not paused for: its generated data items
    (the base cluster's munge key), made by the controller's own code."""

    async def ensure() -> None:
        kube = KubeClient(kubeconfig)
        try:
            await generated.ensure(kube, launch)
        finally:
            await kube.aclose()

    asyncio.run(ensure())


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
                *extra: str, agent: Sequence[str] | None = None,
                pass_fds: Sequence[int] = ()) -> subprocess.Popen[str]:
    """The agent (`agent`: the command that runs it; the environment's occ-agent by
    default) for the member whose root is `root` (`pass_fds`: descriptors it inherits)."""
    bootstrap_file = root / "bootstrap.json"
    bootstrap_file.write_text(json.dumps(bootstrap.wire()))
    bootstrap_file.chmod(0o600)
    command = list(agent or [str(Path(sys.executable).parent / "occ-agent")])
    return subprocess.Popen(
        [*command, "--bootstrap", str(bootstrap_file), "--root", str(root),
         "--hostname", hostname, "--address", address,
         "--wait", "5", "--timeout", "180", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ), pass_fds=tuple(pass_fds),
    )


def member_status(kubeconfig: Path, namespace: str, member: str) -> dict[str, Any]:
    obj = json.loads(kubectl(kubeconfig, "get", "lm", member, "-n", namespace,
                             "-o", "json").stdout)
    status: dict[str, Any] = obj.get("status", {})
    return status


def contextualize_alone(agent: Sequence[str], controller: ControllerProcess, kubeconfig: Path,
                        namespace: str, launch: str, key: bytes, root: Path,
                        address: str) -> None:
    """One member, alone in its launch, contextualized by `agent` (the command that runs the
    agent) against the real broker: it reports ok, is Ready, and its /etc/hosts knows it."""
    spec = {"roles": [{"name": "solo", "image": "base-cluster"}], "hostsFile": True,
            "sshHostBased": True}
    [member] = stage_launch(kubeconfig, namespace, launch, spec, key).values()
    make_image(root, {"ready.d/99-ready": 0})
    running = start_agent(root, member.bootstrap(namespace, launch, controller.broker_url,
                                                 controller.ca_pem()),
                          "solo-0", address, agent=agent)
    output, _ = running.communicate(timeout=180)
    assert running.returncode == 0, output
    status = member_status(kubeconfig, namespace, member.name)
    assert status["phase"] == "Ready" and status["report"]["ok"] is True, status
    assert "solo-0.oneclick.local" in (root / "etc" / "hosts").read_text()
