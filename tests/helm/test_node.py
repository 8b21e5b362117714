"""The chart on a real node: the controller's image built here from the Dockerfile, a node
(containerd, kube-proxy, a kubelet) for a control plane of this module's own, `helm install`,
and launches through the controller running as a pod.

The machines the installed controller launches on are real: three members of the session's
local provider (each its own sshd, address and host keys on the bridge 10.213.0.0/16), taken
with the ssh provider from inside the pod (the host routes pods to them, masqueraded), and whose
agents reach the broker through its NodePort on the host's address on their bridge.

The node is this module's alone: its control plane is not the session's, so the session's
controller never sees these launches, nor this controller the session's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from oneclick import controlplane
from oneclick.api import API_VERSION
from oneclick.controller.providers.local import network as local_network
from oneclick.controlplane import image
from oneclick.controlplane.node import Node, host
from oneclick.controlplane.node import start as start_node
from tests.conftest import kubectl
from tests.controller.launches import create, members, wait_for_phase, wait_until
from tests.e2e.conftest import User, make_user
from tests.helm.machine import machine_leftovers
from tests.helm.test_chart import CHART, helm
from tests.providers.test_ssh import READY_FOR_THE_POOL, Lab

RELEASE = "occ"
NAMESPACE = "oneclick-system"
FULLNAME = "occ-oneclick"
NODE_PORT = 30843
BROKER_URL = f"https://{local_network.GATEWAY}:{NODE_PORT}"  # as the machines see it
KEY_SECRET = "lab-ssh"


@dataclass
class Cluster:
    kubeconfig: Path
    node: Node
    image: image.Image
    node_seconds: float  # from start to Ready and untainted


@pytest.fixture(scope="module")
def cluster(binaries: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane with a node, the controller's image imported into the node."""
    built = image.controller_image()
    work = tmp_path_factory.mktemp("node-cluster")
    plane = controlplane.start(work / "plane", scheduler=True, node_address=host.node_address())
    node: Node | None = None
    try:
        started = time.monotonic()
        node = start_node(plane, work / "node", images=(built,))
        yield Cluster(plane.kubeconfig, node, built, time.monotonic() - started)
    finally:
        if node is not None:
            node.stop()
        plane.stop()
    assert machine_leftovers(work) == []


