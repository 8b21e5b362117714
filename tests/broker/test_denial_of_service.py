"""Strangers and members trying to wear the broker out: silent connections by the thousand,
heads sent a byte at a time or larger than any request needs, an identity rewritten in a
loop. The broker refuses each at its limit, says so, and keeps serving the others.

The session's controller runs here with small limits (settings, as an operator sets them), so
that every attack reaches them within seconds; it gets its own settings back afterwards."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oneclick.controller.broker.server import IDENTITY_CHANGES
from tests.broker.attackers import (
    closed_by_server,
    headers,
    host_key,
    identity,
    metric,
    open_tls,
    refused,
)
from tests.broker.staging import StagedMember, member_status, stage_launch
from tests.conftest import kubectl
from tests.controller_process import ControllerProcess

IDLE, HEADER, TOTAL, PER_SOURCE = 10.0, 2.0, 60, 30
LIMITS = {"OCC_BROKER_IDLE_TIMEOUT": str(IDLE), "OCC_BROKER_HEADER_TIMEOUT": str(HEADER),
          "OCC_BROKER_MAX_CONNECTIONS": str(TOTAL),
          "OCC_BROKER_MAX_CONNECTIONS_PER_SOURCE": str(PER_SOURCE)}
ATTACKER, MEMBER = "127.0.0.1", "127.0.0.2"  # (any 127.x address is this machine)
PROMPTLY = 5.0  # seconds: a member's request on a busy test machine
SPEC = {"roles": [{"name": "solo", "image": "base-cluster", "quantity": 3}]}


@pytest.fixture(scope="module")
def strict(controller: ControllerProcess) -> Iterator[ControllerProcess]:
    """The session's controller restarted with small limits, then with its own again."""
    saved = dict(controller.extra_env)
    controller.stop()
    controller.extra_env.update(LIMITS)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()
        controller.extra_env.clear()
        controller.extra_env.update(saved)
        controller.start()


@pytest.fixture
def staged(strict: ControllerProcess, kubeconfig: Path, namespace: str,
           token_key: bytes) -> dict[str, StagedMember]:
    return stage_launch(kubeconfig, namespace, "dos", SPEC, token_key)


def member_client(controller: ControllerProcess) -> httpx.AsyncClient:
    """A well-behaved member, reaching the broker from an address of its own."""
    transport = httpx.AsyncHTTPTransport(verify=controller.tls(), local_address=MEMBER,
                                         limits=httpx.Limits(max_connections=10))
    return httpx.AsyncClient(base_url=controller.broker_url, transport=transport, timeout=30)


