"""A tenant may create ClusterLaunches in its namespace. Through a launch's data items it must
never get a Secret or ConfigMap onto a VM it controls that it should not have: not another
namespace's (whatever the reference says), not a Secret through a ConfigMap reference, not one
of its own namespace that does not opt in to delivery, even when it may not read Secrets at
all. Each attack goes through the real API server, controller, broker and agents; the launch
says why data is withheld, and the member keeps waiting rather than seeing an error."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oneclick.api import DELIVERABLE
from oneclick.api.launch import (
    ClusterLaunchSpec,
    DataItem,
    DataSource,
    KeySelector,
    Requirements,
    Role,
)
from oneclick.api.protocol import Bootstrap
from oneclick.controller.broker import data as broker_data
from oneclick.kits.kube import ApiError, KubeClient, core_path
from oneclick.kits.resources import custom_path
from tests.conftest import kubectl
from tests.controller.launches import create, events, get, sample, wait_for_phase
from tests.controller_process import ControllerProcess

FIELD = "spec.data[0].valueFrom.secretKeyRef"


# -- the tenant's story, and what it sees --------------------------------------------------------

@pytest.fixture
def victim(kubeconfig: Path, namespace: str) -> Iterator[str]:
    """Another namespace, with a Secret that opts in to delivery there (to its own launches)."""
    other = f"{namespace[:50]}-victim"
    kubectl(kubeconfig, "create", "namespace", other)
    secret(kubeconfig, other, "shared-ca", {"tls.key": b"VICTIM-CA-PRIVATE-KEY"}, labelled=True)
    yield other
    kubectl(kubeconfig, "delete", "namespace", other, "--wait=false")


def secret(kubeconfig: Path, namespace: str, name: str, data: dict[str, bytes],
           labelled: bool) -> None:
    labels = {DELIVERABLE: "true"} if labelled else {}
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}))


def launch_document(*refs: tuple[str, str, str, str]) -> dict[str, Any]:
    """One workstation requiring data items, each (item, secretKeyRef|configMapKeyRef, name,
    key)."""
    document = sample("single-node.yaml")
    document["metadata"] = {"generateName": "tenant-"}
    document["spec"]["roles"][0]["requires"] = {"data": [item for item, *_ in refs]}
    document["spec"]["data"] = [{"name": item, "valueFrom": {ref: {"name": name, "key": key}}}
                                for item, ref, name, key in refs]
    return document


def data_condition(kubeconfig: Path, namespace: str, name: str, status: str,
                   timeout: float = 120.0) -> dict[str, Any]:
    """The launch's DataDelivered condition, once it has this status."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        launch = get(kubeconfig, namespace, "cl", name) or {}
        conditions: list[dict[str, Any]] = (launch.get("status") or {}).get("conditions", [])
        last = next((c for c in conditions if c["type"] == "DataDelivered"), None)
        if last is not None and last["status"] == status:
            return last
        time.sleep(0.5)
    raise AssertionError(f"DataDelivered of {name} never became {status}; last: {last}")


def instance_directory(local_state: Path, namespace: str, member: str,
                       timeout: float = 120.0) -> Path:
    """Where the local provider keeps the member's VM: its root directory is root/."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in local_state.glob("instances/*/instance.json"):
            found = json.loads(record.read_text())
            if found["namespace"] == namespace and found["member"] == member:
                return record.parent
        time.sleep(0.5)
    raise AssertionError(f"no instance for {member}")


def member_asks_for_context(controller: ControllerProcess, directory: Path) -> httpx.Response:
    """GET /v1/context over TLS with the bootstrap the member itself was given."""
    bootstrap = Bootstrap.model_validate_json(
        (directory / "root/var/lib/oneclick/bootstrap.json").read_text())
    with httpx.Client(base_url=controller.broker_url, verify=controller.tls(),
                      timeout=30) as client:
        return client.get("/v1/context", params={"wait": "0"}, headers={
            "Authorization": f"Bearer {bootstrap.token}",
            "OneClick-Member": f"{bootstrap.namespace}/{bootstrap.cluster}/{bootstrap.member}"})


def broker_server_errors(controller: ControllerProcess) -> float:
    """How many context requests the broker has answered with a 5xx so far."""
    served = httpx.get(controller.metrics_url, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in served.splitlines()
               if line.startswith("occ_broker_requests_total{") and 'code="5' in line
               and "/v1/context" in line)


def found_on_member(directory: Path, secret_value: bytes) -> list[str]:
    """Every file of the member's VM (its root, its logs) that holds the value."""
    holders = []
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if secret_value in path.read_bytes():
                    holders.append(str(path.relative_to(directory)))
            except OSError:
                continue
    return holders


