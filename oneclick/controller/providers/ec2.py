"""The ec2 provider: members are EC2 instances, made with boto3 (run in threads: it is not
async, and it is the well-kept client for every EC2 call and error).

- launch: RunInstances with the bootstrap as user data (the agent reads it from the metadata
  service, IMDSv2 only) and the member's idempotency key as the client token, so a repeated
  launch returns the instance it made; tags tie the instance to its launch and member.
- describe: one DescribeInstances per 200 instances (a filter, so an unknown id is "gone", not
  an error for the whole batch).
- terminate: TerminateInstances of those that still exist.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from oneclick.controller.providers.base import (
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderError,
    SecretReader,
    secret_data,
)
from oneclick.controller.providers.config import EC2ProviderConfig

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

T = TypeVar("T")

TAG = "oneclick.dev/"
KEY_TAG = TAG + "idempotency-key"
BATCH = 200
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
STATES = {"pending": InstanceState.PENDING, "running": InstanceState.RUNNING,
          "stopping": InstanceState.FAILED, "stopped": InstanceState.FAILED,
          "shutting-down": InstanceState.TERMINATED, "terminated": InstanceState.TERMINATED}
# Errors that another try will not mend: the request or its credentials are wrong.
PERMANENT = ("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId",
             "SignatureDoesNotMatch", "OptInRequired", "Blocked")


class EC2Provider:
    def __init__(self, config: EC2ProviderConfig, secrets: SecretReader) -> None:
        self.config = config
        self.name = config.name
        self._secrets = secrets
        self._client: tuple[tuple[bytes, ...], EC2Client] | None = None
        self._images_seen: set[str] = set()

    @property
    def broker_host(self) -> str:
        return self.config.broker_host

    @property
    def domain(self) -> str:
        """The configured domain, else the region's internal one (what an instance's private
        DNS name ends in: ec2.internal in us-east-1, <region>.compute.internal elsewhere)."""
        if self.config.domain:
            return self.config.domain
        if self.config.region == "us-east-1":
            return "ec2.internal"
        return f"{self.config.region}.compute.internal"

    def limitations(self) -> list[str]:
        return []

    # -- the interface --------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> Instance:
        found = await self.lookup(request.idempotency_key)
        if found is not None:
            return found
        image = await self._image(request.image)
        tags = {"Name": request.member, TAG + "namespace": request.namespace,
                TAG + "cluster": request.cluster, TAG + "member": request.member,
                TAG + "role": request.role, KEY_TAG: request.idempotency_key}
        options: dict[str, Any] = {
            "ImageId": image, "InstanceType": request.size or self.config.instance_type,
            "MinCount": 1, "MaxCount": 1, "UserData": request.user_data,
            "ClientToken": request.idempotency_key,
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": k, "Value": v} for k, v in tags.items()]}],
        }
        if self.config.subnet_id:
            options["SubnetId"] = self.config.subnet_id
        if self.config.security_group_ids:
            options["SecurityGroupIds"] = self.config.security_group_ids
        if self.config.key_name:
            options["KeyName"] = self.config.key_name
        client = await self._ec2()
        made = await self._call(functools.partial(client.run_instances, **options),
                                f"launching {request.member} from {image}")
        return _instance(made["Instances"][0])

    async def lookup(self, idempotency_key: str) -> Instance | None:
        found = await self._instances([
            {"Name": f"tag:{KEY_TAG}", "Values": [idempotency_key]},
            {"Name": "instance-state-name", "Values": LIVE_STATES}])
        return _instance(found[0]) if found else None

    async def describe(self, instance_ids: list[str]) -> dict[str, Instance]:
        found: dict[str, Instance] = {}
        for batch in _batches(instance_ids):
            for raw in await self._instances([{"Name": "instance-id", "Values": batch}]):
                found[raw["InstanceId"]] = _instance(raw)
        return {i: found.get(i) or Instance(i, InstanceState.TERMINATED, message="no such "
                                            "instance") for i in instance_ids}

    async def terminate(self, instance_ids: list[str]) -> None:
        live = [i for i, instance in (await self.describe(instance_ids)).items()
                if instance.state != InstanceState.TERMINATED]
        client = await self._ec2()
        for batch in _batches(live):
            await self._call(functools.partial(client.terminate_instances, InstanceIds=batch),
                             f"terminating {len(batch)} instances")

    async def aclose(self) -> None:
        if self._client is not None:
            self._client[1].close()  # (botocore's connection pool)
            self._client = None

    # -- EC2 ------------------------------------------------------------------------------

    async def _image(self, image: str) -> str:
        """The AMI of a role's image, known to exist (checked once, here, so that a wrong one
        is an error naming it rather than an instance that never boots)."""
        ami = self.config.images.get(image) or (image if image.startswith("ami-") else None)
        if ami is None:
            known = ", ".join(sorted(self.config.images)) or "none"
            raise ProviderError(f"unknown image {image!r}: provider {self.name!r} maps these "
                                f"image names to AMIs: {known} (its `images:`); a role may also "
                                "name an AMI id (ami-...)", permanent=True)
        if ami not in self._images_seen:
            client = await self._ec2()

            def exists() -> bool:
                try:
                    return bool(client.describe_images(ImageIds=[ami])["Images"])
                except botocore.exceptions.ClientError as error:
                    if _code(error).startswith("InvalidAMIID"):
                        return False
                    raise

            if not await self._call(exists, f"looking up image {image!r}"):
                raise ProviderError(f"unknown image {image!r}: there is no {ami} in region "
                                    f"{self.config.region}", permanent=True)
            self._images_seen.add(ami)
        return ami

    async def _instances(self, filters: list[Any]) -> list[InstanceTypeDef]:
        client = await self._ec2()

        def every() -> list[InstanceTypeDef]:
            pages = client.get_paginator("describe_instances").paginate(Filters=filters)
            return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

        return await self._call(every, "describing instances")

    async def _ec2(self) -> EC2Client:
        """A client with the Secret's credentials as they are now (they may be rotated)."""
        secret = self.config.credentials.secret
        data = await secret_data(self._secrets, self.name, secret,
                                 ("accessKeyId", "secretAccessKey"))
        keys = (data["accessKeyId"], data["secretAccessKey"], data.get("sessionToken", b""))
        if self._client is None or self._client[0] != keys:
            client = boto3.client(
                "ec2", region_name=self.config.region, endpoint_url=self.config.endpoint_url,
                aws_access_key_id=keys[0].decode(), aws_secret_access_key=keys[1].decode(),
                aws_session_token=keys[2].decode() or None,
                config=botocore.config.Config(retries={"mode": "standard"},
                                              connect_timeout=10, read_timeout=30))
            self._client = (keys, client)
        return self._client[1]

    async def _call(self, call: Callable[[], T], what: str) -> T:
        try:
            return await asyncio.to_thread(call)
        except botocore.exceptions.ClientError as error:
            code = _code(error)
            message = error.response.get("Error", {}).get("Message", str(error))
            if code.startswith("InvalidAMIID"):
                raise ProviderError(f"{what}: unknown image: {message} (in region "
                                    f"{self.config.region})", permanent=True) from error
            permanent = code in PERMANENT or code.startswith(("Invalid", "Unsupported"))
            raise ProviderError(f"{what}: {code}: {message}", permanent=permanent) from error
        except botocore.exceptions.BotoCoreError as error:
            raise ProviderError(f"{what}: {error}") from error


def _code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _instance(raw: InstanceTypeDef) -> Instance:
    state = raw.get("State", {}).get("Name", "pending")
    addresses = [a for a in (raw.get("PrivateIpAddress"), raw.get("PublicIpAddress")) if a]
    reason = raw.get("StateReason", {}).get("Message", "")
    return Instance(raw["InstanceId"], STATES.get(state, InstanceState.PENDING), addresses,
                    message=f"{state}: {reason}" if reason else state)


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start:start + BATCH]
