"""A real controller with the local provider: members are agent processes with sshd, each in
its own namespaces on a private bridge."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import kubectl
from tests.controller_process import ControllerProcess

SAMPLE_IMAGES = Path(__file__).resolve().parents[2] / "samples" / "images"


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
    process = ControllerProcess(
        kubeconfig, namespace, tmp_path_factory.mktemp("controller") / "controller.log",
        # Members reach the broker on the bridge's address, so it listens beyond loopback.
        extra_env={"OCC_BROKER_LISTEN": "0.0.0.0",  # noqa: S104
                   "OCC_LOCAL_STATE_DIR": str(local_state),
                   "OCC_LOCAL_IMAGES_DIR": str(images)})
    process.start()
    try:
        yield process
    finally:
        process.stop()
