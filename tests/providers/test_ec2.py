"""The ec2 provider against the EC2 API of a moto server on loopback: what it makes, how it
tags and finds it again, how it fails, and a whole launch through a controller killed midway."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from oneclick.controller.providers.base import InstanceState, LaunchRequest, ProviderError
from oneclick.controller.providers.config import EC2ProviderConfig
from oneclick.controller.providers.ec2 import EC2Provider
from tests.conftest import configure_providers, kubectl
from tests.controller.launches import create, members, sample, wait_for_phase, wait_until
from tests.controller_process import ControllerProcess
from tests.providers.conftest import create_secret, ec2_provider_entry, secret_reader
from tests.providers.ec2_machines import Ec2Machines

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


def request(image: str = "base-cluster", member: str = "demo-head-node-0") -> LaunchRequest:
    return LaunchRequest(idempotency_key=str(uuid.uuid4()), namespace="ec2-tests",
                         cluster="demo", member=member, role="head-node", index=0, image=image,
                         size=None, user_data='{"bootstrap": "of this member"}')


@pytest.fixture
def provider(controller: ControllerProcess, kubeconfig: Path, ec2_endpoint: str,
             aws_credentials: str) -> Callable[..., EC2Provider]:
    def make(**changes: Any) -> EC2Provider:
        entry = {"name": "aws", **ec2_provider_entry(ec2_endpoint, aws_credentials), **changes}
        return EC2Provider(EC2ProviderConfig.model_validate(entry),
                           secret_reader(kubeconfig, controller.namespace))
    return make


def instances_with_key(ec2: EC2Client, key: str) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:oneclick.dev/idempotency-key", "Values": [key]}])
    return [dict(i) for page in pages for r in page["Reservations"] for i in r["Instances"]]


async def test_launch_tags_describe_and_terminate(provider: Callable[..., EC2Provider],
                                                  ec2: EC2Client) -> None:
    aws = provider()
    wanted = request()
    instance = await aws.launch(wanted)
    assert instance.id.startswith("i-") and instance.addresses

    [made] = instances_with_key(ec2, wanted.idempotency_key)
    tags = {t["Key"]: t["Value"] for t in made["Tags"]}
    assert tags == {"Name": "demo-head-node-0", "oneclick.dev/namespace": "ec2-tests",
                    "oneclick.dev/cluster": "demo", "oneclick.dev/member": "demo-head-node-0",
                    "oneclick.dev/role": "head-node",
                    "oneclick.dev/idempotency-key": wanted.idempotency_key}
    assert made["ImageId"] == "ami-12c6146b" and made["InstanceType"] == "t3.small"
    assert made["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only

    # The same launch again (a controller that crashed before writing the id down): no second
    # instance, the same one back; and lookup by key finds it.
    assert (await aws.launch(wanted)).id == instance.id
    assert len(instances_with_key(ec2, wanted.idempotency_key)) == 1
    found = await aws.lookup(wanted.idempotency_key)
    assert found is not None and found.id == instance.id

    described = await aws.describe([instance.id, "i-00000000000000000"])
    assert described[instance.id].state == InstanceState.RUNNING
    assert described["i-00000000000000000"].state == InstanceState.TERMINATED

    await aws.terminate([instance.id, "i-00000000000000000"])
    assert (await aws.describe([instance.id]))[instance.id].state == InstanceState.TERMINATED
    await aws.terminate([instance.id])  # again: nothing to do, no error
    assert await aws.lookup(wanted.idempotency_key) is None


async def test_unknown_images_and_missing_credentials_are_clear_errors(
        provider: Callable[..., EC2Provider], controller: ControllerProcess,
        kubeconfig: Path) -> None:
    aws = provider()
    with pytest.raises(ProviderError, match=r"unknown image 'centos': .* base-cluster") as error:
        await aws.launch(request(image="centos"))
    assert error.value.permanent
    with pytest.raises(ProviderError, match=r"unknown image 'ami-0deadbeef': there is no "
                                            r"ami-0deadbeef in region us-east-1"):
        await aws.launch(request(image="ami-0deadbeef"))

    with pytest.raises(ProviderError, match="there is no Secret 'no-such-secret'") as error:
        await provider(credentials={"secret": "no-such-secret"}).launch(request())
    assert error.value.permanent
    create_secret(kubeconfig, controller.namespace, "half-credentials", accessKeyId="test")
    with pytest.raises(ProviderError, match="has no key 'secretAccessKey' "
                                            r"\(it has: accessKeyId\)"):
        await provider(credentials={"secret": "half-credentials"}).launch(request())


@pytest.fixture(scope="module")
def aws_controller(controller: ControllerProcess, ec2_endpoint: str,
                   aws_credentials: str) -> ControllerProcess:
    configure_providers(controller, aws=ec2_provider_entry(ec2_endpoint, aws_credentials))
    return controller


def tagged(ec2: EC2Client, namespace: str) -> dict[str, str]:
    """Every instance of the namespace, live or not: its state by id."""
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:oneclick.dev/namespace", "Values": [namespace]}])
    return {i["InstanceId"]: i["State"]["Name"] for page in pages for r in page["Reservations"]
            for i in r["Instances"]}


@pytest.mark.parametrize("moment", ["as soon as the launch exists",
                                    "while members are launching"])
def test_a_base_cluster_on_ec2_survives_a_killed_controller(
        moment: str, aws_controller: ControllerProcess, kubeconfig: Path, namespace: str,
        ec2: EC2Client, tmp_path: Path) -> None:
    with Ec2Machines(ec2, namespace, tmp_path) as machines:
        name = create(kubeconfig, namespace, sample("base-cluster.yaml", provider="aws"))
        if moment == "while members are launching":
            wait_until(lambda: tagged(ec2, namespace), timeout=60, what="a first instance")
        aws_controller.kill()
        aws_controller.start()

        launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
        assert launch["status"]["phase"] == "Ready", launch["status"]
        # One instance per member, each the one its member names, each booted once.
        instances = tagged(ec2, namespace)
        ids = {m["status"]["instanceId"] for m in members(kubeconfig, namespace, name)}
        assert set(instances) == ids and len(ids) == 3, instances
        assert sorted(machines.booted) == sorted(ids)

        kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--timeout=120s")
        assert set(tagged(ec2, namespace).values()) == {"terminated"}
