"""Members whose image has no agent at all (a stock root: Debian's python3 and openssh): their
boot runs the cloud-config they were handed, whose occ-boot fetches the agent from the broker,
checks its digest against the bootstrap's and runs it. A tampered agent is refused, and the
launch fails saying so."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneclick.api.protocol import Bootstrap
from oneclick.controlplane import agent_bundle
from tests.conftest import kubectl
from tests.controller.launches import create, members, sample, wait_for_phase, wait_until
from tests.controller_process import ControllerProcess

# The members' boot waits for this file before occ-boot runs (a slow boot): what the broker
# serves can change between the bootstraps' minting and the fetch, on the test's word.
SLOW_PYTHON = """#!/bin/sh
until [ -e /var/lib/oneclick/go ]; do sleep 0.1; done
exec /usr/bin/python3 "$@"
"""


@pytest.fixture(scope="module")
def bundle() -> Path:
    return agent_bundle.build(log=False)


@pytest.fixture
def served(controller: ControllerProcess, bundle: Path) -> Iterator[Path]:
    """The controller serves the agent file (OCC_AGENT_BUNDLE), as long as the test runs."""
    path = Path(controller.extra_env["OCC_AGENT_BUNDLE"])
    shutil.copyfile(bundle, path)
    yield path
    path.unlink(missing_ok=True)


def stock_image(images: Path, name: str, **properties: str) -> str:
    """The sample base cluster's image without an agent: its image.json says so."""
    image = images / name
    if not image.exists():
        shutil.copytree(images / "base-cluster", image, symlinks=True)
        (image / "image.json").write_text(json.dumps({"boot": "cloud-config", **properties}))
    return name


def instance_roots(local_state: Path, namespace: str) -> dict[str, Path]:
    roots = {}
    for record in local_state.glob("instances/*/instance.json"):
        found = json.loads(record.read_text())
        if found["namespace"] == namespace:
            roots[found["member"]] = record.parent / "root"
    return roots


def test_stock_members_fetch_the_agent_from_the_broker_and_reach_ready(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, images: Path,
    local_state: Path, served: Path,
) -> None:
    document = sample("base-cluster.yaml")
    for role in document["spec"]["roles"]:
        role["image"] = stock_image(images, "stock-cluster")
    name = create(kubeconfig, namespace, document)
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed", timeout=300)
    assert launch["status"]["phase"] == "Ready", launch["status"]
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    roots = instance_roots(local_state, namespace)
    assert len(roots) == 3 and len(members(kubeconfig, namespace, name)) == 3
    for member, root in roots.items():
        # Each ran the agent it fetched and checked, with Debian's python3 (not ours).
        kept = root / f"var/lib/oneclick/occ-agent-{digest[:16]}.pyz"
        assert kept.read_bytes() == served.read_bytes(), member
        console = (root.parent / "console.log").read_text()
        assert f"occ-boot: running the agent {kept.relative_to(root).as_posix()}" in (
            console.replace("/var/lib", "var/lib")), console
        # It unpacked into the member's own folder, as into a VM's own /var/cache.
        assert list((root / "var/lib/oneclick/cache").glob("agent-*/.complete")), member
        user_data = root / "var/lib/cloud/instance/user-data.txt"
        assert user_data.stat().st_mode & 0o777 == 0o600
        bootstrap = Bootstrap.model_validate_json(
            (root / "var/lib/oneclick/bootstrap.json").read_text())
        assert bootstrap.member == member and bootstrap.agent_sha256 == digest
    # What this real launch handed its members is a cloud-config by cloud-init's own schema.
    checked = subprocess.run(["cloud-init", "schema", "--config-file", str(user_data)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "Valid cloud-config" in checked.stdout, (
        checked.stdout + checked.stderr)
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")


def test_a_tampered_agent_is_refused_and_the_launch_fails_saying_so(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, images: Path,
    local_state: Path, served: Path,
) -> None:
    image = images / "slow-stock"
    if not image.exists():
        stock_image(images, "slow-stock", python="/opt/slow-python3")
        (image / "opt").mkdir(exist_ok=True)
        (image / "opt" / "slow-python3").write_text(SLOW_PYTHON)
        (image / "opt" / "slow-python3").chmod(0o755)
    good = hashlib.sha256(served.read_bytes()).hexdigest()
    document = sample("single-node.yaml")
    document["spec"]["roles"][0]["image"] = "slow-stock"
    name = create(kubeconfig, namespace, document)
    wait_until(lambda: len(instance_roots(local_state, namespace)) == 1, timeout=120,
               what="the member's instance")
    [root] = instance_roots(local_state, namespace).values()
    bootstrap = root / "var/lib/oneclick/bootstrap.json"
    wait_until(lambda: bootstrap.exists() and bootstrap.stat().st_size > 0, timeout=60,
               what="the member's bootstrap")
    minted = Bootstrap.model_validate_json(bootstrap.read_text())
    assert minted.agent_sha256 == good
    # The file served changes after the bootstrap was minted (someone on the controller's
    # machine, or a copy gone bad): the member must not run it.
    served.write_bytes(served.read_bytes() + b"\n# tampered\n")
    (root / "var/lib/oneclick/go").touch()

    launch = wait_for_phase(kubeconfig, namespace, name, "Failed", "Ready", timeout=180)
    failed = next(c for c in launch["status"]["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True", launch["status"]
    assert "agent digest mismatch" in failed["message"], failed
    assert f"the bootstrap expects {good}" in failed["message"], failed
    [member] = members(kubeconfig, namespace, name)
    report = member["status"]["report"]
    assert report["ok"] is False and report["failedStep"] == "occ-boot: fetch the agent"
    assert "refusing to run it" in report["logTail"]
    # The one secret stays where it was: in no status, no log of the controller's.
    assert minted.token not in json.dumps(member) + json.dumps(launch)
    assert minted.token not in controller.log.read_text()
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")
