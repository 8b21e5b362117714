"""The broker's three endpoints fuzzed from its own published OpenAPI document: requests that
follow the schemas and requests that break them, sent with a member's real token over real
TLS. Whatever arrives, the broker answers without a server error (a 503 only with
Retry-After), as its document says, and never with anything of another launch.

Schemathesis makes the requests from the document (`/v1/openapi.json`, fetched from the
running broker); hypothesis drives them. Its Python API rather than its pytest plugin: the
launches, the token and the TLS trust are this test's own fixtures, staged before the document
is even read, and one test that walks every operation keeps the run bounded as a whole."""

from __future__ import annotations

import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.broker.attackers import host_key, identity
from tests.broker.staging import StagedMember, member_status, stage_launch
from tests.controller_process import ControllerProcess

EXAMPLES = 100  # per operation and mode: 600 requests in all, well under a minute
SLOW = 10.0  # seconds: no answer here may take longer (the fuzzed member's context is complete)


def spec(data_value: str) -> dict[str, Any]:
    return {"roles": [{"name": "solo", "image": "base-cluster", "quantity": 2,
                       "requires": {"data": ["motd"]}}],
            "data": [{"name": "motd", "value": data_value}]}


@pytest.fixture
def launches(controller: ControllerProcess, kubeconfig: Path, namespace: str,
             token_key: bytes) -> tuple[dict[str, StagedMember], list[str]]:
    """The fuzzed launch, complete (every member has identity), and a neighbour in the same
    namespace whose every secret and name is a marker that must never show."""
    suffix = os.urandom(3).hex()
    neighbour_data = f"NEIGHBOUR-DATA-{os.urandom(8).hex()}"
    fuzzed = stage_launch(kubeconfig, namespace, "fuzzed", spec("fuzzed launch data"), token_key)
    neighbour = stage_launch(kubeconfig, namespace, f"neighbour-{suffix}", spec(neighbour_data),
                             token_key)
    keys = [host_key() for _ in neighbour]
    with httpx.Client(base_url=controller.broker_url, verify=controller.tls()) as client:
        for index, member in enumerate(fuzzed.values()):
            _provide(client, namespace, "fuzzed", member,
                     identity(f"solo-{index}", f"127.50.0.{index + 1}"))
        for index, (member, key) in enumerate(zip(neighbour.values(), keys, strict=True)):
            _provide(client, namespace, f"neighbour-{suffix}", member,
                     identity(f"neighbour-{suffix}-{index}", f"127.51.0.{index + 1}", key))
    markers = [f"neighbour-{suffix}", neighbour_data, *(k.split()[1] for k in keys),
               *(m.token for m in [*fuzzed.values(), *neighbour.values()]),
               *(m.uid for m in neighbour.values())]
    return fuzzed, markers


def _provide(client: httpx.Client, namespace: str, cluster: str, member: StagedMember,
             body: dict[str, Any]) -> None:
    answer = client.post("/v1/identity", json=body, headers={
        "Authorization": f"Bearer {member.token}",
        "OneClick-Member": f"{namespace}/{cluster}/{member.name}"})
    assert answer.status_code == 200, answer.text


