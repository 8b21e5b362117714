"""A real controller process hosting the broker, for the broker and agent tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import kubectl
from tests.controller_process import ControllerProcess


@pytest.fixture(scope="module")
def controller(crds: Path, kubeconfig: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    namespace = "occ-system-" + os.urandom(3).hex()
    kubectl(kubeconfig, "create", "namespace", namespace)
    process = ControllerProcess(kubeconfig, namespace,
                                tmp_path_factory.mktemp("controller") / "controller.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def token_key() -> bytes:
    return os.urandom(32)
