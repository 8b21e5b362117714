"""The Helm chart: lint, render, install into the real API server, values checked by its
schema, and the controller's rights proven least: with the chart's ServiceAccount a launch
becomes Ready, and without any single one of its rules it does not (the Leases rule among
them: the controller elects its leader with one; the ssh pools' claims stop working without it
too)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from oneclick.controller.providers import config as providers_config
from oneclick.controller.providers.claims import ClaimsError, HostClaims
from oneclick.kits.kube import KubeClient
from tests.conftest import kubectl
from tests.controller.launches import create, events, get, sample
from tests.controller_process import ControllerProcess

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "oneclick"


def helm(binaries: dict[str, Path], *args: str,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(binaries["helm"]), *args], capture_output=True, text=True,
                            timeout=120, check=False, env={**os.environ, "HELM_CACHE_HOME":
                                                           "/tmp/occ-helm-cache"})
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {result.stderr}")
    return result


def render(binaries: dict[str, Path], *sets: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's objects, with `local` as the provider unless `sets` choose another."""
    out = helm(binaries, "template", "oneclick", str(CHART), "-n", "oneclick-system",
               "--set", "defaultProvider=local", *sets).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def test_the_chart_lints(binaries: dict[str, Path]) -> None:
    # (with a provider chosen: without one, rendering stops at the first template)
    linted = helm(binaries, "lint", str(CHART), "--strict", "--set", "defaultProvider=local")
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


def test_the_chart_crds_are_the_generated_ones() -> None:
    for crd in (ROOT / "crds").glob("*.yaml"):
        assert (CHART / "crds" / crd.name).read_text() == crd.read_text(), crd.name