async def no_connections_open(controller: ControllerProcess, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while metric(controller, "occ_broker_connections") > 0:
        assert time.monotonic() < deadline, "the broker still counts connections as open"
        await asyncio.sleep(0.2)


async def test_silent_connections_beyond_the_per_source_cap_are_refused(
    strict: ControllerProcess, staged: dict[str, StagedMember], namespace: str,
) -> None:
    await no_connections_open(strict)
    before = metric(strict, "occ_broker_connections_refused_total", reason="per_source")
    held = await asyncio.gather(*(open_tls(strict, ATTACKER)  # and then say nothing
                                  for _ in range(PER_SOURCE)))

    # More from the same address are closed before any TLS ...
    assert [await refused(strict, ATTACKER) for _ in range(10)] == [True] * 10
    # ... while a member elsewhere is served at once.
    started = time.monotonic()
    async with member_client(strict) as client:
        answer = await client.post("/v1/identity", json=identity("solo-0", "127.30.0.1"),
                                   headers=headers(staged["dos-solo-0"], namespace, "dos"))
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started < PROMPTLY

    assert metric(strict, "occ_broker_connections_refused_total",
                  reason="per_source") - before >= 10
    log = strict.log.read_text()
    assert "too many connections: refused" in log and "from 127.0.0.1" in log

    # Once the attacker lets go, its address is welcome again.
    for _, writer in held:
        writer.close()
    await no_connections_open(strict)
    assert not await refused(strict, ATTACKER)


async def test_connections_beyond_the_total_cap_are_refused_until_some_close(
    strict: ControllerProcess,
) -> None:
    await no_connections_open(strict)
    before = metric(strict, "occ_broker_connections_refused_total", reason="total")
    held = await asyncio.gather(*(open_tls(strict, source)
                                  for source in ("127.0.0.3", "127.0.0.4")
                                  for _ in range(TOTAL // 2)))
    assert metric(strict, "occ_broker_connections") == TOTAL
    assert await refused(strict, "127.0.0.5")  # a newcomer: the broker is full
    assert metric(strict, "occ_broker_connections_refused_total", reason="total") == before + 1

    for _, writer in held:
        writer.close()
    await no_connections_open(strict)  # every closed connection is counted out
    assert not await refused(strict, "127.0.0.5")


async def test_idle_connections_are_closed_but_long_polls_are_not(
    strict: ControllerProcess, staged: dict[str, StagedMember], namespace: str,
) -> None:
    silent, _ = await open_tls(strict)  # TLS, then nothing
    once, writer = await open_tls(strict)  # one request, then nothing
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n")
    assert b" 200 " in await once.readline()
    started = time.monotonic()

    async with member_client(strict) as client:
        # A member long-polling for longer than the idle timeout is no idle connection.
        poll = asyncio.create_task(client.get(
            f"/v1/context?wait={IDLE + 2:.0f}",
            headers=headers(staged["dos-solo-0"], namespace, "dos")))
        assert await closed_by_server(silent, IDLE + 10)
        assert await closed_by_server(once, IDLE + 10)
        assert time.monotonic() - started > IDLE - 1  # kept a while, not refused
        answer = await poll
    assert answer.status_code == 202 and answer.json()["missing"] == 3


async def test_a_head_sent_a_byte_at_a_time_is_cut_off_and_others_are_served(
    strict: ControllerProcess, staged: dict[str, StagedMember], namespace: str,
) -> None:
    before = metric(strict, "occ_broker_connections_cut_total", reason="header_timeout")
    member = staged["dos-solo-1"]
    reader, writer = await open_tls(strict)
    head = "".join(f"{name}: {value}\r\n" for name, value in {
        "Host": "broker", **headers(member, namespace, "dos"),
        "Content-Type": "application/json"}.items())
    head = f"POST /v1/identity HTTP/1.1\r\n{head}\r\n"

    async def dribble() -> None:  # the attack: each byte just in time for TCP, never enough
        for byte in head.encode():
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    sending = asyncio.create_task(dribble())
    started = time.monotonic()
    async with member_client(strict) as client:  # meanwhile, another member is served
        answer = await client.post("/v1/identity", json=identity("solo-2", "127.30.0.3"),
                                   headers=headers(staged["dos-solo-2"], namespace, "dos"))
        assert answer.status_code == 200, answer.text
    status_line = await asyncio.wait_for(reader.readline(), IDLE + 10)
    cut_after = time.monotonic() - started
    sending.cancel()
    assert b" 408 " in status_line
    assert HEADER - 0.5 < cut_after < IDLE, f"cut after {cut_after:.1f}s"  # not the idle timeout
    assert await closed_by_server(reader, 5)
    assert metric(strict, "occ_broker_connections_cut_total",
                  reason="header_timeout") == before + 1


async def test_heads_larger_than_any_request_needs_are_refused(
    strict: ControllerProcess, staged: dict[str, StagedMember], namespace: str,
) -> None:
    auth = "".join(f"{k}: {v}\r\n" for k, v in headers(
        staged["dos-solo-0"], namespace, "dos").items())
    # Many lines, each within bounds, never ending: cut at the head limit.
    reader, writer = await open_tls(strict)
    writer.write(f"GET /v1/context HTTP/1.1\r\nHost: broker\r\n{auth}".encode() + b"".join(
        f"X-Filler-{i}: {'a' * 1000}\r\n".encode() for i in range(20)))
    assert b" 431 " in await asyncio.wait_for(reader.readline(), 10)
    assert await closed_by_server(reader, 5)
    # One line too long, or too many lines: aiohttp's own bounds.
    for extra in ("X-Long: " + "b" * 5000 + "\r\n",
                  "".join(f"X-Many-{i}: c\r\n" for i in range(40))):
        reader, writer = await open_tls(strict)
        writer.write(f"GET /v1/context HTTP/1.1\r\nHost: broker\r\n{auth}{extra}\r\n".encode())
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert b" 400 " in status_line or b" 431 " in status_line, status_line
        writer.close()
    # A long query string is a long request line.
    reader, writer = await open_tls(strict)
    writer.write(f"GET /v1/context?wait=1&x={'d' * 5000} HTTP/1.1\r\nHost: broker\r\n{auth}"
                 "\r\n".encode())
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert b" 400 " in status_line or b" 414 " in status_line, status_line
    writer.close()


def member_object(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(kubectl(kubeconfig, "get", "lm", name, "-n", namespace,
                                             "-o", "json").stdout)
    return obj


async def test_identity_rewrites_are_bounded_and_the_count_survives_a_restart(
    strict: ControllerProcess, staged: dict[str, StagedMember], namespace: str,
    kubeconfig: Path,
) -> None:
    me = staged["dos-solo-0"]
    key = host_key()

    def moved(step: int) -> dict[str, Any]:  # the same host, at another address each time
        return identity("solo-0", f"127.21.0.{step + 1}", key)

    async with member_client(strict) as client:
        async def send(body: dict[str, Any]) -> httpx.Response:
            return await client.post("/v1/identity", json=body,
                                     headers=headers(me, namespace, "dos"))

        assert (await send(moved(0))).status_code == 200  # the first is no change
        for step in range(1, IDENTITY_CHANGES + 1):
            answer = await send(moved(step))
            assert answer.status_code == 200, f"change {step}: {answer.text}"
        stored = member_object(kubeconfig, namespace, me.name)
        assert stored["status"]["identityChanges"] == IDENTITY_CHANGES

        over = await send(moved(IDENTITY_CHANGES + 1))
        assert over.status_code == 429
        assert f"{IDENTITY_CHANGES} times" in over.json()["message"]
        # The same identity again is fine, and costs no write.
        assert (await send(moved(IDENTITY_CHANGES))).status_code == 200
        after = member_object(kubeconfig, namespace, me.name)
        assert after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
        assert after["status"]["identity"]["addresses"] == [f"127.21.0.{IDENTITY_CHANGES + 1}"]

    strict.stop()
    strict.start()
    async with member_client(strict) as client:
        again = await client.post("/v1/identity", json=moved(IDENTITY_CHANGES + 2),
                                  headers=headers(me, namespace, "dos"))
    assert again.status_code == 429, again.text
    assert member_status(kubeconfig, namespace, me.name)["identityChanges"] == IDENTITY_CHANGES


async def test_concurrent_rewrites_do_not_slip_past_the_count(
    strict: ControllerProcess, staged: dict[str, StagedMember], namespace: str,
    kubeconfig: Path,
) -> None:
    me, key = staged["dos-solo-1"], host_key()
    async with member_client(strict) as client:
        answers = await asyncio.gather(*(
            client.post("/v1/identity", json=identity("solo-1", f"127.22.0.{step}", key),
                        headers=headers(me, namespace, "dos"))
            for step in range(1, 2 * IDENTITY_CHANGES + 1)))
    codes = Counter(answer.status_code for answer in answers)
    assert set(codes) <= {200, 429}, codes
    # Every 200 but the first was a change, and each one was counted.
    status = member_status(kubeconfig, namespace, me.name)
    assert status.get("identityChanges", 0) == codes[200] - 1 <= IDENTITY_CHANGES
