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

from oneclick import __version__
from oneclick.api.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, Identity, Report
from oneclick.controller.broker.listener import HANDSHAKE_TIMEOUT, HANDSHAKES
from tests.broker.attackers import identity
from tests.broker.staging import StagedMember, member_status, stage_launch
from tests.conftest import kubectl
from tests.controller_process import ControllerProcess

SPEC = {"roles": [{"name": "solo", "image": "base-cluster", "quantity": 2}],
        "hostsFile": False, "sshHostBased": False}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINbLeQVlsV1r+yTe9TMhp6KuWvSujLxnovGTxfNPQej+"
IDENTITY = Identity(hostname="solo-0", fqdn="solo-0.oneclick.local", addresses=["127.20.0.1"],
                    ssh_host_keys=[HOST_KEY]).wire()


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


def test_an_agent_of_another_protocol_version_is_refused_saying_so(
    staged: tuple[dict[str, StagedMember], dict[str, StagedMember]], client: httpx.Client,
    namespace: str,
) -> None:
    auth = headers(staged[0]["one-solo-0"], namespace, "one")
    newer = {**auth, PROTOCOL_HEADER: str(PROTOCOL_VERSION + 1),
             "User-Agent": "occ-agent/9.0.0"}
    refused = client.post("/v1/identity", json=IDENTITY, headers=newer)
    message = refused.json()["message"]
    assert refused.status_code == 400, refused.text
    assert f"speaks protocol {PROTOCOL_VERSION}" in message and __version__ in message
    assert f"occ-agent/9.0.0 speaks protocol {PROTOCOL_VERSION + 1}" in message
    # The agent of this version says which it speaks, and is served; so is one that does not
    # say (version 1, as agents before the header).
    assert client.post("/v1/identity", json=IDENTITY, headers={
        **auth, PROTOCOL_HEADER: str(PROTOCOL_VERSION)}).status_code == 200
    assert client.post("/v1/identity", json=IDENTITY, headers=auth).status_code == 200
    # The broker says its version where a probe or a person looks.
    health = client.get("/healthz").json()
    assert health == {"synced": True, "version": __version__, "protocol": PROTOCOL_VERSION}


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
    # JSON, but not an Identity: 422, naming every field at fault.
    invalid = client.post("/v1/identity", json={"hostname": "x", "addresses": []}, headers=auth)
    message = invalid.json()["message"]
    assert invalid.status_code == 422 and "fqdn" in message and "addresses" in message
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
    assert set(document["paths"]) == {"/v1/identity", "/v1/context", "/v1/report", "/v1/agent"}
    schemas = document["components"]["schemas"]
    assert {"Identity", "Report", "Context", "Pending", "Problem"} <= set(schemas)
    assert "sshHostKeys" in schemas["Identity"]["properties"]


# -- a token dies with its member or its launch --------------------------------------------------

def _everywhere(client: httpx.Client, auth: dict[str, str]) -> list[httpx.Response]:
    """The member's token on each of the endpoints a token opens."""
    return [client.post("/v1/identity", json=IDENTITY, headers=auth),
            client.get("/v1/context", headers=auth),
            client.post("/v1/report", json=Report(ok=True).wire(), headers=auth),
            client.get("/v1/agent", headers=auth)]


def _wait_revoked(client: httpx.Client, auth: dict[str, str], because: str,
                  timeout: float = 30) -> None:
    """Until the broker's cache has seen the change: then every endpoint says 401, revoked."""
    deadline = time.monotonic() + timeout
    while True:
        answers = _everywhere(client, auth)
        if all(a.status_code == 401 for a in answers):
            for answer in answers:
                assert "revoked" in answer.json()["message"], answer.text
                assert because in answer.json()["message"], answer.text
                assert "invalid_token" in answer.headers["WWW-Authenticate"]
            return
        assert time.monotonic() < deadline, [f"{a.status_code} {a.text}" for a in answers]
        time.sleep(0.2)


def _status_patch(kubeconfig: Path, kind: str, name: str, namespace: str,
                  status: dict[str, object]) -> None:
    kubectl(kubeconfig, "patch", kind, name, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}))