def withheld(controller: ControllerProcess, kubeconfig: Path, local_state: Path,
             namespace: str, name: str, value: bytes) -> tuple[dict[str, Any], httpx.Response]:
    """The launch's DataDelivered condition and its member's answer from the broker once the
    member has provided identity and waits only for data; the value is nowhere on the
    member."""
    condition = data_condition(kubeconfig, namespace, name, "False")
    directory = instance_directory(local_state, namespace, f"{name}-workstation-0")
    deadline = time.monotonic() + 120
    while True:
        answer = member_asks_for_context(controller, directory)
        assert answer.status_code == 202, answer.text  # waiting: never an error, never data
        if all(w.startswith("data:") for w in answer.json()["waitingFor"]):
            break
        assert time.monotonic() < deadline, f"the member never provided identity: {answer.text}"
        time.sleep(0.5)
    assert not (directory / "root/var/lib/oneclick/context.json").exists()
    assert found_on_member(directory, value) == []
    return condition, answer


# -- 1. names are Kubernetes names: the API server refuses anything else -------------------------

@pytest.mark.parametrize("name", [
    "../../{victim}/secrets/shared-ca",  # the traversal the HTTP client used to normalise
    "x/../../../{victim}/secrets/shared-ca",
    "..%2F..%2F{victim}%2Fsecrets%2Fshared-ca",
    "shared-ca/status",
    "..",
    ".",
    "Shared-CA",
    "shared-ca?namespace={victim}",
    "-shared-ca",
    "a" * 254,
])
def test_a_reference_that_is_not_an_object_name_is_refused_by_the_api_server(
    crds: Path, kubeconfig: Path, namespace: str, name: str,
) -> None:
    hostile = name.format(victim="kube-system")
    for ref in ("secretKeyRef", "configMapKeyRef"):
        document = launch_document(("gridmap", ref, hostile, "gridmap"))
        document["metadata"] = {"name": "hostile", "namespace": namespace}
        refused = kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(document),
                          check=False)
        assert refused.returncode != 0, f"{ref}.name {hostile!r} was accepted"
        assert f"spec.data[0].valueFrom.{ref}.name" in refused.stderr, refused.stderr
        assert ("must be the name of a Secret or ConfigMap" in refused.stderr
                or "may not be more than 253" in refused.stderr), refused.stderr
    assert get(kubeconfig, namespace, "cl", "hostile") is None


@pytest.mark.parametrize("key", ["../tls.key", "a/b", "..data", ".", "tls key", "k" * 254])
def test_a_key_that_is_not_a_secret_key_is_refused_by_the_api_server(
    crds: Path, kubeconfig: Path, namespace: str, key: str,
) -> None:
    document = launch_document(("gridmap", "secretKeyRef", "gridmap", key))
    document["metadata"] = {"name": "hostile", "namespace": namespace}
    refused = kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(document), check=False)
    assert refused.returncode != 0, f"key {key!r} was accepted"
    assert f"{FIELD}.key" in refused.stderr, refused.stderr
    assert ("must be a key of a Secret or ConfigMap" in refused.stderr
            or "may not be more than 253" in refused.stderr), refused.stderr