def test_default_values_render_a_locked_down_controller(binaries: dict[str, Path]) -> None:
    objects = render(binaries)
    assert {kind for kind, _ in objects} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
        "Deployment", "Service"}
    deployment = objects[("Deployment", "oneclick")]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OCC_NAMESPACE"] == "oneclick-system" and env["OCC_HEALTH_PORT"] == "8080"
    # The broker serves the agent file the image carries: its own OCC_AGENT_BUNDLE stands.
    assert "OCC_AGENT_BUNDLE" not in env
    # One replica, electing itself: a second one started by mistake would only stand by. Its
    # name in the Lease is its pod's, so a restarted container takes the lease back at once.
    assert deployment["spec"]["replicas"] == 1 and env["OCC_LEADER_ELECTION"] == "true"
    [identity] = [e for e in container["env"] if e["name"] == "OCC_LEADER_IDENTITY"]
    assert identity["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Only the leader listens on the broker port, so only the leader is ready.
    assert container["readinessProbe"]["httpGet"]["port"] == "broker"
    # The metrics Service selects the controller's pods.
    metrics = objects[("Service", "oneclick-metrics")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert metrics["spec"]["selector"].items() <= labels.items()
    assert metrics["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    assert objects[("Service", "oneclick")]["spec"]["type"] == "LoadBalancer"


def test_other_values_render_what_they_ask_for(binaries: dict[str, Path],
                                               tmp_path: Path) -> None:
    objects = render(
        binaries, "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "networkPolicy.enabled=true", "--set", "broker.service.type=NodePort",
        "--set", "broker.service.nodePort=30443",
        "--set", "broker.service.externalAddress=198.51.100.4",
        "--set", "watchNamespaces={team-a,team-b}",
        "--set-json", 'providers=[{"name": "aws", "type": "ec2", "region": "eu-west-1", '
        '"brokerHost": "198.51.100.4", "credentials": {"secret": "aws-credentials"}}]',
        "--set", "broker.tls.existingSecret=my-broker-ca", "--set", "replicas=2",
        "--set", "defaultProvider=aws",
        "--set", "leaderElection.leaseDuration=30", "--set", "agent.serve=false")
    assert ("ServiceMonitor", "oneclick") in objects
    assert ("NetworkPolicy", "oneclick") in objects
    broker = objects[("Service", "oneclick")]["spec"]
    assert broker["type"] == "NodePort" and broker["ports"][0]["nodePort"] == 30443
    container = objects[("Deployment", "oneclick")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # VMs reach a NodePort Service on the node's port, not the Service's.
    assert env["OCC_BROKER_URL"] == "https://198.51.100.4:30443"
    assert "198.51.100.4" in env["OCC_BROKER_NAMES"].split(",")
    assert env["OCC_WATCH_NAMESPACES"] == "team-a,team-b"
    assert env["OCC_BROKER_CA_SECRET"] == "my-broker-ca"
    assert env["OCC_DEFAULT_PROVIDER"] == "aws"
    assert objects[("Deployment", "oneclick")]["spec"]["replicas"] == 2
    assert env["OCC_LEADER_ELECTION"] == "true" and env["OCC_LEASE_DURATION"] == "30"
    assert env["OCC_AGENT_BUNDLE"] == ""  # (empty: the broker serves no agent)
    # The providers file: mounted where OCC_PROVIDERS_FILE says, and one the controller takes.
    assert env["OCC_PROVIDERS_FILE"] == "/etc/oneclick/providers.yaml"
    assert {"name": "providers", "mountPath": "/etc/oneclick", "readOnly": True} in container[
        "volumeMounts"]
    providers_file = tmp_path / "providers.yaml"
    providers_file.write_text(objects[("ConfigMap", "oneclick-providers")]["data"][
        "providers.yaml"])
    [aws] = providers_config.load(providers_file).providers
    assert aws.name == "aws" and aws.type == "ec2" and aws.region == "eu-west-1"
    monitor = objects[("ServiceMonitor", "oneclick")]["spec"]
    metrics = objects[("Service", "oneclick-metrics")]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= metrics.items()


def test_the_chart_makes_the_user_choose_a_provider(binaries: dict[str, Path]) -> None:
    # As a new user installs it: no provider chosen. Nothing is installed, and the error
    # says how to choose.
    unchosen = helm(binaries, "template", "oneclick", str(CHART), check=False)
    assert unchosen.returncode != 0
    assert "defaultProvider is not set" in unchosen.stderr
    assert "--set defaultProvider=" in unchosen.stderr and "docs/providers.md" in unchosen.stderr
    # A provider the chart does not configure is refused too, naming those it does.
    unknown = helm(binaries, "template", "oneclick", str(CHART), "--set", "defaultProvider=lab",
                   check=False)
    assert unknown.returncode != 0
    assert 'defaultProvider "lab" is not a configured provider (configured: local)' in \
        unknown.stderr
    # Chosen among the chart's providers, it is the controller's default.
    objects = render(binaries, "--set", "defaultProvider=lab", "--set-json",
                     'providers=[{"name": "lab", "type": "ssh", "brokerHost": "10.0.0.1"}]')
    container = objects[("Deployment", "oneclick")]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "OCC_DEFAULT_PROVIDER", "value": "lab"} in container["env"]
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "UnknownProvider" in notes and "{{ .Values.defaultProvider }}" in notes


@pytest.mark.parametrize("setting, words", [
    ("broker.service.type=Bogus", "/broker/service/type"),
    ("broker.port=70000", "/broker/port"),
    ("replicaCount=2", "replicaCount"),
    ("replicas=0", "/replicas"),
    ("replicas=2,leaderElection.enabled=false", "/leaderElection/enabled"),  # two would lead
    ("leaderElection.leaseDuration=0", "/leaderElection/leaseDuration"),
    ("broker.url=http://insecure", "/broker/url"),
    ("providers[0].type=gce", "/providers/0"),
    ("defaultProvider=Lab_1", "/defaultProvider"),
    ("agent.serve=maybe", "/agent/serve"),
    ("agent.path=/x.pyz", "/agent"),
])
def test_the_values_schema_refuses_bad_values(binaries: dict[str, Path], setting: str,
                                              words: str) -> None:
    refused = helm(binaries, "template", "oneclick", str(CHART), "--set", setting, check=False)
    assert refused.returncode != 0 and "values don't meet the specifications" in refused.stderr
    assert words in refused.stderr


# -- installed, and used with the chart's own rights -----------------------------------------


@pytest.fixture(scope="module")
def no_other_controller(controller: ControllerProcess) -> Iterator[None]:
    """The session's controller steps aside (so that only the chart's reconciles), then
    comes back: everything it needs is in the API server."""
    controller.stop()
    try:
        yield
    finally:
        controller.start()


def _install(binaries: dict[str, Path], kubeconfig: Path) -> str:
    namespace = "oneclick-" + os.urandom(3).hex()
    helm(binaries, "install", "oneclick", str(CHART), "-n", namespace, "--create-namespace",
         "--kubeconfig", str(kubeconfig), "--set", "broker.service.type=ClusterIP",
         "--set", "defaultProvider=local", "--wait=false")
    return namespace


def _service_account_kubeconfig(kubeconfig: Path, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount, by a real token."""
    token = kubectl(kubeconfig, "create", "token", "oneclick", "-n", namespace,
                    "--duration=1h").stdout.strip()
    admin = yaml.safe_load(kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "c"}))
    return path


def test_helm_install_creates_every_object(binaries: dict[str, Path], crds: Path,
                                           kubeconfig: Path) -> None:
    namespace = _install(binaries, kubeconfig)
    for kind in ("serviceaccount", "role", "rolebinding", "deployment", "service"):
        kubectl(kubeconfig, "get", kind, "oneclick", "-n", namespace)
    kubectl(kubeconfig, "get", "service", "oneclick-metrics", "-n", namespace)
    kubectl(kubeconfig, "get", "clusterrole", "oneclick")
    kubectl(kubeconfig, "get", "clusterrolebinding", "oneclick")
    listed = helm(binaries, "list", "-n", namespace, "--kubeconfig", str(kubeconfig), "-o", "json")
    assert json.loads(listed.stdout)[0]["status"] == "deployed"
    # The notes tell that members without an agent fetch the image's from the broker.
    notes = helm(binaries, "get", "notes", "oneclick", "-n", namespace, "--kubeconfig",
                 str(kubeconfig)).stdout
    assert "says so).\n\nMembers whose image has no agent" in notes, notes
    assert "(agent.serve).\n\nRun your first launch" in notes, notes
    helm(binaries, "uninstall", "oneclick", "-n", namespace, "--kubeconfig", str(kubeconfig))


def _tenant(namespace: str) -> str:
    """Where a tenant's launches live: not the controller's namespace (its Role does not
    reach there)."""
    return f"{namespace}-tenant"


def _launch_works(kubeconfig: Path, controller_namespace: str, seconds: float) -> bool:
    """A base cluster of a tenant's namespace whose gridmap comes from a Secret (and its munge
    key from the controller) reaches Ready, with its events."""
    namespace = _tenant(controller_namespace)
    made = kubectl(kubeconfig, "create", "namespace", namespace, check=False)
    assert made.returncode == 0 or "already exists" in made.stderr
    secret = kubectl(kubeconfig, "create", "secret", "generic", "gridmap", "-n", namespace,
                     "--from-literal=gridmap=jobrun", check=False)
    assert secret.returncode == 0 or "already exists" in secret.stderr
    kubectl(kubeconfig, "label", "--overwrite", "secret", "gridmap", "-n", namespace,
            "clusters.oneclick.dev/deliverable=true")  # it opts in to delivery
    document = sample("base-cluster.yaml", data=[{"name": "gridmap", "valueFrom": {
        "secretKeyRef": {"name": "gridmap", "key": "gridmap"}}},
        {"name": "munge-key", "generate": {"bytes": 1024}}])
    document["metadata"] = {"generateName": "least-"}
    name = create(kubeconfig, namespace, document)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = (get(kubeconfig, namespace, "cl", name) or {}).get("status") or {}
        if status.get("phase") == "Ready" and "AllReported" in events(kubeconfig, namespace,
                                                                      name):
            return True
        time.sleep(1)
    return False


def _rules_without(kubeconfig: Path, kind: str, name: str, namespace: str,
                   index: int | None) -> None:
    """Put the chart's role back as installed, or without its rule `index`."""
    args = ["-n", namespace] if kind == "role" else []
    obj = json.loads(kubectl(kubeconfig, "get", kind, name, *args, "-o", "json").stdout)
    annotations = obj["metadata"].get("annotations", {})
    original = json.loads(base64.b64decode(annotations["oneclick.test/rules"])) if (
        "oneclick.test/rules" in annotations) else obj["rules"]
    rules = [r for i, r in enumerate(original) if i != index]
    patch = {"metadata": {"annotations": {"oneclick.test/rules": base64.b64encode(
        json.dumps(original).encode()).decode()}}, "rules": rules}
    kubectl(kubeconfig, "patch", kind, name, *args, "--type=merge", "-p", json.dumps(patch))


def _rules(kind: str) -> list[str]:
    """The text of each rule of the chart's ClusterRole or Role, in order."""
    rendered = (CHART / "templates" / "rbac.yaml").read_text()
    section = (rendered.split("kind: ClusterRoleBinding")[0] if kind == "clusterrole" else
               rendered.split("kind: Role\n")[1].split("kind: RoleBinding")[0])
    return section.split("  - apiGroups:")[1:]


def _lease_rule() -> int:
    """The Role's rule for Leases: the leader election's, and the ssh pools' claims (their own
    test below)."""
    [index] = [i for i, rule in enumerate(_rules("role")) if "leases" in rule]
    return index


def _rule_cases() -> list[tuple[str, int | None]]:
    # The first case removes nothing: the control that shows this harness itself works.
    cases: list[tuple[str, int | None]] = [("clusterrole", None)]
    cases += [("clusterrole", i) for i in range(len(_rules("clusterrole")))]
    return cases + [("role", i) for i in range(len(_rules("role")))]


def _chart_controller(kubeconfig: Path, namespace: str, work: Path, local_state: Path,
                      images: Path) -> ControllerProcess:
    """occ-controller as the chart runs it, with the chart's ServiceAccount's own token."""
    return ControllerProcess(
        kubeconfig, namespace, work / "controller.log",
        identity=_service_account_kubeconfig(kubeconfig, namespace, work / "sa.kubeconfig"),
        extra_env={"OCC_BROKER_LISTEN": "0.0.0.0",  # noqa: S104
                   "OCC_LOCAL_STATE_DIR": str(local_state), "OCC_LOCAL_IMAGES_DIR": str(images),
                   "OCC_LEADER_ELECTION": "true",
                   "OCC_OWNER_SERVICE_ACCOUNT": "oneclick",
                   "OCC_BROKER_CA_SECRET": "oneclick-broker-ca",
                   "OCC_TOKEN_KEY_SECRET": "oneclick-token-key"})


@pytest.fixture(scope="module")
def least_privilege(binaries: dict[str, Path], crds: Path, kubeconfig: Path,
                    no_other_controller: None, local_state: Path, images: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float]]:
    """The chart installed; a launch made by a controller running with its ServiceAccount's
    token; the namespace and how long that launch took."""
    namespace = _install(binaries, kubeconfig)
    process = _chart_controller(kubeconfig, namespace, tmp_path_factory.mktemp("least"),
                                local_state, images)
    process.start()
    started = time.monotonic()
    try:
        assert _launch_works(kubeconfig, namespace, 120), process.log.read_text()[-3000:]
        took = time.monotonic() - started
    finally:
        process.stop()
    yield namespace, took
    kubectl(kubeconfig, "delete", "clusterlaunches", "--all", "-n", _tenant(namespace),
            "--wait=false")


def test_the_chart_service_account_can_run_a_launch(least_privilege: tuple[str, float]) -> None:
    """(The fixture ran it: a base cluster, Ready with its events, within two minutes.)"""
    _, took = least_privilege
    assert took < 120


@pytest.mark.parametrize("kind, rule", _rule_cases())
def test_without_any_single_rule_a_launch_fails(
    kind: str, rule: int | None, least_privilege: tuple[str, float], kubeconfig: Path,
    local_state: Path, images: Path, tmp_path: Path,
) -> None:
    namespace, took = least_privilege
    # A fresh controller namespace: its Secrets (CA, token key) must be made again.
    kubectl(kubeconfig, "delete", "secret", "oneclick-broker-ca", "oneclick-token-key", "-n",
            namespace, "--ignore-not-found")
    _rules_without(kubeconfig, kind, "oneclick", namespace, rule)
    process = _chart_controller(kubeconfig, namespace, tmp_path, local_state, images)
    process.start(wait=False)
    try:
        worked = _launch_works(kubeconfig, namespace, max(30.0, 3 * took))
    finally:
        process.stop()
        _rules_without(kubeconfig, kind, "oneclick", namespace, None)
        kubectl(kubeconfig, "delete", "clusterlaunches", "--all", "-n", _tenant(namespace),
                "--wait=false")
    if rule is None:
        assert worked, "with every rule, the launch must work here too"
    else:
        assert not worked, f"the launch worked without {kind} rule {rule}: it is not needed"


def _claims_work(identity: Path, namespace: str) -> bool:
    """An ssh pool's claims, as its provider makes them with this identity: take a host (a
    second take is refused), find it, keep it out, give it back. False when refused (403)."""
    host, key = f"10.0.0.{os.urandom(1)[0]}:22", os.urandom(8).hex()

    async def run() -> bool:
        kube = KubeClient(kubeconfig=identity)
        claims = HostClaims(kube, namespace, "lab")
        try:
            assert await claims.take(host, key, "team-a", "c", "c-solo-0")
            assert not await claims.take(host, "another", "team-b", "d", "d-solo-0")
            found = await claims.get(host)
            assert found is not None and found.holder == key
            await claims.keep_out(found, "the reset command exited with code 1")
            [kept] = [c for h, c in (await claims.all()).items() if h == host]
            assert kept.holder is None and kept.unusable
            await claims.release(kept)
            assert await claims.get(host) is None
            return True
        except ClaimsError as error:
            if error.status == 403:
                return False
            raise
        finally:
            await kube.aclose()

    return asyncio.run(run())


def test_ssh_pool_claims_need_the_leases_rule_in_the_controllers_namespace_only(
    least_privilege: tuple[str, float], kubeconfig: Path, tmp_path: Path,
) -> None:
    namespace, _ = least_privilege
    identity = _service_account_kubeconfig(kubeconfig, namespace, tmp_path / "sa.kubeconfig")
    assert _claims_work(identity, namespace)
    elsewhere = "oneclick-other-" + os.urandom(3).hex()
    kubectl(kubeconfig, "create", "namespace", elsewhere)
    assert not _claims_work(identity, elsewhere)  # Leases of other namespaces stay out of reach
    _rules_without(kubeconfig, "role", "oneclick", namespace, _lease_rule())
    try:
        deadline = time.monotonic() + 30  # (the authorizer sees the change within moments)
        while _claims_work(identity, namespace):
            assert time.monotonic() < deadline, "claims worked without the leases rule"
            time.sleep(1)
    finally:
        _rules_without(kubeconfig, "role", "oneclick", namespace, None)