async def test_a_token_is_revoked_when_its_launch_is_deleted_even_mid_poll(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    client: httpx.Client,
) -> None:
    members = await asyncio.to_thread(stage_launch, kubeconfig, namespace, "gone", SPEC,
                                      token_key)
    auth = headers(members["gone-solo-0"], namespace, "gone")
    sibling = headers(members["gone-solo-1"], namespace, "gone")
    async with httpx.AsyncClient(base_url=controller.broker_url, verify=controller.tls(),
                                 timeout=60) as polling:
        stored = await polling.post("/v1/identity", json=IDENTITY, headers=auth)
        assert stored.status_code == 200
        # The sibling waits for its context (its own identity is missing) as the launch goes.
        poll = asyncio.create_task(polling.get("/v1/context?wait=50", headers=sibling))
        await asyncio.wait({poll}, timeout=1)
        assert not poll.done(), "the long poll should be held"
        await asyncio.to_thread(kubectl, kubeconfig, "delete", "clusterlaunch", "gone", "-n",
                                namespace, "--wait=false")
        answer = await asyncio.wait_for(poll, 20)
    assert answer.status_code == 401 and "revoked" in answer.json()["message"]
    await asyncio.to_thread(_wait_revoked, client, auth, "launch gone is gone")


@pytest.mark.parametrize("phase, on_failure, because", [
    ("Expired", "BackOut", "expired"),
    ("Failed", "BackOut", "failed and its instances were terminated"),
])
def test_a_token_is_revoked_when_its_launch_ends(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    client: httpx.Client, phase: str, on_failure: str, because: str,
) -> None:
    members = stage_launch(kubeconfig, namespace, "ends", {**SPEC, "onFailure": on_failure},
                           token_key)
    auth = headers(members["ends-solo-0"], namespace, "ends")
    assert client.post("/v1/identity", json=IDENTITY, headers=auth).status_code == 200
    _status_patch(kubeconfig, "clusterlaunch", "ends", namespace, {"phase": phase})
    _wait_revoked(client, auth, because)


def test_a_failed_launch_that_keeps_its_instances_keeps_its_tokens(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    client: httpx.Client,
) -> None:
    kept = stage_launch(kubeconfig, namespace, "kept", {**SPEC, "onFailure": "Keep"},
                        token_key)
    backed_out = stage_launch(kubeconfig, namespace, "out", SPEC, token_key)
    auth = headers(kept["kept-solo-0"], namespace, "kept")
    assert client.post("/v1/identity", json=IDENTITY, headers=auth).status_code == 200
    _status_patch(kubeconfig, "clusterlaunch", "kept", namespace, {"phase": "Failed"})
    _status_patch(kubeconfig, "clusterlaunch", "out", namespace, {"phase": "Failed"})
    # The broker's cache sees launches in order: once the second one's token is refused, it
    # has seen the first one fail too.
    _wait_revoked(client, headers(backed_out["out-solo-0"], namespace, "out"), "failed")
    answer = client.get("/v1/context", headers=auth)
    assert answer.status_code == 200 and answer.json()["cluster"] == "kept"


def test_a_token_is_revoked_when_its_member_is_terminated_or_deleted(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
    client: httpx.Client,
) -> None:
    members = stage_launch(kubeconfig, namespace, "shrink", SPEC, token_key)
    first = headers(members["shrink-solo-0"], namespace, "shrink")
    second = headers(members["shrink-solo-1"], namespace, "shrink")
    assert client.post("/v1/identity", json=IDENTITY, headers=first).status_code == 200
    assert client.post("/v1/identity", json=identity("solo-1", "127.20.0.2"),
                       headers=second).status_code == 200

    _status_patch(kubeconfig, "lm", "shrink-solo-0", namespace, {"phase": "Terminated"})
    _wait_revoked(client, first, "was terminated")

    # Deleted, but held by a finalizer: gone as far as its token goes.
    kubectl(kubeconfig, "patch", "lm", "shrink-solo-1", "-n", namespace, "--type=merge", "-p",
            json.dumps({"metadata": {"finalizers": ["oneclick.test/hold"]}}))
    kubectl(kubeconfig, "delete", "lm", "shrink-solo-1", "-n", namespace, "--wait=false")
    try:
        _wait_revoked(client, second, "is being deleted")
    finally:
        kubectl(kubeconfig, "patch", "lm", "shrink-solo-1", "-n", namespace, "--type=merge",
                "-p", json.dumps({"metadata": {"finalizers": None}}))


def test_a_member_that_reported_still_reads_its_context_while_its_launch_lives(
    staged: tuple[dict[str, StagedMember], dict[str, StagedMember]], client: httpx.Client,
    namespace: str,
) -> None:
    auth = headers(staged[0]["one-solo-0"], namespace, "one")
    assert client.post("/v1/identity", json=IDENTITY, headers=auth).status_code == 200
    assert client.post("/v1/report", json=Report(ok=True).wire(), headers=auth).status_code == 200
    answer = client.get("/v1/context", headers=auth)
    assert answer.status_code == 200 and answer.json()["member"]["member"] == "one-solo-0"