@pytest.mark.parametrize("item", ["../../etc/cron.d/x", "a/b", "..", ".hidden", "x" * 64])
def test_a_data_item_name_that_is_not_a_file_name_is_refused_by_the_api_server(
    crds: Path, kubeconfig: Path, namespace: str, item: str,
) -> None:
    """Each agent writes an item to /var/lib/oneclick/data/<name>: a name is one file name,
    never a path out of that directory."""
    document = launch_document((item, "secretKeyRef", "gridmap", "gridmap"))
    document["metadata"] = {"name": "hostile", "namespace": namespace}
    refused = kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(document), check=False)
    assert refused.returncode != 0, f"data item {item!r} was accepted"
    assert "spec.data[0].name" in refused.stderr, refused.stderr
    assert get(kubeconfig, namespace, "cl", "hostile") is None


# -- 2 and 3. the controller's own reading never leaves the launch's namespace -------------------


def unchecked_spec(secret_names: list[str]) -> ClusterLaunchSpec:
    """A spec whose data items name these Secrets, as one that reached the controller past the
    API server's checks would (an older schema, a direct write to etcd): the models' own
    checks are skipped too."""
    names = [f"d{i}" for i in range(len(secret_names))]
    return ClusterLaunchSpec.model_construct(
        roles=[Role(name="w", image="base-cluster", requires=Requirements(data=names))],
        data=[DataItem.model_construct(
            name=item, value=None, generate=None, value_from=DataSource.model_construct(
                config_map_key_ref=None, secret_key_ref=KeySelector.model_construct(
                    name=secret, key="tls.key")))
            for item, secret in zip(names, secret_names, strict=True)])


