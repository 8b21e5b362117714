"""The foundation: a real control plane that starts, enforces RBAC, behaves like a real
cluster (namespaces are deleted, owner references collected) and leaves nothing behind."""

from __future__ import annotations

import json
import os
import ssl
import time
import uuid
from pathlib import Path

import httpx
import pytest

from oneclick import controlplane
from oneclick.controlplane import kubeconfig as kubeconfigs
from oneclick.kits.pki import CertificateAuthority, KeyPair
from oneclick.kits.processes import running as _running
from tests.conftest import kubectl


def test_readyz_is_ok(kubeconfig: Path) -> None:
    assert kubectl(kubeconfig, "get", "--raw", "/readyz").stdout.strip() == "ok"


def test_a_namespace_can_be_created_and_read_back(kubeconfig: Path) -> None:
    kubectl(kubeconfig, "create", "namespace", "foundation-check")
    phase = kubectl(kubeconfig, "get", "namespace", "foundation-check",
                    "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Active"


def _user_kubeconfig(plane: controlplane.ControlPlane, tmp_path: Path, user: str) -> Path:
    assert plane.workdir is not None, "this test signs a user certificate with our own CA"
    pki = plane.workdir / "pki"
    ca = CertificateAuthority.load(
        KeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    )
    pair = ca.issue(user, client=True)
    path = tmp_path / f"{user}.kubeconfig"
    kubeconfigs.write(path, plane.server, ca.cert_pem, pair.cert_pem, pair.key_pem)
    return path


def test_rbac_forbids_a_user_without_bindings_and_allows_a_bound_one(
    control_plane: controlplane.ControlPlane, kubeconfig: Path, tmp_path: Path
) -> None:
    stranger = _user_kubeconfig(control_plane, tmp_path, "stranger")
    denied = kubectl(stranger, "get", "namespaces", check=False)
    assert denied.returncode != 0
    assert 'User "stranger" cannot list resource "namespaces"' in denied.stderr

    # The same kind of certificate works once RBAC grants it something: the refusal above
    # came from authorization, not from a broken client.
    kubectl(kubeconfig, "create", "clusterrole", "ns-reader", "--verb=list",
            "--resource=namespaces")
    kubectl(kubeconfig, "create", "clusterrolebinding", "stranger-reads-ns",
            "--clusterrole=ns-reader", "--user=stranger")
    allowed = kubectl(stranger, "get", "namespaces", "-o", "name")
    assert "namespace/default" in allowed.stdout
    assert kubectl(stranger, "get", "secrets", "-A", check=False).returncode != 0


def _gone_within(kubeconfig: Path, seconds: float, *what: str) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = kubectl(kubeconfig, "get", *what, "--ignore-not-found", "-o", "name")
        if not found.stdout.strip():
            return True
        time.sleep(0.5)
    return False


def _flag(pid: int, name: str) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


def test_the_controller_manager_runs_and_is_healthy(
    control_plane: controlplane.ControlPlane,
) -> None:
    pid = control_plane.controller_manager_pid
    assert pid is not None and _running(pid), "this test looks at the process we started"
    assert control_plane.alive()
    assert os.readlink(f"/proc/{pid}/exe") == control_plane.controller_manager_binary
    # It signs in as a real cluster's does, and serves its health over TLS from our CA.
    assert "kube-controller-manager.kubeconfig" in _flag(pid, "kubeconfig")
    assert control_plane.workdir is not None
    pki = control_plane.workdir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    answer = httpx.get(f"https://127.0.0.1:{_flag(pid, 'secure-port')}/healthz",
                       verify=context, timeout=5)
    assert (answer.status_code, answer.text) == (200, "ok")


def test_a_new_namespace_gets_a_service_account_and_its_pods_get_tokens(
    kubeconfig: Path, namespace: str,
) -> None:
    """The service account controller makes `default`, and the ServiceAccount admission
    plugin (on, as in a real cluster) gives each pod that account and a token volume."""
    kubectl(kubeconfig, "wait", "--for=create", "--timeout=60s", "-n", namespace,
            "serviceaccount/default")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "idle"},
           "spec": {"containers": [{"name": "idle", "image": "idle"}]}}
    created = json.loads(kubectl(kubeconfig, "create", "-n", namespace, "-o", "json", "-f", "-",
                                 stdin=json.dumps(pod)).stdout)
    assert created["spec"]["serviceAccountName"] == "default"
    volumes = [v["name"] for v in created["spec"]["volumes"]]
    assert any(v.startswith("kube-api-access-") for v in volumes), volumes


