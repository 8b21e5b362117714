"""The local provider's images are the folders of its images folder, and nothing else: a role
that names a path (absolute, with `..`, or through a link that leads out) gets no copy of
anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from oneclick.api import API_VERSION
from oneclick.api.protocol import Bootstrap
from oneclick.controller.providers import LaunchRequest, ProviderError
from oneclick.controller.providers.local import LocalProvider
from tests.conftest import kubectl
from tests.controller.launches import members, wait_for_phase
from tests.controller_process import ControllerProcess

HOSTILE = ("../../etc", "/etc", "base-cluster/../..")

BOOTSTRAP = Bootstrap(broker_url="https://127.0.0.1:9", ca_cert="-----BEGIN CERTIFICATE-----",
                      namespace="ns", cluster="c", member="c-solo-0", token="t" * 43)


def request(image: str, key: str) -> LaunchRequest:
    return LaunchRequest(idempotency_key=key, namespace="ns", cluster="c", member="c-solo-0",
                         role="solo", index=0, image=image, size=None,
                         user_data=BOOTSTRAP.model_dump_json(by_alias=True))


@pytest.fixture
def folder(images: Path, tmp_path: Path) -> Path:
    """An images folder: the base cluster, a link to it, and a link that leads out (/etc)."""
    mine = tmp_path / "images"
    shutil.copytree(images / "base-cluster", mine / "base-cluster", symlinks=True)
    (mine / "alias").symlink_to("base-cluster")
    (mine / "escape").symlink_to("/etc")
    return mine


@pytest.mark.parametrize("image", [*HOSTILE, "escape", "..", ".", "base-cluster/etc"])
async def test_an_image_that_is_not_a_folder_of_the_images_folder_is_refused(
        image: str, folder: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    provider = LocalProvider(state_dir=state, images_dir=folder, namespaced=False)
    with pytest.raises(ProviderError) as raised:
        await provider.launch(request(image, "uid-hostile"))
    assert raised.value.permanent
    assert f"image {image!r}" in str(raised.value)
    assert "images folder" in str(raised.value) or "images are the folders" in str(raised.value)
    assert not (state / "instances" / "uid-hostile").exists()  # nothing made, nothing copied


async def test_a_link_to_another_image_of_the_folder_is_that_image(folder: Path,
                                                                   tmp_path: Path) -> None:
    provider = LocalProvider(state_dir=tmp_path / "state", images_dir=folder, namespaced=False)
    instance = await provider.launch(request("alias", "uid-alias"))
    try:
        root = tmp_path / "state" / "instances" / "uid-alias" / "root"
        assert (root / "etc/oneclick/roles.d/batch-server").is_file()
    finally:
        await provider.terminate([instance.id])


@pytest.mark.parametrize("image", HOSTILE)
def test_a_launch_naming_a_path_as_its_image_copies_nothing(
        image: str, controller: ControllerProcess, kubeconfig: Path, local_state: Path,
        namespace: str) -> None:
    document = {"apiVersion": API_VERSION, "kind": "ClusterLaunch",
                "metadata": {"name": "reach-out"},
                "spec": {"roles": [{"name": "solo", "image": image, "quantity": 1}]}}
    applied = kubectl(kubeconfig, "create", "-n", namespace, "-f", "-",
                      stdin=json.dumps(document), check=False)
    if applied.returncode != 0:  # refused by the API server itself: also fine, if it says why
        assert "image" in applied.stderr, applied.stderr
        return
    launch = wait_for_phase(kubeconfig, namespace, "reach-out", "Failed", "Ready", timeout=120)
    assert launch["status"]["phase"] == "Failed", launch["status"]
    failed = {c["type"]: c for c in launch["status"]["conditions"]}["Failed"]
    assert f"image {image!r}" in failed["message"], failed
    for member in members(kubeconfig, namespace, "reach-out"):
        assert not (local_state / "instances" / member["metadata"]["uid"]).exists()
    kubectl(kubeconfig, "delete", "cl", "reach-out", "-n", namespace, "--timeout=60s")
