"""The test bed: a real etcd, kube-apiserver and kube-controller-manager for the whole session.

Set OCC_TEST_KUBECONFIG to run the suite against a cluster of your own instead. Anything that
cannot start fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from oneclick import controlplane
from tests.controller_process import ControllerProcess


@pytest.fixture(scope="session")
def binaries() -> dict[str, Path]:
    """The control plane's binaries and helm (built once, then cached); kubectl goes first on
    PATH."""
    paths = controlplane.ensure_binaries()
    # Our kubectl and the occ of this environment come first, whatever the caller's PATH.
    os.environ["PATH"] = os.pathsep.join(
        [str(paths["kubectl"].parent), str(Path(sys.executable).parent), os.environ["PATH"]]
    )
    return paths


@pytest.fixture(scope="session")
def control_plane(
    binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[controlplane.ControlPlane]:
    external = os.environ.get("OCC_TEST_KUBECONFIG")
    if external:
        yield controlplane.existing(Path(external))
        return
    plane = controlplane.start(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: controlplane.ControlPlane) -> Path:
    return control_plane.kubeconfig


def kubectl(kubeconfig: Path, *args: str, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real kubectl against the test cluster."""
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


@pytest.fixture(scope="session")
def crds(kubeconfig: Path) -> Path:
    """Our CustomResourceDefinitions, installed and established."""
    crd_dir = Path(__file__).resolve().parent.parent / "crds"
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/clusterlaunches.clusters.oneclick.dev", "crd/launchmembers.clusters.oneclick.dev")
    # The API server publishes a new CRD's OpenAPI (what `kubectl explain` reads) a little
    # after it is established.
    deadline = time.monotonic() + 60
    while kubectl(kubeconfig, "explain", "clusterlaunch", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the CRDs' OpenAPI was never published"
        time.sleep(0.5)
    return crd_dir


@pytest.fixture
def namespace(kubeconfig: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted after it as a user would: the controller
    manager empties it in the background (launches in it terminated through our finalizers;
    the session's end waits for those)."""
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40]
    name = name.strip("-") + "-" + os.urandom(3).hex()
    kubectl(kubeconfig, "create", "namespace", name)
    yield name
    kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", "--ignore-not-found")


# -- the controller ------------------------------------------------------------------------
# One real controller for the whole session, with the local provider: members are agent
# processes with sshd, each in its own namespaces on a private bridge.

SAMPLE_IMAGES = Path(__file__).resolve().parents[1] / "samples" / "images"


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample images, and `broken`: the base cluster whose batch-server script fails."""
    root = tmp_path_factory.mktemp("images")
    shutil.copytree(SAMPLE_IMAGES, root, dirs_exist_ok=True, symlinks=True)
    broken = root / "broken"
    shutil.copytree(root / "base-cluster", broken, symlinks=True)
    script = broken / "etc" / "oneclick" / "roles.d" / "batch-server"
    script.write_text("#!/bin/sh\necho 'cannot reach the batch server' >&2\nexit 3\n")
    return root


@pytest.fixture(scope="session")
def local_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-provider")


@pytest.fixture(scope="session")
def controller(crds: Path, kubeconfig: Path, images: Path, local_state: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    namespace = "occ-system-" + os.urandom(3).hex()
    kubectl(kubeconfig, "create", "namespace", namespace)
    directory = tmp_path_factory.mktemp("controller")
    providers = directory / "providers.yaml"  # more providers: see configure_providers()
    providers.write_text("providers: []\n")
    process = ControllerProcess(
        kubeconfig, namespace, directory / "controller.log",
        # Members reach the broker on the bridge's address, so it listens beyond loopback.
        extra_env={"OCC_BROKER_LISTEN": "0.0.0.0",  # noqa: S104
                   "OCC_LOCAL_STATE_DIR": str(local_state),
                   "OCC_LOCAL_IMAGES_DIR": str(images),
                   "OCC_PROVIDERS_FILE": str(providers),
                   # (put there by the tests that serve it: absent until then)
                   "OCC_AGENT_BUNDLE": str(directory / "oneclick-agent.pyz")})
    process.start()
    try:
        yield process
    finally:
        _terminate_every_launch(kubeconfig)
        process.stop()
        leftovers = _sweep(local_state)
    assert leftovers == [], f"instances outlived their launches: {leftovers}"


def configure_providers(controller: ControllerProcess, **entries: Any) -> None:
    """Offer these providers (by name) besides the ones already configured, as an operator
    does: edit the providers file, restart the controller."""
    path = Path(controller.extra_env["OCC_PROVIDERS_FILE"])
    providers = {p["name"]: p for p in yaml.safe_load(path.read_text())["providers"]}
    providers.update({name: {"name": name, **entry} for name, entry in entries.items()})
    path.write_text(yaml.safe_dump({"providers": list(providers.values())}))
    controller.stop()
    controller.start()


def _terminate_every_launch(kubeconfig: Path, timeout: float = 120.0) -> None:
    """What a user does at the end of the day: every launch terminated through the controller."""
    for kind in ("clusterlaunches", "launchmembers"):  # (paused launches leave orphans)
        kubectl(kubeconfig, "delete", kind, "--all", "--all-namespaces", "--wait=false",
                check=False)
    deadline = time.monotonic() + timeout
    while kubectl(kubeconfig, "get", "launchmembers", "-A", "-o", "name",
                  check=False).stdout.strip() and time.monotonic() < deadline:
        time.sleep(1)


def _sweep(local_state: Path) -> list[str]:
    """Terminate whatever local instance is left (there should be none) and name them."""
    import asyncio

    from oneclick.controller.providers.local import LocalProvider

    provider = LocalProvider(state_dir=local_state)
    records = provider.records()
    asyncio.run(provider.terminate([record.id for _, record in records]))
    return [f"{record.namespace}/{record.member}" for _, record in records]
