"""The broker under hostile or broken clients: it refuses what it must, with a clear message,
and keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from api.protocol import Identity, Report
from controller.broker.listener import HANDSHAKE_TIMEOUT, HANDSHAKES
from tests.broker.staging import StagedMember, member_status, stage_launch
from tests.controller_process import ControllerProcess

SPEC = {"roles": [{"name": "solo", "image": "base-cluster", "quantity": 2}],
        "hostsFile": False, "sshHostBased": False}
IDENTITY = Identity(hostname="solo-0", fqdn="solo-0.test", addresses=["127.20.0.1"],
                    ssh_host_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrokerTestKey"]).wire()


def headers(member: StagedMember, namespace: str, cluster: str,
            token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token if token is not None else member.token}",
            "OneClick-Member": f"{namespace}/{cluster}/{member.name}"}


@pytest.fixture
def staged(controller: ControllerProcess, kubeconfig: Path, namespace: str,
           token_key: bytes) -> tuple[dict[str, StagedMember], dict[str, StagedMember]]:
    """Two launches in the test's namespace: `one` and `other`."""
    return (stage_launch(kubeconfig, namespace, "one", SPEC, token_key),
            stage_launch(kubeconfig, namespace, "other", SPEC, token_key))


@pytest.fixture
def client(controller: ControllerProcess) -> httpx.Client:
    return httpx.Client(base_url=controller.broker_url, verify=controller.tls(), timeout=30)


def test_tokens_reach_only_their_own_member_and_cluster(
    staged: tuple[dict[str, StagedMember], dict[str, StagedMember]], client: httpx.Client,
    namespace: str,
) -> None:
    one, other = staged
    me, sibling = one["one-solo-0"], one["one-solo-1"]
    stranger = other["other-solo-0"]

    no_token = client.post("/v1/identity", json=IDENTITY,
                           headers={"OneClick-Member": f"{namespace}/one/{me.name}"})
    assert no_token.status_code == 401 and "bootstrap token is required" in no_token.text
    assert no_token.headers["WWW-Authenticate"].startswith("Bearer")

    wrong = client.post("/v1/identity", json=IDENTITY,
                        headers=headers(me, namespace, "one", token="x" * 43))
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.json()["message"]

    # A sibling's token, presented as this member: refused, and nothing written.
    borrowed = client.post("/v1/identity", json=IDENTITY,
                           headers=headers(me, namespace, "one", token=sibling.token))
    assert borrowed.status_code == 403 and "member" in borrowed.json()["message"]

    # Another cluster's token, presented for this cluster.
    foreign = client.get("/v1/context",
                         headers=headers(me, namespace, "one", token=stranger.token))
    assert foreign.status_code == 403 and "cluster" in foreign.json()["message"]

    missing_header = client.get("/v1/context",
                                headers={"Authorization": f"Bearer {me.token}"})
    assert missing_header.status_code == 400

    ok = client.post("/v1/identity", json=IDENTITY, headers=headers(me, namespace, "one"))
    assert ok.status_code == 200


def test_reports_are_final_and_replays_are_refused(
    staged: tuple[dict[str, StagedMember], dict[str, StagedMember]], client: httpx.Client,
    namespace: str, kubeconfig: Path,
) -> None:
    me = staged[0]["one-solo-0"]
    auth = headers(me, namespace, "one")
    early = client.post("/v1/report", json=Report(ok=True).wire(), headers=auth)
    assert early.status_code == 409 and "identity" in early.json()["message"]
    assert client.post("/v1/identity", json=IDENTITY, headers=auth).status_code == 200
    report = Report(ok=False, failed_step="roles.d/x", exit_code=3, message="boom").wire()
    assert client.post("/v1/report", json=report, headers=auth).status_code == 200
    # The same report again (an agent retrying after a lost answer) is fine ...
    assert client.post("/v1/report", json=report, headers=auth).status_code == 200
    # ... but a different one, or a new identity, is not: the member's outcome is final.
    flipped = client.post("/v1/report", json=Report(ok=True).wire(), headers=auth)
    assert flipped.status_code == 409
    moved = dict(IDENTITY, addresses=["127.20.0.99"])
    assert client.post("/v1/identity", json=moved, headers=auth).status_code == 409
    status = member_status(kubeconfig, namespace, me.name)
    assert status["report"]["exitCode"] == 3 and status["phase"] == "Failed"
    assert status["identity"]["addresses"] == ["127.20.0.1"]


