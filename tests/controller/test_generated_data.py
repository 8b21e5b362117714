"""Generated data items: a shared secret (a munge key) the controller makes once per launch,
in a Secret the launch owns. Against the real API server: racing makers make one set of
bytes, an item added later joins without touching the first, a Secret someone else put under
that name is neither used nor written, the API server refuses bad items naming the field, and
the Secret goes with its launch."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oneclick.api import DELIVERABLE, PAUSED
from oneclick.api.launch import DataItem, Generate
from oneclick.controller.broker.data import Reason, generated_secret, read_data
from oneclick.controller.cache import LaunchRecord
from oneclick.controller.reconcile import generated
from oneclick.kits.kube import KubeClient
from tests.conftest import kubectl
from tests.controller.launches import get, sample, wait_until


def paused_launch(kubeconfig: Path, namespace: str, data: list[dict[str, Any]],
                  ) -> LaunchRecord:
    """A launch requiring `data`, paused: the controller leaves it to this test."""
    document = sample("single-node.yaml")
    document["metadata"] = {"generateName": "gen-", "annotations": {PAUSED: "true"}}
    document["spec"]["roles"][0]["requires"] = {"data": [item["name"] for item in data]}
    document["spec"]["data"] = data
    created = json.loads(kubectl(kubeconfig, "create", "-n", namespace, "-o", "json", "-f", "-",
                                 stdin=json.dumps(document)).stdout)
    return LaunchRecord.from_object(created)


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = KubeClient(kubeconfig=kubeconfig)
    yield client
    await client.aclose()


def secret_data(kubeconfig: Path, launch: LaunchRecord) -> dict[str, str]:
    found = get(kubeconfig, launch.namespace, "secret", generated_secret(launch.uid))
    assert found is not None
    return dict(found["data"])


async def test_racing_makers_make_one_secret_owned_by_the_launch(
    crds: Path, kubeconfig: Path, namespace: str, kube: KubeClient,
) -> None:
    launch = paused_launch(kubeconfig, namespace, [
        {"name": "munge-key", "generate": {"bytes": 1024}}])
    # Five passes at once, as after a restart racing a pass still in flight.
    await asyncio.gather(*(generated.ensure(kube, launch) for _ in range(5)))
    made = secret_data(kubeconfig, launch)
    assert list(made) == ["munge-key"] and len(base64.b64decode(made["munge-key"])) == 1024
    secret = get(kubeconfig, namespace, "secret", generated_secret(launch.uid))
    assert secret is not None and secret["type"] == "clusters.oneclick.dev/generated"
    assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in secret["metadata"][
        "ownerReferences"]] == [("ClusterLaunch", launch.name, launch.uid, True)]
    assert DELIVERABLE not in (secret["metadata"].get("labels") or {})
    # What members get: the bytes, base64-encoded, the same on every read.
    found = await read_data(kube, namespace, launch.spec, launch.uid)
    assert found.values == {"munge-key": made["munge-key"]} and not found.problems
    await generated.ensure(kube, launch)
    assert secret_data(kubeconfig, launch) == made


async def test_an_item_added_later_joins_and_the_first_is_kept(
    crds: Path, kubeconfig: Path, namespace: str, kube: KubeClient,
) -> None:
    launch = paused_launch(kubeconfig, namespace, [
        {"name": "munge-key", "generate": {"bytes": 32}}])
    await generated.ensure(kube, launch)
    first = secret_data(kubeconfig, launch)
    launch.spec.data.append(DataItem(name="job-token", generate=Generate(bytes=16)))
    await asyncio.gather(*(generated.ensure(kube, launch) for _ in range(3)))
    now = secret_data(kubeconfig, launch)
    assert now["munge-key"] == first["munge-key"]
    assert len(base64.b64decode(now["job-token"])) == 16


async def test_a_secret_someone_else_put_under_that_name_is_neither_used_nor_written(
    crds: Path, kubeconfig: Path, namespace: str, kube: KubeClient,
) -> None:
    launch = paused_launch(kubeconfig, namespace, [
        {"name": "munge-key", "generate": {"bytes": 64}}])
    planted = base64.b64encode(b"a key the attacker knows" * 4).decode()
    # A neighbour who may create Secrets in the namespace gets there first, with the right
    # type even, but the launch does not own it.
    kubectl(kubeconfig, "create", "-n", namespace, "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "clusters.oneclick.dev/generated",
        "metadata": {"name": generated_secret(launch.uid)}, "data": {"munge-key": planted}}))
    await generated.ensure(kube, launch)
    assert secret_data(kubeconfig, launch) == {"munge-key": planted}  # not written to
    found = await read_data(kube, namespace, launch.spec, launch.uid)
    assert found.values == {}
    assert found.problems["munge-key"].reason == Reason.INVALID
    assert "is not this launch's own" in found.problems["munge-key"].message


async def test_another_launch_cannot_have_the_generated_secret_delivered(
    crds: Path, kubeconfig: Path, namespace: str, kube: KubeClient,
) -> None:
    owner = paused_launch(kubeconfig, namespace, [
        {"name": "munge-key", "generate": {"bytes": 32}}])
    await generated.ensure(kube, owner)
    thief = paused_launch(kubeconfig, namespace, [{"name": "stolen", "valueFrom": {
        "secretKeyRef": {"name": generated_secret(owner.uid), "key": "munge-key"}}}])
    found = await read_data(kube, namespace, thief.spec, thief.uid)
    assert found.values == {} and found.problems["stolen"].reason == Reason.WITHHELD


async def test_the_secret_goes_with_its_launch(
    crds: Path, kubeconfig: Path, namespace: str, kube: KubeClient,
) -> None:
    launch = paused_launch(kubeconfig, namespace, [
        {"name": "munge-key", "generate": {"bytes": 32}}])
    await generated.ensure(kube, launch)
    kubectl(kubeconfig, "annotate", "cl", launch.name, "-n", namespace, f"{PAUSED}-")
    kubectl(kubeconfig, "delete", "cl", launch.name, "-n", namespace, "--timeout=60s")
    wait_until(lambda: get(kubeconfig, namespace, "secret",
                           generated_secret(launch.uid)) is None,
               timeout=60, what="the garbage collector to delete the generated Secret")


@pytest.mark.parametrize("item, message", [
    ({"name": "k", "value": "x", "generate": {"bytes": 32}},
     "exactly one of value, valueFrom and generate must be set"),
    ({"name": "k"}, "exactly one of value, valueFrom and generate must be set"),
    ({"name": "k", "generate": {"bytes": 8}}, "spec.data[0].generate.bytes"),
    ({"name": "k", "generate": {"bytes": 5000}}, "spec.data[0].generate.bytes"),
    ({"name": "k", "generate": {}}, "spec.data[0].generate.bytes: Required value"),
], ids=["two sources", "no source", "too few bytes", "too many bytes", "no bytes"])
def test_the_api_server_refuses_a_bad_generated_item_naming_the_field(
    crds: Path, kubeconfig: Path, namespace: str, item: dict[str, Any], message: str,
) -> None:
    document = sample("single-node.yaml")
    document["metadata"] = {"name": "bad-" + os.urandom(2).hex()}
    document["spec"]["data"] = [item]
    refused = kubectl(kubeconfig, "create", "-n", namespace, "-f", "-", check=False,
                      stdin=json.dumps(document))
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr


def test_kubectl_explain_teaches_generate(crds: Path, kubeconfig: Path) -> None:
    explained = kubectl(kubeconfig, "explain", "clusterlaunch.spec.data.generate").stdout
    assert "random bytes" in explained and "bytes" in explained
    assert "Secret owned by the launch" in kubectl(
        kubeconfig, "explain", "clusterlaunch.spec.data.generate.bytes").stdout
