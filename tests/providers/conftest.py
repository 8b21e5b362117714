"""Clouds for the providers' tests: EC2 as the moto server speaks it on loopback (a real HTTP
endpoint), and machines of our own reachable over SSH (members of the local provider)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import pytest

from oneclick.controlplane.local import free_port
from oneclick.kits.kube import KubeClient
from tests.conftest import kubectl
from tests.controller_process import ControllerProcess

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

REGION = "us-east-1"
AMI = "ami-12c6146b"  # one of the images the moto server offers in every region


@pytest.fixture(scope="session")
def ec2_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"),
                                   "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "moto_server exited:\n" + log.read_text()[-2000:]
            try:
                httpx.get(url + "/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "moto_server never answered"
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="session")
def ec2(ec2_endpoint: str) -> EC2Client:
    """The test's own view of the cloud (what the AWS console would show)."""
    return boto3.client("ec2", region_name=REGION, endpoint_url=ec2_endpoint,
                        aws_access_key_id="test", aws_secret_access_key="test")


def create_secret(kubeconfig: Path, namespace: str, name: str, **data: str) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    kubectl(kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))


def secret_reader(kubeconfig: Path, namespace: str) -> Any:
    """Secrets as the controller reads them (from the real API server)."""
    from oneclick.controller.secrets import read_secret

    async def read(name: str) -> dict[str, bytes] | None:
        kube = KubeClient(kubeconfig=kubeconfig)
        try:
            return await read_secret(kube, namespace, name)
        finally:
            await kube.aclose()

    return read


@pytest.fixture(scope="session")
def aws_credentials(controller: ControllerProcess, kubeconfig: Path) -> str:
    create_secret(kubeconfig, controller.namespace, "aws-credentials",
                  accessKeyId="test", secretAccessKey="test")
    return "aws-credentials"


def ec2_provider_entry(endpoint: str, secret: str) -> dict[str, Any]:
    return {"type": "ec2", "region": REGION, "endpointUrl": endpoint, "brokerHost": "127.0.0.1",
            "credentials": {"secret": secret}, "instanceType": "t3.small",
            "images": {"base-cluster": AMI}}
