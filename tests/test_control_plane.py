"""The foundation: a real control plane that starts, enforces RBAC and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import controlplane
from controlplane import kubeconfig as kubeconfigs
from kits.pki import CertificateAuthority, KeyPair
from kits.processes import running as _running
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


def test_stopping_leaves_no_etcd_or_apiserver_process(
    binaries: dict[str, Path], tmp_path: Path
) -> None:
    plane = controlplane.start(tmp_path / "plane")
    pids = plane.pids()
    assert len(pids) == 2 and all(_running(p) for p in pids)
    assert plane.ready()
    plane.stop()
    assert not any(_running(p) for p in pids)
    ours = {str(binaries["etcd"]), str(binaries["kube-apiserver"])}
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
