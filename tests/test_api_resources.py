"""The API: ClusterLaunch and LaunchMember as the API server itself validates them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from oneclick.api.crd import main as crd_main
from tests.conftest import kubectl

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.yaml"))


def test_checked_in_crds_match_the_models() -> None:
    assert crd_main(["--check"]) == 0, "run `python -m oneclick.api.crd` and commit crds/"


def test_the_drift_check_notices_a_changed_crd(tmp_path: Path) -> None:
    assert crd_main([str(tmp_path)]) == 0
    first = tmp_path / "clusters.oneclick.dev_clusterlaunches.yaml"
    first.write_text(first.read_text().replace("must be unique", "should be unique"))
    assert crd_main(["--check", str(tmp_path)]) == 1


def test_kubectl_explain_teaches_the_fields(crds: Path, kubeconfig: Path) -> None:
    explained = kubectl(kubeconfig, "explain", "clusterlaunch.spec.roles").stdout
    assert "How many members to launch for this role (0 to 10000)." in explained
    assert "requires\t<Object>" in explained
    member = kubectl(kubeconfig, "explain", "lm.status.identity").stdout
    assert "SSH host public keys" in member


def test_short_names_and_the_category_resolve(crds: Path, kubeconfig: Path) -> None:
    for resource in ("cl", "launch", "clusterlaunches", "lm", "oneclick"):
        kubectl(kubeconfig, "get", resource, "-A")


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_every_sample_applies_and_reads_back_with_its_defaults(
    sample: Path, crds: Path, kubeconfig: Path, namespace: str
) -> None:
    kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(sample))
    name = yaml.safe_load(sample.read_text())["metadata"]["name"]
    stored = json.loads(kubectl(kubeconfig, "get", "cl", name, "-n", namespace,
                                "-o", "json").stdout)
    spec = stored["spec"]
    assert spec["hostsFile"] is True and spec["sshHostBased"] is True
    assert spec["onFailure"] == "BackOut"
    assert spec["timeouts"] == {"launch": "15m", "contextualization": "15m"}
    assert spec["lifetime"]
    for role in spec["roles"]:
        assert isinstance(role["quantity"], int)
        assert isinstance(role["knownHosts"], bool)
        assert set(role["requires"]) == {"roles", "data"}
    columns = kubectl(kubeconfig, "get", "cl", name, "-n", namespace).stdout.splitlines()[0]
    assert columns.split() == ["NAME", "PHASE", "READY", "HEAD-NODE", "LIFETIME", "AGE"]


def _launch(**spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "roles": [
            {"name": "head-node", "image": "base-cluster", "provides": ["batch-server"],
             "requires": {"data": ["gridmap"]}},
            {"name": "compute-nodes", "image": "base-cluster", "quantity": 2,
             "requires": {"roles": ["batch-server"]}},
        ],
        "data": [{"name": "gridmap", "value": "jobrun"}],
    }
    spec.update(spec_changes)
    return {"apiVersion": "clusters.oneclick.dev/v1alpha1", "kind": "ClusterLaunch",
            "metadata": {"name": "bad"}, "spec": spec}


def _role(**changes: Any) -> dict[str, Any]:
    return {"name": "solo", "image": "base-cluster", **changes}


# Each invalid document, the field the API server must name, and words of its message.
INVALID: dict[str, tuple[dict[str, Any], str, str]] = {
    "duplicate-role-names": (
        _launch(roles=[_role(), _role()]), "spec.roles", "role names must be unique"),
    "role-name-not-dns": (
        _launch(roles=[_role(name="Head_Node")]), "spec.roles[0].name", "DNS-1123 label"),
    "provides-name-not-dns": (
        _launch(roles=[_role(provides=["NFS server"])]), "spec.roles[0].provides[0]",
        "DNS-1123 label"),
    "required-role-not-provided": (
        _launch(roles=[_role(requires={"roles": ["batch-server"]})]), "spec.roles",
        "must be provided by some role entry"),
    "required-data-not-declared": (
        _launch(roles=[_role(requires={"data": ["gridmap"]})], data=[]), "spec.roles",
        "must be declared in spec.data"),
    "duplicate-data-names": (
        _launch(data=[{"name": "gridmap", "value": "a"}, {"name": "gridmap", "value": "b"}]),
        "spec.data", "data names must be unique"),
    "data-with-value-and-value-from": (
        _launch(data=[{"name": "gridmap", "value": "a",
                       "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
        "spec.data[0]", "exactly one of value, valueFrom and generate"),
    "data-with-neither": (
        _launch(data=[{"name": "gridmap"}]), "spec.data[0]",
        "exactly one of value, valueFrom and generate"),
    "value-from-two-sources": (
        _launch(data=[{"name": "gridmap", "valueFrom": {
            "secretKeyRef": {"name": "s", "key": "k"},
            "configMapKeyRef": {"name": "c", "key": "k"}}}]),
        "spec.data[0].valueFrom", "exactly one of secretKeyRef and configMapKeyRef"),
    "negative-quantity": (
        _launch(roles=[_role(quantity=-1)]), "spec.roles[0].quantity",
        "should be greater than or equal to 0"),
    "quantity-too-large": (
        _launch(roles=[_role(quantity=10001)]), "spec.roles[0].quantity",
        "should be less than or equal to 10000"),
    "lifetime-too-short": (
        _launch(lifetime="30s"), "spec.lifetime", "must be between 1m and 8760h"),
    "lifetime-too-long": (
        _launch(lifetime="9000h"), "spec.lifetime", "must be between 1m and 8760h"),
    "lifetime-not-a-duration": (
        _launch(lifetime="forever"), "spec.lifetime", "should match"),
    "launch-timeout-too-short": (
        _launch(timeouts={"launch": "1s"}), "spec.timeouts.launch", "must be between 10s and 24h"),
    "no-roles": (_launch(roles=[]), "spec.roles", "should have at least 1 items"),
    "role-without-image": (
        _launch(roles=[{"name": "solo"}]), "spec.roles[0].image", "Required value"),
    "unknown-field": (
        _launch(roles=[_role(flavor="m1.small")]), "spec.roles[0].flavor", "unknown field"),
    "unknown-failure-policy": (
        _launch(onFailure="Explode"), "spec.onFailure", "Unsupported value"),
    "no-spec": (
        {"apiVersion": "clusters.oneclick.dev/v1alpha1", "kind": "ClusterLaunch",
         "metadata": {"name": "bad"}}, "spec", "Required value"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_the_api_server_refuses_an_invalid_launch_naming_the_field(
    case: str, crds: Path, kubeconfig: Path, namespace: str
) -> None:
    document, field, words = INVALID[case]
    # --validate=strict asks the API server (not kubectl) to check fields.
    refused = kubectl(kubeconfig, "create", "--validate=strict", "-n", namespace, "-f", "-",
                      stdin=json.dumps(document), check=False)
    assert refused.returncode != 0, f"{case} was accepted"
    assert "is invalid" in refused.stderr or "Error from server" in refused.stderr
    assert f"{field}:" in refused.stderr or f'"{field}"' in refused.stderr, refused.stderr
    assert words in refused.stderr, refused.stderr
    assert kubectl(kubeconfig, "get", "cl", "-n", namespace, "-o", "name").stdout == ""


def test_conditions_follow_the_api_conventions(
    crds: Path, kubeconfig: Path, namespace: str
) -> None:
    kubectl(kubeconfig, "create", "-n", namespace, "-f", "-", stdin=json.dumps(_launch()))
    condition: dict[str, Any] = {"type": "Ready", "status": "Maybe", "reason": "Waiting",
                                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
    patch = {"status": {"phase": "Pending", "conditions": [condition]}}
    refused = kubectl(kubeconfig, "patch", "cl", "bad", "-n", namespace, "--subresource=status",
                      "--type=merge", "-p", json.dumps(patch), check=False)
    assert "status.conditions[0].status" in refused.stderr
    assert "Unsupported value" in refused.stderr
    condition.update(status="False", observedGeneration=1)
    kubectl(kubeconfig, "patch", "cl", "bad", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps(patch))
    stored = json.loads(kubectl(kubeconfig, "get", "cl", "bad", "-n", namespace,
                                "-o", "json").stdout)
    assert stored["status"]["conditions"][0]["observedGeneration"] == 1


def test_crd_generation_is_a_command() -> None:
    result = subprocess.run([sys.executable, "-m", "oneclick.api.crd", "--check"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, prop in node.get("properties", {}).items():
        here = f"{path}.{name}"
        if "description" not in prop and name != "metadata":
            missing.append(here)
        missing += _undescribed(prop, here)
        missing += _undescribed(prop.get("items", {}), here + "[]")
    return missing


@pytest.mark.parametrize("crd", sorted((ROOT / "crds").glob("*.yaml")), ids=lambda p: p.name)
def test_every_field_has_a_description(crd: Path) -> None:
    schema = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _undescribed(schema, "") == []