def test_a_deleted_namespace_goes_away_with_what_it_holds(kubeconfig: Path) -> None:
    name = "doomed-" + os.urandom(3).hex()
    kubectl(kubeconfig, "create", "namespace", name)
    kubectl(kubeconfig, "create", "configmap", "settings", "-n", name, "--from-literal=a=b")
    kubectl(kubeconfig, "delete", "namespace", name, "--wait=false")
    assert _gone_within(kubeconfig, 60, "namespace", name), "the namespace stayed Terminating"


def _configmap(name: str, owner: tuple[str, str] | None = None) -> str:
    meta: dict[str, object] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner[0],
                                    "uid": owner[1]}]
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})


def test_an_object_owned_by_a_deleted_owner_is_collected(
    kubeconfig: Path, namespace: str,
) -> None:
    owner = json.loads(kubectl(kubeconfig, "create", "-n", namespace, "-o", "json", "-f", "-",
                               stdin=_configmap("owner")).stdout)
    kubectl(kubeconfig, "create", "-n", namespace, "-f", "-",
            stdin=_configmap("dependent", ("owner", owner["metadata"]["uid"])))
    kubectl(kubeconfig, "delete", "configmap", "owner", "-n", namespace)
    assert _gone_within(kubeconfig, 60, "configmap", "dependent", "-n", namespace)


def test_an_object_whose_owner_never_existed_is_collected(
    kubeconfig: Path, namespace: str,
) -> None:
    kubectl(kubeconfig, "create", "-n", namespace, "-f", "-",
            stdin=_configmap("stray", ("nobody", str(uuid.uuid4()))))
    kubectl(kubeconfig, "create", "-n", namespace, "-f", "-", stdin=_configmap("bystander"))
    assert _gone_within(kubeconfig, 60, "configmap", "stray", "-n", namespace)
    kubectl(kubeconfig, "get", "configmap", "bystander", "-n", namespace)  # owns nothing: kept


def test_stopping_leaves_no_process_behind(
    binaries: dict[str, Path], tmp_path: Path
) -> None:
    plane = controlplane.start(tmp_path / "plane", scheduler=True)  # every process it can run
    pids = plane.pids()
    assert len(pids) == 4 and all(_running(p) for p in pids)
    assert plane.ready() and plane.alive()
    plane.stop()
    assert not any(_running(p) for p in pids)
    ours = {str(binaries[name]) for name in ("etcd", "kube-apiserver",
                                             "kube-controller-manager", "kube-scheduler")}
    leftovers = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _running(int(entry)):
            try:
                exe = os.readlink(f"/proc/{entry}/exe")
                cwd_args = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if exe in ours and str(tmp_path).encode() in cwd_args:
                leftovers.append(int(entry))
    assert leftovers == []


def test_an_explicit_kubeconfig_is_used_as_it_is(kubeconfig: Path) -> None:
    plane = controlplane.existing(kubeconfig)
    assert not plane.owned and plane.kubeconfig == kubeconfig
    plane.stop()  # not ours: stopping it must leave the cluster running
    assert controlplane.readyz(kubeconfig) == "ok"


def test_an_unreachable_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(controlplane.ControlPlaneError, match="no such kubeconfig"):
        controlplane.existing(tmp_path / "missing.kubeconfig")