def test_fuzzed_requests_get_no_server_error_and_nothing_of_another_launch(
    controller: ControllerProcess, launches: tuple[dict[str, StagedMember], list[str]],
    namespace: str, tmp_path: Path,
) -> None:
    fuzzed, markers = launches
    me = fuzzed["fuzzed-solo-0"]
    ca = tmp_path / "broker-ca.pem"
    ca.write_text(controller.ca_pem())
    trust = ssl.create_default_context(cafile=str(ca))
    document = httpx.get(f"{controller.broker_url}/v1/openapi.json", verify=trust).json()
    schema = schemathesis.openapi.from_dict(document)
    assert set(document["paths"]) == {"/v1/identity", "/v1/context", "/v1/report", "/v1/agent"}
    # (GET /v1/agent takes nothing but the headers every endpoint checks: test_security tries
    # it with no token, a stranger's and a revoked one; its answer is a file, not JSON)
    operations = [schema["/v1/identity"]["POST"], schema["/v1/context"]["GET"],
                  schema["/v1/report"]["POST"]]
    session = requests.Session()
    seen: dict[int, int] = {}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode), honest=st.booleans())
            def attack(case: schemathesis.Case[Any], honest: bool) -> None:
                # This member's token (unless the fuzzer drops it, trying auth itself); its own
                # name on the member header, or whatever the fuzzer made of that header.
                sent = {"Authorization": f"Bearer {me.token}"}
                if honest or "OneClick-Member" not in (case.headers or {}):
                    sent["OneClick-Member"] = f"{namespace}/fuzzed/{me.name}"
                try:
                    before = time.monotonic()
                    response = case.call(base_url=controller.broker_url, session=session,
                                         headers=sent, verify=str(ca), timeout=SLOW * 3)
                except (requests.exceptions.InvalidHeader, UnicodeEncodeError):
                    return  # a header no HTTP client can send: nothing reached the broker
                took = time.monotonic() - before
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                described = f"{case.method} {case.formatted_path} -> {response.status_code}"
                assert response.status_code < 500 or (
                    response.status_code == 503 and "Retry-After" in response.headers), (
                    f"{described}: {response.text[:500]}\n{case.as_curl_command()}")
                assert took < SLOW, f"{described} took {took:.1f}s"
                answer = response.text + json.dumps(dict(response.headers))
                leaked = [marker for marker in markers if marker in answer]
                assert not leaked, f"{described} carries {leaked}: {answer[:500]}"
                case.validate_response(response, checks=[
                    status_code_conformance, content_type_conformance,
                    response_schema_conformance])

            attack()

    # It was all heard: every kind of answer, and the member's own context to the end.
    assert {200, 403}.issubset(seen) and any(400 <= code < 500 and code != 403 for code in seen)
    with httpx.Client(base_url=controller.broker_url, verify=trust) as client:
        context = client.get("/v1/context", headers={
            "Authorization": f"Bearer {me.token}",
            "OneClick-Member": f"{namespace}/fuzzed/{me.name}"})
    assert context.status_code == 200 and context.json()["cluster"] == "fuzzed"
    assert not [marker for marker in markers if marker in context.text]


def test_what_the_fuzzer_found_text_beyond_the_bmp_is_stored_and_lone_surrogates_refused(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
) -> None:
    """A step named with an emoji made every status write fail (the API server reads an apply
    patch as YAML, which has no JSON surrogate escapes): a 503, retried by the agent for ever.
    And JSON may carry half a character (a lone surrogate), which nothing can store."""
    me = stage_launch(kubeconfig, namespace, "emoji", spec("data"), token_key)["emoji-solo-0"]
    auth = {"Authorization": f"Bearer {me.token}",
            "OneClick-Member": f"{namespace}/emoji/{me.name}"}
    with httpx.Client(base_url=controller.broker_url, verify=controller.tls()) as client:
        assert client.post("/v1/identity", json=identity("solo-0", "127.52.0.1"),
                           headers=auth).status_code == 200
        half = client.post("/v1/report", content=b'{"ok": true, "message": "\\ud800"}',
                           headers={**auth, "Content-Type": "application/json"})
        assert half.status_code == 400 and "not valid JSON" in half.json()["message"]
        report = {"ok": True, "message": "launched \U0001f680",
                  "steps": [{"name": "roles.d/\U0001f680", "exitCode": 0}],
                  "logTail": "done \u2705 \U0001f680\n"}
        stored = client.post("/v1/report", json=report, headers=auth)
        assert stored.status_code == 200, stored.text
    status = member_status(kubeconfig, namespace, me.name)
    assert status["report"]["message"] == "launched \U0001f680"
    assert status["report"]["logTail"] == "done \u2705 \U0001f680\n"


def test_what_the_api_server_cannot_store_is_refused_not_retried_for_ever(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, token_key: bytes,
) -> None:
    """An exit code beyond 64 bits cannot be stored: the agent must hear a final 422 naming
    the field (the protocol's schema bounds exit codes as the API server does), not a 503 it
    would retry until it gives up."""
    me = stage_launch(kubeconfig, namespace, "huge", spec("data"), token_key)["huge-solo-0"]
    auth = {"Authorization": f"Bearer {me.token}",
            "OneClick-Member": f"{namespace}/huge/{me.name}"}
    with httpx.Client(base_url=controller.broker_url, verify=controller.tls()) as client:
        assert client.post("/v1/identity", json=identity("solo-0", "127.53.0.1"),
                           headers=auth).status_code == 200
        huge = client.post("/v1/report", json={"ok": False, "exitCode": 2**64}, headers=auth)
        assert huge.status_code == 422, huge.text
        assert huge.json()["message"].startswith("invalid Report: exitCode: ")
        # The member can still say how it ended, in numbers the API server keeps.
        assert client.post("/v1/report", json={"ok": False, "exitCode": 3},
                           headers=auth).status_code == 200
    assert member_status(kubeconfig, namespace, me.name)["report"]["exitCode"] == 3