def test_bad_bodies_get_clear_errors(
    staged: tuple[dict[str, StagedMember], dict[str, StagedMember]], client: httpx.Client,
    namespace: str,
) -> None:
    auth = headers(staged[0]["one-solo-0"], namespace, "one")
    oversized = client.post("/v1/identity", content=b"{" + b" " * (70 * 1024) + b"}",
                            headers={**auth, "Content-Type": "application/json"})
    assert oversized.status_code == 413 and "larger than" in oversized.json()["message"]
    malformed = client.post("/v1/identity", content=b'{"hostname": ',
                            headers={**auth, "Content-Type": "application/json"})
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["message"]
    invalid = client.post("/v1/identity", json={"hostname": "x", "addresses": []}, headers=auth)
    message = invalid.json()["message"]
    assert invalid.status_code == 400 and "fqdn" in message and "addresses" in message
    bad_wait = client.get("/v1/context?wait=600", headers=auth)
    assert bad_wait.status_code == 400 and "wait" in bad_wait.json()["message"]
    assert client.get("/v1/nothing-here").status_code == 404


async def test_a_slow_client_is_cut_off_and_others_are_served(
    staged: tuple[dict[str, StagedMember], dict[str, StagedMember]], controller: ControllerProcess,
    namespace: str,
) -> None:
    url = urlparse(controller.broker_url)
    member = staged[0]["one-solo-1"]
    context = controller.tls()
    reader, writer = await asyncio.open_connection(url.hostname, url.port, ssl=context,
                                                   server_hostname=url.hostname)
    body = json.dumps(IDENTITY).encode()
    head = (f"POST /v1/identity HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {member.token}\r\n"
            f"OneClick-Member: {namespace}/one/{member.name}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    writer.write(head.encode() + body[:10])  # ... and then nothing more
    await writer.drain()

    # Meanwhile a well-behaved member is served at once.
    async with httpx.AsyncClient(base_url=controller.broker_url, verify=context) as client:
        other = staged[0]["one-solo-0"]
        answer = await client.post("/v1/identity", json=IDENTITY,
                                   headers=headers(other, namespace, "one"))
        assert answer.status_code == 200

    status_line = await asyncio.wait_for(reader.readline(), 30)
    assert b" 408 " in status_line
    writer.close()
    assert _healthy(controller)


async def test_clients_that_stall_their_handshake_do_not_hold_up_the_others(
    staged: tuple[dict[str, StagedMember], dict[str, StagedMember]], controller: ControllerProcess,
    namespace: str,
) -> None:
    # The broker does a few TLS handshakes at a time (memory); these must not take the turns.
    url = urlparse(controller.broker_url)
    stalled = []
    for _ in range(100):  # connect and say nothing
        stalled.append((await asyncio.open_connection(url.hostname, url.port))[1])
    for _ in range(2 * HANDSHAKES):  # begin a TLS record, then nothing more
        writer = (await asyncio.open_connection(url.hostname, url.port))[1]
        writer.write(b"\x16\x03\x01\x02\x00")
        await writer.drain()
        stalled.append(writer)

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=controller.broker_url, verify=controller.tls()) as client:
        member = staged[0]["one-solo-0"]
        answer = await client.post("/v1/identity", json=IDENTITY,
                                   headers=headers(member, namespace, "one"))
    waited = time.monotonic() - started
    assert answer.status_code == 200
    assert waited < HANDSHAKE_TIMEOUT / 2, f"served after {waited:.1f}s"
    for writer in stalled:
        writer.close()
    assert _healthy(controller)


def _healthy(controller: ControllerProcess) -> bool:
    return httpx.get(f"{controller.broker_url}/healthz", verify=controller.tls()).status_code == 200


def test_plain_http_and_untrusted_clients_get_nothing(controller: ControllerProcess) -> None:
    url = urlparse(controller.broker_url)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{url.netloc}/healthz", timeout=5)
    with pytest.raises((httpx.ConnectError, ssl.SSLError)):
        httpx.get(f"{controller.broker_url}/healthz", verify=ssl.create_default_context())
    assert _healthy(controller)


def test_the_openapi_document_describes_the_protocol(client: httpx.Client) -> None:
    document = client.get("/v1/openapi.json").json()
    assert set(document["paths"]) == {"/v1/identity", "/v1/context", "/v1/report"}
    schemas = document["components"]["schemas"]
    assert {"Identity", "Report", "Context", "Pending", "Problem"} <= set(schemas)
    assert "sshHostKeys" in schemas["Identity"]["properties"]