async def test_hostile_names_that_bypass_the_api_server_never_reach_another_namespace(
    crds: Path, kubeconfig: Path, namespace: str, victim: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A launch that never met the API server's validation (an older schema, a direct write):
    the controller's reader, with the controller's rights, still reaches nothing foreign."""
    traversal = f"../../{victim}/secrets/shared-ca"
    kube = KubeClient(kubeconfig)
    try:
        # The attack is real: joined unescaped, the client normalises `..` and the API
        # server hands over the other namespace's Secret (this is what the reader once did).
        leaked = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{traversal}")
        assert leaked["metadata"]["namespace"] == victim

        # Escaped, the same name is one segment of this namespace's path: nothing is found.
        path = core_path("secrets", namespace, traversal)
        assert path == (f"/api/v1/namespaces/{namespace}/secrets/"
                        f"..%2F..%2F{victim}%2Fsecrets%2Fshared-ca")
        with pytest.raises(ApiError) as refused:
            await kube.get(path)
        assert refused.value.status in (400, 404)
        for segment in ("..", ".", ""):
            with pytest.raises(ValueError, match="segment"):
                core_path("secrets", namespace, segment)
            with pytest.raises(ValueError, match="segment"):
                custom_path("ClusterLaunch", namespace, segment)
        with pytest.raises(ValueError, match="segment"):
            core_path("secrets", "..", "shared-ca")

        # The reader refuses such names before any request; the value is never returned.
        hostile = [traversal, f"..%2F..%2F{victim}%2Fsecrets%2Fshared-ca", "..", "a/b", ""]
        spec = unchecked_spec(hostile)
        found = await broker_data.read_data(kube, namespace, spec)
        assert found.values == {}
        assert {p.reason for p in found.problems.values()} == {broker_data.Reason.INVALID}
        assert "is not the name of a Secret" in found.problems["d0"].message

        # Even with the name check and the escaping both taken away (the reader as it was),
        # what comes back is checked to be the object asked for, in the launch's namespace.
        monkeypatch.setattr(broker_data, "DNS_SUBDOMAIN", r".*")
        monkeypatch.setattr(broker_data, "core_path", lambda plural, ns, name: (
            f"/api/v1/namespaces/{ns}/{plural}/{name}"))
        found = await broker_data.read_data(kube, namespace, unchecked_spec(hostile[:1]))
        assert found.values == {}
        assert found.problems["d0"].reason == broker_data.Reason.WITHHELD
        assert "VICTIM" not in repr(found)
    finally:
        await kube.aclose()


# -- 3. a ConfigMap reference reads ConfigMaps ---------------------------------------------------

def test_a_config_map_reference_never_delivers_a_secret(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    secret(kubeconfig, namespace, "creds", {"token": b"SECRET-THROUGH-A-CONFIGMAP"},
           labelled=True)
    name = create(kubeconfig, namespace, launch_document(
        ("gridmap", "configMapKeyRef", "creds", "token")))
    condition, answer = withheld(controller, kubeconfig, local_state, namespace, name,
                                 b"SECRET-THROUGH-A-CONFIGMAP")
    assert condition["reason"] == "DataWithheld"
    assert condition["message"].startswith(f"data gridmap: ConfigMap creds of namespace "
                                           f"{namespace} is not there or does not opt in")
    assert answer.json()["waitingFor"] == ["data:gridmap"]
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")


# -- 4. only what opts in is delivered ------------------------------------------------------------

def test_an_unlabelled_secret_is_withheld_until_its_owner_opts_in(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    mapfile = b'"/O=Grid/CN=Opted In" jobrun\n'
    secret(kubeconfig, namespace, "gridmap-src", {"gridmap": mapfile}, labelled=False)
    name = create(kubeconfig, namespace, launch_document(
        ("gridmap", "secretKeyRef", "gridmap-src", "gridmap")))

    condition, answer = withheld(controller, kubeconfig, local_state, namespace, name, mapfile)
    why = (f"data gridmap: Secret gridmap-src of namespace {namespace} is not there or does "
           f"not opt in to delivery (label {DELIVERABLE}=true)")
    assert (condition["reason"], condition["message"]) == ("DataWithheld", why)
    assert answer.json() == {"waitingFor": ["data:gridmap"], "missing": 1, "reasons": [why]}
    deadline = time.monotonic() + 30  # and a Warning event says so
    while "DataWithheld" not in events(kubeconfig, namespace, name):
        assert time.monotonic() < deadline, "no DataWithheld event"
        time.sleep(0.5)
    time.sleep(3)  # it stays withheld: the member waits, the launch does not go Ready
    assert (get(kubeconfig, namespace, "cl", name) or {})["status"]["phase"] != "Ready"

    # Whoever owns the Secret opts it in: the member receives it and the launch completes.
    kubectl(kubeconfig, "label", "secret", "gridmap-src", "-n", namespace,
            f"{DELIVERABLE}=true")
    launch = wait_for_phase(kubeconfig, namespace, name, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", json.dumps(launch["status"], indent=1)
    delivered = data_condition(kubeconfig, namespace, name, "True")
    assert delivered["reason"] == "DataAvailable"
    root = instance_directory(local_state, namespace, f"{name}-workstation-0") / "root"
    assert (root / "var/lib/oneclick/data/gridmap").read_bytes() == mapfile
    assert (root / "etc/grid-security/grid-mapfile").read_bytes() == mapfile
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")


# -- 5. a value that is not text, a key that is not there: a condition, never a server error ------

def test_a_value_that_is_not_utf8_or_not_there_is_a_clear_condition_not_a_server_error(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    server_errors = broker_server_errors(controller)
    binary = b"\xff\xfe\x00BINARY-NOT-TEXT\x80"
    secret(kubeconfig, namespace, "keys", {"gridmap": binary}, labelled=True)
    name = create(kubeconfig, namespace, launch_document(
        ("gridmap", "secretKeyRef", "keys", "gridmap"),
        ("motd", "secretKeyRef", "keys", "motd")))
    condition, answer = withheld(controller, kubeconfig, local_state, namespace, name,
                                 b"BINARY-NOT-TEXT")
    assert condition["reason"] == "DataInvalid"
    assert condition["message"] == ("data gridmap: key gridmap of Secret keys is not UTF-8 "
                                    "text; data motd: Secret keys has no key motd")
    assert answer.json()["waitingFor"] == ["data:gridmap", "data:motd"]
    assert answer.json()["reasons"] == condition["message"].split("; ")
    assert broker_server_errors(controller) == server_errors, "the broker answered 5xx"
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")


# -- another namespace's data is out of reach, labelled or not -------------------------------------

def test_a_labelled_secret_of_another_namespace_is_never_delivered(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
    victim: str,
) -> None:
    # The path to it is not a name: refused when the launch is made.
    document = launch_document(
        ("ca", "secretKeyRef", f"../../{victim}/secrets/shared-ca", "tls.key"))
    refused = kubectl(kubeconfig, "create", "-n", namespace, "-f", "-",
                      stdin=json.dumps(document), check=False)
    assert refused.returncode != 0 and f"{FIELD}.name" in refused.stderr

    # Its bare name is looked up in the launch's own namespace only, where it is not.
    name = create(kubeconfig, namespace, launch_document(
        ("ca", "secretKeyRef", "shared-ca", "tls.key")))
    condition, _ = withheld(controller, kubeconfig, local_state, namespace, name,
                            b"VICTIM-CA-PRIVATE-KEY")
    assert condition["message"].startswith(f"data ca: Secret shared-ca of namespace "
                                           f"{namespace} is not there")
    kubectl(kubeconfig, "delete", "cl", name, "-n", namespace, "--wait=false")


# -- the confused deputy: may create launches, may not read Secrets --------------------------------

def test_a_tenant_who_may_not_read_secrets_cannot_have_one_delivered(
    controller: ControllerProcess, kubeconfig: Path, namespace: str, local_state: Path,
) -> None:
    tenant = f"mallory-{os.urandom(3).hex()}"
    kubectl(kubeconfig, "create", "role", "launcher", "-n", namespace,
            "--verb=create,get,list,watch,delete", "--resource=clusterlaunches")
    kubectl(kubeconfig, "create", "rolebinding", "launcher", "-n", namespace,
            "--role=launcher", f"--user={tenant}")
    as_tenant = ("--as", tenant, "-n", namespace)
    assert kubectl(kubeconfig, "auth", "can-i", "create", "clusterlaunches",
                   *as_tenant, check=False).stdout.strip() == "yes"
    assert kubectl(kubeconfig, "auth", "can-i", "get", "secrets", *as_tenant,
                   check=False).stdout.strip() == "no"
    secret(kubeconfig, namespace, "db-password", {"password": b"HUNTER2-DB-PASSWORD"},
           labelled=False)
    forbidden = kubectl(kubeconfig, "get", "secret", "db-password", *as_tenant, check=False)
    assert forbidden.returncode != 0 and "forbidden" in forbidden.stderr

    made = kubectl(kubeconfig, "create", *as_tenant, "-o", "jsonpath={.metadata.name}",
                   "-f", "-", stdin=json.dumps(launch_document(
                       ("password", "secretKeyRef", "db-password", "password"))))
    name = made.stdout.strip()
    condition, answer = withheld(controller, kubeconfig, local_state, namespace, name,
                                 b"HUNTER2-DB-PASSWORD")
    assert condition["reason"] == "DataWithheld"
    assert answer.json()["waitingFor"] == ["data:password"]

    # What the tenant can read of its launch says why, and holds nothing of the Secret.
    seen = kubectl(kubeconfig, "get", "cl", name, *as_tenant, "-o", "json").stdout
    assert "does not opt in to delivery" in seen and "HUNTER2" not in seen
    kubectl(kubeconfig, "delete", "cl", name, *as_tenant, "--wait=false")