@pytest.fixture(scope="module")
def lab(controller: Any, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Three running machines (the session's local provider's) that trust our key."""
    directory = tmp_path_factory.mktemp("node-lab")
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)],
                   check=True)
    public = key.with_suffix(".pub").read_text().strip()
    namespace = "node-lab-machines"
    kubectl(kubeconfig, "create", "namespace", namespace)
    machines = create(kubeconfig, namespace, {
        "apiVersion": API_VERSION, "kind": "ClusterLaunch", "metadata": {"name": "machines"},
        "spec": {"sshAuthorizedKeys": [public], "lifetime": "3h",
                 "roles": [{"name": "machine", "image": "base-cluster", "quantity": 3}]}})
    launch = wait_for_phase(kubeconfig, namespace, machines, "Ready", "Failed")
    assert launch["status"]["phase"] == "Ready", launch["status"]
    hosts = [{"address": m["status"]["addresses"][0],
              "hostKeys": m["status"]["identity"]["sshHostKeys"]}
             for m in members(kubeconfig, namespace, machines)]
    known_hosts = directory / "known_hosts"
    known_hosts.write_text("".join(f"{h['address']} {k}\n" for h in hosts for k in h["hostKeys"]))
    machines_lab = Lab(hosts, key, known_hosts, NAMESPACE, physics="")
    for address in machines_lab.addresses:
        readied = machines_lab.ssh(address, READY_FOR_THE_POOL, public)
        assert readied.returncode == 0, readied.stderr
    return machines_lab


def values(lab: Lab, **more: Any) -> dict[str, Any]:
    """What an operator sets for a cluster whose VMs are their own machines."""
    chosen: dict[str, Any] = {
        "image": {"pullPolicy": "Never"},  # (no registry here: the node has it, or nothing)
        "defaultProvider": "lab",
        "providers": [{
            "name": "lab", "type": "ssh", "brokerHost": local_network.GATEWAY, "user": "root",
            "privateKey": {"secret": KEY_SECRET, "key": "id_ed25519"},
            "agentCommand": str(Path(sys.executable).parent / "occ-agent"),
            "hosts": lab.hosts}],
        # The machines reach the broker on the node's address on their network.
        "broker": {"service": {"type": "NodePort", "nodePort": NODE_PORT,
                               "externalAddress": local_network.GATEWAY}},
    }
    return {**chosen, **more}


@dataclass
class Release:
    kubeconfig: Path
    values: Path
    install_seconds: float  # helm install --wait

    def helm(self, binaries: dict[str, Path], *args: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(binaries, *args, "-n", NAMESPACE, "--kubeconfig", str(self.kubeconfig),
                    check=check)

    def json(self, *args: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            kubectl(self.kubeconfig, *args, "-n", NAMESPACE, "-o", "json").stdout)
        return found

    def pods(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.json(
            "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
        return listed


@pytest.fixture(scope="module")
def release(binaries: dict[str, Path], cluster: Cluster, lab: Lab,
            tmp_path_factory: pytest.TempPathFactory) -> Release:
    """`helm install --wait` of the chart, as an operator does it: the ssh key in a Secret of
    the release's namespace first, then the chart with their values."""
    work = tmp_path_factory.mktemp("release")
    kubectl(cluster.kubeconfig, "create", "namespace", NAMESPACE)
    kubectl(cluster.kubeconfig, "create", "secret", "generic", KEY_SECRET, "-n", NAMESPACE,
            f"--from-file=id_ed25519={lab.key}")
    chosen = work / "values.yaml"
    chosen.write_text(yaml.safe_dump(values(lab)))
    started = time.monotonic()
    installed = helm(binaries, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--kubeconfig",
                     str(cluster.kubeconfig), "-f", str(chosen), "--wait", "--timeout", "180s",
                     check=False)
    took = time.monotonic() - started
    assert installed.returncode == 0, installed.stderr + _pod_story(cluster.kubeconfig)
    return Release(cluster.kubeconfig, chosen, took)


def _pod_story(kubeconfig: Path) -> str:
    """What went wrong with the controller's pod, for a failing test's message."""
    described = kubectl(kubeconfig, "describe", "pods", "-n", NAMESPACE, check=False).stdout
    logs = kubectl(kubeconfig, "logs", "-n", NAMESPACE, f"deployment/{FULLNAME}", "--tail=40",
                   check=False)
    return f"\n{described[-3000:]}\n{logs.stdout}{logs.stderr}"


@pytest.fixture(scope="module")
def user(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> User:
    return make_user(tmp_path_factory.mktemp("node-user"), cluster.kubeconfig)


# -- the tests, in the order an operator lives them ------------------------------------------

def test_helm_install_runs_the_controller_as_a_locked_down_pod(release: Release) -> None:
    deployment = release.json("get", "deployment", FULLNAME)
    available = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert available["Available"] == "True", deployment["status"]
    [pod] = release.pods()
    assert pod["status"]["phase"] == "Running"
    # Both probes pass: it is ready (the broker answers over TLS) and has never been restarted
    # by its liveness probe.
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] is True and status["restartCount"] == 0, status
    assert status["image"].endswith(f"oneclick/occ-controller:{image.version()}")
    # As the chart says: not root, and the root filesystem is read-only.
    inside = kubectl(release.kubeconfig, "exec", "-n", NAMESPACE, pod["metadata"]["name"], "--",
                     "sh", "-c", "id -u; touch /opt/occ/x 2>&1; touch /tmp/x && echo tmp-ok",
                     check=False)
    uid, refused, tmp = inside.stdout.strip().splitlines()
    assert uid == "10001"
    assert "Read-only file system" in refused
    assert tmp == "tmp-ok"


def test_the_controller_runs_with_the_charts_rights_only(release: Release,
                                                         tmp_path: Path) -> None:
    [pod] = release.pods()
    name = pod["metadata"]["name"]
    assert pod["spec"]["serviceAccountName"] == FULLNAME
    # The credentials the pod holds are its ServiceAccount's token, and the API server says so.
    token = kubectl(release.kubeconfig, "exec", "-n", NAMESPACE, name, "--", "cat",
                    "/var/run/secrets/kubernetes.io/serviceaccount/token").stdout.strip()
    as_pod = tmp_path / "pod.kubeconfig"
    cluster = yaml.safe_load(release.kubeconfig.read_text())["clusters"][0]["cluster"]
    as_pod.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "pod", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "pod"}}],
        "current-context": "c"}))
    whoami = json.loads(kubectl(as_pod, "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{NAMESPACE}:{FULLNAME}")
    # Its only rights are the chart's: every binding that names it is the release's.
    subject = {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    bindings = []
    for kind in ("clusterrolebindings", "rolebindings"):
        listed = json.loads(kubectl(release.kubeconfig, "get", kind, "-A", "-o", "json").stdout)
        bindings += [b for b in listed["items"]
                     if any(s.get("kind") == "ServiceAccount" and s.get("name") == FULLNAME
                            and s.get("namespace", b["metadata"].get("namespace")) == NAMESPACE
                            for s in b.get("subjects") or [])]
    assert bindings, subject
    for binding in bindings:
        labels = binding["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/instance") == RELEASE, binding["metadata"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"
        assert binding["roleRef"]["name"] == FULLNAME


@pytest.fixture(scope="module")
def first_launch(release: Release, user: User) -> str:
    """`occ run` of the quick start's cluster against the installed controller."""
    namespace = "physics"
    kubectl(release.kubeconfig, "create", "namespace", namespace)
    ran = user.occ("-n", namespace, "run", "--hours", "1", "--cluster",
                   str(Path(__file__).resolve().parents[2] / "samples" / "base-cluster.yaml"),
                   "--known-hosts", str(user.known_hosts), "--history-dir", str(user.history),
                   timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr + _pod_story(release.kubeconfig)
    return ran.stdout.strip().splitlines()[0]


def test_a_base_cluster_launched_through_the_installed_controller(
        release: Release, user: User, lab: Lab, first_launch: str) -> None:
    launch = json.loads(kubectl(release.kubeconfig, "get", "cl", first_launch, "-n", "physics",
                                "-o", "json").stdout)
    assert launch["status"]["phase"] == "Ready"
    found = members(release.kubeconfig, "physics", first_launch)
    assert sorted(m["status"]["addresses"][0] for m in found) == sorted(lab.addresses)
    # Real agents reported, through the broker's NodePort, from the machines themselves.
    assert all(m["status"]["report"]["ok"] for m in found), [m["status"] for m in found]
    # occ ssh logs in to the head node with its key already trusted (strict checking, no
    # prompt), and runs the command there.
    [head] = [m for m in found if m["spec"]["role"] == "head-node"]
    login = user.occ("-n", "physics", "ssh", first_launch, "--known-hosts",
                     str(user.known_hosts), "-i", str(user.key), "--", "hostname", timeout=60)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == head["status"]["identity"]["hostname"]


# A member's fetch of the agent file, from the machine itself with its bootstrap (its token,
# the broker's CA alone trusted), as occ-boot does on an image without the agent.
FETCH_AGENT = """python3 - <<'EOF'
import hashlib, json, ssl, urllib.error, urllib.request
b = json.load(open("/var/lib/oneclick/bootstrap.json"))
request = urllib.request.Request(b["brokerUrl"] + "/v1/agent", headers={
    "Authorization": "Bearer " + b["token"],
    "OneClick-Member": b["namespace"] + "/" + b["cluster"] + "/" + b["member"]})
try:
    with urllib.request.urlopen(request, context=ssl.create_default_context(
            cadata=b["caCert"]), timeout=60) as answer:
        status, body = answer.status, answer.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
print(json.dumps({"brokerUrl": b["brokerUrl"], "bootstrapSays": b.get("agentSha256"),
                  "status": status, "sha256": hashlib.sha256(body).hexdigest(),
                  "said": body[:300].decode(errors="replace")}))
EOF"""


def test_the_installed_controller_serves_the_agent_file_its_image_carries(
        release: Release, lab: Lab, first_launch: str) -> None:
    [pod] = release.pods()
    name = pod["metadata"]["name"]
    # The chart sets nothing: the image names the file it carries, and the controller says it
    # serves it.
    assert "OCC_AGENT_BUNDLE" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    path, digest = kubectl(release.kubeconfig, "exec", "-n", NAMESPACE, name, "--", "sh", "-c",
                           'echo "$OCC_AGENT_BUNDLE"; sha256sum < "$OCC_AGENT_BUNDLE"'
                           ).stdout.split()[:2]
    assert path == "/opt/occ/share/oneclick/oneclick-agent.pyz"
    logs = kubectl(release.kubeconfig, "logs", "-n", NAMESPACE, name).stdout
    assert f"serving the agent file {path} (sha256 {digest})" in logs, logs[-3000:]
    # A member of the launch fetches it through the broker's NodePort with its own bootstrap,
    # and gets that file, whose digest its bootstrap carries.
    fetched = lab.ssh(lab.addresses[0], FETCH_AGENT)  # (each lab host is one of its members)
    assert fetched.returncode == 0, fetched.stderr
    answer = json.loads(fetched.stdout)
    assert answer["brokerUrl"] == BROKER_URL, answer
    assert answer["status"] == 200, answer
    assert answer["sha256"] == answer["bootstrapSays"] == digest, answer


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus samples: (name, labels, value), from a real HTTP GET."""
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    samples = []
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name, _, labels = series.partition("{")
            pairs = (p.split("=", 1) for p in labels.rstrip("}").split(",") if p)
            samples.append((name, {k: v.strip('"') for k, v in pairs}, float(value)))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, found, v in samples
               if n == name and all(found.get(k) == w for k, w in labels.items()))


def test_the_metrics_service_shows_the_launch(release: Release, first_launch: str) -> None:
    service = release.json("get", "service", f"{FULLNAME}-metrics")
    [pod] = release.pods()
    # Through the Service (kube-proxy's rules on this host), and straight to the pod.
    for address in (service["spec"]["clusterIP"], pod["status"]["podIP"]):
        samples = scrape(f"http://{address}:9090/metrics")
        assert total(samples, "occ_clusters", phase="Ready") == 1, address
        assert total(samples, "occ_members", state="Ready") == 3
        assert total(samples, "occ_launch_duration_seconds_count") == 1
        assert total(samples, "occ_provider_calls_total", provider="lab", operation="launch",
                     outcome="ok") >= 3
        assert total(samples, "occ_broker_requests_total", endpoint="/v1/report", code="200") >= 3


def _reports(kubeconfig: Path, namespace: str, name: str) -> str:
    """Each member's phase and agent report, for a failing test's message."""
    return "\n".join(f"{m['metadata']['name']}: {m['status'].get('phase')} "
                     f"{json.dumps(m['status'].get('report'))}"
                     for m in members(kubeconfig, namespace, name))


def _terminate(release: Release, user: User, namespace: str, name: str) -> None:
    ended = user.occ("-n", namespace, "terminate", name, timeout=300)
    assert ended.returncode == 0, ended.stderr
    wait_until(lambda: not members(release.kubeconfig, namespace, name), timeout=180,
               what=f"{name}'s members to end")


def test_helm_upgrade_rolls_the_controller_while_a_launch_completes(
        binaries: dict[str, Path], release: Release, user: User, lab: Lab,
        first_launch: str) -> None:
    _terminate(release, user, "physics", first_launch)  # its machines back in the pool
    [before] = release.pods()
    # A launch that is surely in flight across the roll: every member waits for the gridmap,
    # from a Secret that will exist only once the new controller runs. (Its roles run no batch
    # system: what is proven here is the controller's roll, not Slurm's restart on hosts that
    # served another launch a minute ago.)
    document = {"apiVersion": API_VERSION, "kind": "ClusterLaunch",
                "metadata": {"generateName": "during-upgrade-"},
                "spec": {"lifetime": "1h", "roles": [
                    {"name": "head-node", "image": "base-cluster", "quantity": 1,
                     "provides": ["login"], "requires": {"data": ["gridmap"]}},
                    {"name": "compute-nodes", "image": "base-cluster", "quantity": 2,
                     "requires": {"roles": ["login"], "data": ["gridmap"]}}],
                    "data": [{"name": "gridmap", "valueFrom": {
                        "secretKeyRef": {"name": "gridmap", "key": "gridmap"}}}]}}
    name = create(release.kubeconfig, "physics", document)
    wait_until(lambda: sum(bool((m.get("status") or {}).get("identity"))
                           for m in members(release.kubeconfig, "physics", name)) == 3,
               timeout=180, what="every member's agent to state its identity")

    upgraded = release.helm(binaries, "upgrade", RELEASE, str(CHART), "-f", str(release.values),
                            "--set", "logFormat=json", "--wait", "--timeout", "180s",
                            check=False)
    assert upgraded.returncode == 0, upgraded.stderr + _pod_story(release.kubeconfig)
    [after] = release.pods()
    assert after["metadata"]["uid"] != before["metadata"]["uid"]  # a new controller
    env = {e["name"]: e.get("value") for e in after["spec"]["containers"][0]["env"]}
    assert env["OCC_LOG_FORMAT"] == "json"
    assert wait_for_phase(release.kubeconfig, "physics", name, "Contextualizing", "Ready",
                          "Failed")["status"]["phase"] == "Contextualizing"

    kubectl(release.kubeconfig, "create", "secret", "generic", "gridmap", "-n", "physics",
            "--from-literal=gridmap=jobrun")
    kubectl(release.kubeconfig, "label", "secret", "gridmap", "-n", "physics",
            "clusters.oneclick.dev/deliverable=true")
    launch = wait_for_phase(release.kubeconfig, "physics", name, "Ready", "Failed",
                            timeout=300)
    assert launch["status"]["phase"] == "Ready", _reports(release.kubeconfig, "physics", name)
    logs = kubectl(release.kubeconfig, "logs", "-n", NAMESPACE, after["metadata"]["name"]).stdout
    assert logs and all(json.loads(line) for line in logs.splitlines() if line.strip())
    _terminate(release, user, "physics", name)


def test_helm_uninstall_leaves_nothing_of_the_controller(binaries: dict[str, Path],
                                                         release: Release) -> None:
    # Launches first (docs/helm.md): their finalizers need the controller to end them.
    assert json.loads(kubectl(release.kubeconfig, "get", "cl", "-A", "-o", "json").stdout)[
        "items"] == []
    release.helm(binaries, "uninstall", RELEASE, "--wait", "--timeout", "120s")
    kinds = ("deployments,replicasets,pods,services,endpoints,serviceaccounts,configmaps,"
             "roles,rolebindings")

    def left() -> list[str]:
        return kubectl(release.kubeconfig, "get", kinds, "-n", NAMESPACE, "-l",
                       f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout.split()

    # (The controller manager collects the ReplicaSet and the pod after the Deployment.)
    wait_until(lambda: left() == [], timeout=120, what="the release's objects to go")
    for kind in ("clusterrole", "clusterrolebinding"):
        gone = kubectl(release.kubeconfig, "get", kind, FULLNAME, check=False)
        assert "NotFound" in gone.stderr
    # The controller's own Secrets (broker CA, token key) and its leader Lease were owned by
    # the chart's ServiceAccount: the garbage collector removes them after it. What stays is
    # the user's own Secret (the ssh pool's key), which the chart never made.
    def secrets() -> list[str]:
        return kubectl(release.kubeconfig, "get", "secrets", "-n", NAMESPACE, "-o",
                       "name").stdout.split()

    def leases() -> list[str]:
        return kubectl(release.kubeconfig, "get", "leases", "-n", NAMESPACE, "-o",
                       "name").stdout.split()

    wait_until(lambda: secrets() == [f"secret/{KEY_SECRET}"], timeout=60,
               what="the controller's Secrets to go")
    wait_until(lambda: not [lease for lease in leases() if "oneclick-controller" in lease],
               timeout=60, what="the leader Lease to go")
